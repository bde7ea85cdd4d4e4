--[[ A batch's lease handed back, if this replica holds it.
  KEYS[1]  lease   the batch's lease
  ARGV[1]  holder  this replica's id
  returns  1 if it was released, 0 if another replica holds it
]]
local lease = KEYS[1]
local holder = ARGV[1]

if redis.call('GET', lease) == holder then return redis.call('DEL', lease) end
return 0
