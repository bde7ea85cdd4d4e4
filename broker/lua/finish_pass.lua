--[[ A pass's successes recorded as rq's worker records one job's (status, result stream entry, TTLs,
  started -> finished registry, worker counts), plus embedq's counters and timing histograms, once
  for the pass. A job is written only while it is still started by this worker: a worker presumed
  dead whose jobs were handed back writes nothing, so every result is written once (and if any job
  was not written, the pass's timings are left out of the histograms; the counters stay exact). The
  vectors the pass computed go into the cache (each entry once, with its TTL), whose accounting is kept
  within its byte budget: entries found expired are counted out (looked for every few seconds, not at
  every pass), then the least recently used trimmed.
  KEYS[1]   held     this worker's held set
  KEYS[2]   worker      rq's hash of this worker (`held` again on a Cluster: its counts are then left alone)
  KEYS[3]   facts       embedq's facts of this worker (`held` again on a Cluster: the caller counts the jobs)
  KEYS[4]   metrics     the queue's counters
  KEYS[5]   timings     the queue's timing histograms
  KEYS[6]   started     the lane's started registry
  KEYS[7]   finished    the lane's finished registry
  KEYS[8]   stats       the cache's accounting and counters
  KEYS[9]   index       the cache's entries by expiry
  KEYS[10..] jobs       per job: its hash, then its result stream
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
  ARGV[11]  cache       the prefix of the cache's entry keys ('': write none)
  ARGV[12]  fingerprint the serving model's fingerprint (follows the prefix)
  ARGV[13]  cache_ttl   seconds an entry lives
  ARGV[14]  budget      bytes the cache's entries may count
  ARGV[15]  entries     how many entries follow the histogram's pairs
  ARGV[16]  misses      how many texts the pass computed that were looked up in the cache first
  ARGV[17..] values     per job 8 values (id, result TTL, finished-registry score, return value,
                        packed result, texts, tokens, truncated), then the histogram's pairs, then per
                        entry its text's hash and the entry
  returns   how many jobs were written
]]
local held, worker_hash, facts, metrics, timings = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local started, finished = KEYS[6], KEYS[7]
local name, execution, rq_now, now, pass_start = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local facts_ttl, lane, count, worked, buckets = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local stats, index = KEYS[8], KEYS[9]
local cache, fingerprint, cache_ttl, budget = ARGV[11], ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[14])
local new_entries, misses = tonumber(ARGV[15]), tonumber(ARGV[16])
local FIRST_JOB_KEY, FIRST_VALUE, PER_JOB = 10, 17, 8
local first_bucket = FIRST_VALUE + count * PER_JOB
local first_entry = first_bucket + 2 * buckets
local TRIM_LEAST = 16  -- entries counted out or trimmed per pass, beyond as many as it wrote
local EXPIRED_LOOK_EVERY = 10  -- seconds between looks for expired entries (while fewer than allowed are found)
local OVERHEAD = 160  -- bytes Redis spends per entry beyond its key, value and index member (dict, TTL, skiplist)

local function write_cache()
    local at = tonumber(now)
    local cost, members, writes = 0, {}, 0
    for e = first_entry, first_entry + 2 * new_entries - 1, 2 do
        local member = fingerprint .. ':' .. ARGV[e]
        cost = math.ceil(#ARGV[e + 1] * 1.25) + #cache + 3 * #member + OVERHEAD  -- one model: one size
        if redis.call('SET', cache .. member, ARGV[e + 1], 'EX', cache_ttl, 'NX') then
            table.insert(members, at + cache_ttl)
            table.insert(members, member)
            writes = writes + 1
        end
    end
    if writes > 0 then redis.call('ZADD', index, unpack(members)) end
    local held = redis.call('HMGET', stats, 'bytes', 'entries', 'writes', 'trimmed', 'misses', 'due')
    local bytes, entries = tonumber(held[1] or 0) + writes * cost, tonumber(held[2] or 0) + writes
    local sizes = {[fingerprint] = cost}
    local function size_of(member)  -- an entry of an earlier model counts what its model's entries did
        local fp = string.match(member, '^([^:]+):')
        if sizes[fp] == nil then sizes[fp] = tonumber(redis.call('HGET', stats, 'size:' .. fp) or 0) end
        return sizes[fp]
    end
    local allowance, due = writes + TRIM_LEAST, tonumber(held[6] or 0)
    if at >= due then  -- gone by their TTL (a hit moves an entry's score with its TTL): counted out
        local expired = redis.call('ZRANGEBYSCORE', index, '-inf', at, 'LIMIT', 0, allowance)
        if #expired > 0 then
            redis.call('ZREM', index, unpack(expired))
            for _, member in ipairs(expired) do bytes, entries = bytes - size_of(member), entries - 1 end
        end
        -- all found: look again after a while (a few passes' expiries counted late, never missed)
        due = #expired < allowance and at + math.min(EXPIRED_LOOK_EVERY, cache_ttl) or at
        allowance = allowance - #expired
    end
    local trimmed = 0
    if bytes > budget and allowance > 0 then  -- the least recently used go
        local want = math.min(allowance, math.ceil((bytes - budget) / math.max(cost, 1)))
        local oldest, keys = redis.call('ZPOPMIN', index, want), {}
        for o = 1, #oldest, 2 do
            table.insert(keys, cache .. oldest[o])
            bytes, entries = bytes - size_of(oldest[o]), entries - 1
        end
        if #keys > 0 then redis.call('DEL', unpack(keys)) end
        trimmed = #keys
    end
    if entries <= 0 then bytes, entries = 0, 0 end  -- nothing left: the account starts from nothing too
    redis.call('HSET', stats, 'bytes', math.max(bytes, 0), 'entries', entries, 'budget', budget,
        'size:' .. fingerprint, cost, 'writes', tonumber(held[3] or 0) + writes, 'due', due,
        'trimmed', tonumber(held[4] or 0) + trimmed, 'misses', tonumber(held[5] or 0) + misses)
end

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
if cache ~= '' and new_entries > 0 then
    write_cache()
elseif misses > 0 then
    redis.call('HINCRBY', stats, 'misses', misses)
end
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
if facts ~= held then
    redis.call('HINCRBY', facts, 'jobs_done', written)
    redis.call('EXPIRE', facts, facts_ttl)
end
if worker_hash ~= held then
    redis.call('HINCRBY', worker_hash, 'successful_job_count', written)
    redis.call('HINCRBYFLOAT', worker_hash, 'total_working_time', worked)
end
return written
