--[[ A batch asked to stop: from a status that may be cancelled it moves to the cancelling one; any
  other status stays.
  KEYS[1]  batch        the batch's record
  ARGV[1]  now          (unix s)
  ARGV[2]  cancellable  the statuses that may be cancelled, comma-separated
  ARGV[3]  cancelling   the status it moves to
  returns  the batch's status after the call (false if there is no record)
]]
local batch = KEYS[1]
local now, cancellable, cancelling = ARGV[1], ARGV[2], ARGV[3]

local status = redis.call('HGET', batch, 'status')
if status and string.find(',' .. cancellable .. ',', ',' .. status .. ',', 1, true) then
    redis.call('HSET', batch, 'status', cancelling, 'cancelling_at', now)
    return cancelling
end
return status
