--[[ Jobs of a pass handed back untouched: those still started by this worker go back to the head of
  their queue (in order), status queued, out of the started registry and the held set.
  KEYS[1]    queue     the lane's rq list
  KEYS[2]    started   the lane's started registry
  KEYS[3]    held   this worker's held set
  KEYS[4]    doorbell  the list idle workers block on
  KEYS[5..]  jobs      each job's hash, in the order of `members`
  ARGV[1]    worker    this worker's name
  ARGV[2..]  members   each job's `job_id:execution_id`
  returns    nothing
]]
local queue, started, held, doorbell = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker = ARGV[1]
local FIRST_JOB_KEY, FIRST_MEMBER = 5, 2

for j = #ARGV, FIRST_MEMBER, -1 do
    local member = ARGV[j]
    local job = KEYS[FIRST_JOB_KEY + j - FIRST_MEMBER]
    local state = redis.call('HMGET', job, 'status', 'worker_name')
    if state[1] == 'started' and state[2] == worker then
        redis.call('HSET', job, 'status', 'queued')
        redis.call('LPUSH', queue, string.match(member, '^(.*):[^:]*$'))
    end
    redis.call('ZREM', started, member)
    redis.call('SREM', held, member)
end
redis.call('LPUSH', doorbell, 1)
