--[[ A pass's successes recorded as rq's worker records one job's (status, result stream entry, TTLs,
  started -> finished registry, worker counts), plus embedq's counters and timing histograms, once
  for the pass. A job is written only while it is still started by this worker: a worker presumed
  dead whose jobs were handed back writes nothing, so every result is written once (and if any job
  was not written, the pass's timings are left out of the histograms; the counters stay exact).
  KEYS[1]   held     this worker's held set
  KEYS[2]   worker      rq's hash of this worker
  KEYS[3]   facts       embedq's facts of this worker
  KEYS[4]   metrics     the queue's counters
  KEYS[5]   timings     the queue's timing histograms
  KEYS[6]   started     the lane's started registry
  KEYS[7]   finished    the lane's finished registry
  KEYS[8..] jobs        per job: its hash, then its result stream
  ARGV[1]   name        this worker's name
  ARGV[2]   execution   the pass's execution id
  ARGV[3]   rq_now      now, as rq writes times
  ARGV[4]   now         (unix s)
  ARGV[5]   pass_start  (unix s)
  ARGV[6]   facts_ttl   seconds the worker's facts live
  ARGV[7]   lane        the lane's name
  ARGV[8]   count       how many jobs
  ARGV[9]   worked      seconds the pass took
  ARGV[10]  buckets     how many histogram field / increment pairs follow the jobs
  ARGV[11..] values     per job 8 values (id, result TTL, finished-registry score, return value,
                        packed result, texts, tokens, truncated), then the histogram's pairs
  returns   how many jobs were written
]]
local held, worker_hash, facts, metrics, timings = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local started, finished = KEYS[6], KEYS[7]
local name, execution, rq_now, now, pass_start = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local facts_ttl, lane, count, worked, buckets = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local FIRST_JOB_KEY, FIRST_VALUE, PER_JOB = 8, 11, 8
local first_bucket = FIRST_VALUE + count * PER_JOB

local written, members, finished_scores = 0, {}, {}
local counts = {texts = 0, tokens = 0, truncated = 0}
for j = 0, count - 1 do
    local v = FIRST_VALUE + j * PER_JOB
    local id, ttl, score, return_value, packed = ARGV[v], ARGV[v + 1], ARGV[v + 2], ARGV[v + 3], ARGV[v + 4]
    local job, stream = KEYS[FIRST_JOB_KEY + 2 * j], KEYS[FIRST_JOB_KEY + 1 + 2 * j]
    table.insert(members, id .. ':' .. execution)
    local state = redis.call('HMGET', job, 'status', 'worker_name')
    if state[1] == 'started' and state[2] == name then
        redis.call('HSET', job, 'status', 'finished', 'ended_at', rq_now, 'last_heartbeat', rq_now)
        redis.call('EXPIRE', job, ttl)
        redis.call('XADD', stream, 'MAXLEN', '~', 10, '*', 'type', 1, 'worker_name', name,
            'execution_id', execution, 'execution_started_at', pass_start, 'execution_ended_at', now,
            'return_value', return_value, 'embedq', packed)
        redis.call('EXPIRE', stream, ttl)
        table.insert(finished_scores, score)
        table.insert(finished_scores, id)
        written = written + 1
        counts.texts = counts.texts + tonumber(ARGV[v + 5])
        counts.tokens = counts.tokens + tonumber(ARGV[v + 6])
        counts.truncated = counts.truncated + tonumber(ARGV[v + 7])
    end
end
redis.call('ZREM', started, unpack(members))
redis.call('SREM', held, unpack(members))
if written == 0 then return 0 end
redis.call('ZADD', finished, unpack(finished_scores))
redis.call('HINCRBY', metrics, lane .. ':jobs', written)
redis.call('HINCRBY', metrics, lane .. ':passes', 1)
for counter, value in pairs(counts) do
    if value > 0 then redis.call('HINCRBY', metrics, lane .. ':' .. counter, value) end
end
if written == count then
    for h = first_bucket, first_bucket + 2 * buckets - 1, 2 do
        local add = string.sub(ARGV[h], -4) == ':sum' and 'HINCRBYFLOAT' or 'HINCRBY'
        redis.call(add, timings, ARGV[h], ARGV[h + 1])
    end
end
redis.call('HINCRBY', facts, 'jobs_done', written)
redis.call('EXPIRE', facts, facts_ttl)
redis.call('HINCRBY', worker_hash, 'successful_job_count', written)
redis.call('HINCRBYFLOAT', worker_hash, 'total_working_time', worked)
return written
