--[[ A batch's fields set by its lease holder, only from an allowed status. A final status takes the
  batch out of the active set, ends the lease and is counted in the batch metrics.
  KEYS[1]   batch     the batch's record (a hash)
  KEYS[2]   lease     the batch's lease
  KEYS[3]   active    the set of batches not yet final
  KEYS[4]   metrics   the batch metrics (a hash)
  ARGV[1]   holder    this replica's id
  ARGV[2]   allowed   the statuses it may leave, comma-separated
  ARGV[3]   batch_id
  ARGV[4]   final     the final statuses, comma-separated
  ARGV[5..] fields    field / value pairs to set
  returns   'ok', 'lease lost', 'gone' (no record), or the status found when it is not allowed
]]
local batch, lease, active, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local holder, allowed, batch_id, final = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local FIELDS = 5

local function listed(list, status) return string.find(',' .. list .. ',', ',' .. status .. ',', 1, true) end

if redis.call('GET', lease) ~= holder then return 'lease lost' end
local status = redis.call('HGET', batch, 'status')
if not status then return 'gone' end
if not listed(allowed, status) then return status end
redis.call('HSET', batch, unpack(ARGV, FIELDS))
local new = redis.call('HGET', batch, 'status')
if listed(final, new) then
    redis.call('SREM', active, batch_id)
    redis.call('DEL', lease)
    redis.call('HINCRBY', metrics, 'ended:' .. new, 1)
end
return 'ok'
