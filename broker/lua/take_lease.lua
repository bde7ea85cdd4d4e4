--[[ A batch's lease: taken when free, renewed when this replica holds it.
  KEYS[1]  lease     the batch's lease (its holder's id, with a TTL)
  ARGV[1]  holder    this replica's id
  ARGV[2]  lease_ms  how long the lease lasts
  returns  1 if this replica holds the lease now, 0 if another does
]]
local lease = KEYS[1]
local holder, lease_ms = ARGV[1], ARGV[2]

local current = redis.call('GET', lease)
if current and current ~= holder then return 0 end
redis.call('SET', lease, holder, 'PX', lease_ms)
return 1
