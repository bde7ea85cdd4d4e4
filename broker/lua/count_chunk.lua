--[[ A batch's chunk counted once, however often it ran: its lines added to the batch's counts and
  the batch metrics, by the lease holder only.
  KEYS[1]  batch       the batch's record
  KEYS[2]  lease       the batch's lease
  KEYS[3]  done        the set of the batch's counted chunks
  KEYS[4]  metrics     the batch metrics
  ARGV[1]  holder      this replica's id
  ARGV[2]  chunk       the chunk's number
  ARGV[3]  completed   its lines that got an answer
  ARGV[4]  failed      its lines that got an error
  ARGV[5]  expires_at  when the batch's record expires (unix s)
  returns  1 if counted now or before, 0 if another replica holds the lease
]]
local batch, lease, done, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local holder, chunk, completed, failed, expires_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if redis.call('GET', lease) ~= holder then return 0 end
if redis.call('SADD', done, chunk) == 0 then return 1 end
redis.call('EXPIREAT', done, expires_at)
redis.call('HINCRBY', batch, 'completed', completed)
redis.call('HINCRBY', batch, 'failed', failed)
redis.call('HINCRBY', metrics, 'lines:completed', completed)
redis.call('HINCRBY', metrics, 'lines:failed', failed)
return 1
