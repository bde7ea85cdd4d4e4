--[[ Jobs enqueued all or none, each text looked up in the cache first. The served model's dimension
  and, for the jobs that still need a worker, the lane's length limit are checked; then rq's own
  commands for the jobs run. A job whose texts are all cached is written finished at once, its result
  entry holding its cache entries (no worker sees it); a job with some cached keeps its hits in its hash
  (the worker runs only the others). If the lane was empty and work went in, the doorbell rings for the
  worker that went idle last (its caches are the warmest, so it starts soonest; the shared doorbell
  when no idle worker has looked within `idle_for`). A refusal leaves a short-lived mark in the first
  job's result stream, so a client that sent its first wait with the submit is answered at once.
  KEYS[1]   lane        the lane's rq list
  KEYS[2]   model       the served model's facts (a hash with its name, dim and fingerprint)
  KEYS[3]   doorbell    the list idle workers block on
  KEYS[4]   stream      the first job's result stream
  KEYS[5]   waiters     the idle workers by when they went idle
  KEYS[6]   idle        the idle workers by when they last looked
  KEYS[7]   finished    the lane's finished registry
  KEYS[8]   stats       the cache's accounting and counters
  KEYS[9]   index       the cache's entries by expiry
  ARGV[1]   limit       the lane's length limit
  ARGV[2]   jobs        how many jobs this adds
  ARGV[3]   dimensions  the largest `dimensions` asked (0: none)
  ARGV[4]   bells       the prefix of a worker's own doorbell (its name follows)
  ARGV[5]   idle_for    seconds an idle worker stays counted without looking again
  ARGV[6]   cache       the prefix of the cache's entry keys (the fingerprint and a text's hash follow)
  ARGV[7]   cache_ttl   seconds an entry lives after its last hit
  ARGV[8]   rq_now      now, as rq writes times
  ARGV[9]   result_ttl  seconds a result is kept
  ARGV[10]  job_prefix  a job id's prefix to make its hash's key
  ARGV[11]  results     a job id's prefix to make its result stream's key
  ARGV[12]  only        1: enqueue nothing unless every job is answered from the cache
  ARGV[13]  given       the fingerprint a client looked its texts up with in a cache Redis of its own
                        (CACHE_URL), '' for none: each job's hashes are then the entries it found
                        ('' for a miss), used only if the fingerprint is still the model's
  ARGV[14]  once        how many of rq's commands name no job (they come first)
  ARGV[15..] commands   those commands, each as its argument count then its arguments; then per job:
                        its id, how many hashes to look up (0 or its texts), the hashes (or entries),
                        how to shape its vectors (msgpack), how many commands, the commands
  returns   {'ok', jobs waiting before, jobs answered from the cache, texts found, the model's
            fingerprint}, {'full', jobs waiting}, {'dimensions', the model's dim} or {'uncached', jobs
            that would need a worker}
]]
local lane, model, doorbell, stream, waiters, idle = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local finished, stats, index = KEYS[7], KEYS[8], KEYS[9]
local limit, jobs, dimensions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bells, idle_for, cache, cache_ttl = ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local rq_now, result_ttl, job_prefix, results = ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]
local only, given, once_count = ARGV[12] == '1', ARGV[13], tonumber(ARGV[14])
local FIRST_COMMAND = 15
local BELL_TTL = 60  -- seconds a ring waits for a worker that stopped looking
local LOOK_AT = 3  -- waiters tried before the shared doorbell
local ENTRY_HEADER = 6  -- an entry's version (1), tokens (4, little-endian), truncated (1), then the vector
local MGET_AT_ONCE = 1000
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

local function refuse(why, value)
    redis.call('XADD', stream, 'MAXLEN', 1, '*', 'refused', why)
    redis.call('EXPIRE', stream, 10)
    return {why, value}
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6

local function ring()
    for _, name in ipairs(redis.call('ZREVRANGE', waiters, 0, LOOK_AT - 1)) do
        if tonumber(redis.call('ZSCORE', idle, name) or 0) >= now - idle_for then
            redis.call('LPUSH', bells .. name, 1)
            redis.call('EXPIRE', bells .. name, BELL_TTL)
            return
        end
        redis.call('ZREM', waiters, name)  -- it stopped looking: gone
    end
    redis.call('LPUSH', doorbell, 1)
end

local function base64(data)  -- rq keeps a return value as base64 of its serialized form
    local out = {}
    for at = 1, #data, 3 do
        local a, b, c = string.byte(data, at, at + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local four = {}
        for k = 3, 0, -1 do
            local sextet = math.floor(n / 64 ^ k) % 64
            table.insert(four, string.sub(B64, sextet + 1, sextet + 1))
        end
        if not b then four[3], four[4] = '=', '=' elseif not c then four[4] = '=' end
        table.insert(out, table.concat(four))
    end
    return table.concat(out)
end

local function run(first, count)  -- `count` commands from ARGV[first]; returns the index after them
    local i = first
    for _ = 1, count do
        local n = tonumber(ARGV[i])
        redis.call(unpack(ARGV, i + 1, i + n))
        i = i + n + 1
    end
    return i
end

local facts = redis.call('HMGET', model, 'dim', 'fingerprint', 'name')
local dim, fingerprint, model_name = tonumber(facts[1]), facts[2], facts[3]
if dimensions > 0 and dim and dimensions > dim then return refuse('dimensions', dim) end
local known = fingerprint and fingerprint ~= '' and dim
local looking = cache ~= '' and known  -- entries read (and kept) here
local handed = given ~= '' and known and given == fingerprint  -- entries a client found in the cache's own Redis
local entry_size = (looking or handed) and ENTRY_HEADER + 4 * dim or 0

-- read the jobs' parts of ARGV, and look their texts up
local i = FIRST_COMMAND
for _ = 1, once_count do i = i + tonumber(ARGV[i]) + 1 end
local planned, needed, found, foreign = {}, 0, 0, 0
for _ = 1, jobs do
    local job = {id = ARGV[i], hashes = tonumber(ARGV[i + 1]), hits = {}, count = 0, keys_at = i + 1}
    job.shape, job.commands = ARGV[i + 2 + job.hashes], tonumber(ARGV[i + 3 + job.hashes])
    if handed then
        for h = 1, job.hashes do
            local entry = ARGV[i + 1 + h]
            if #entry == entry_size and string.byte(entry, 1) == 1 then
                job.hits[h], job.count = entry, job.count + 1
            elseif entry ~= '' then
                foreign = foreign + 1
            end
        end
        found = found + job.count
    end
    job.first = i + 4 + job.hashes
    i = job.first
    for _ = 1, job.commands do i = i + tonumber(ARGV[i]) + 1 end
    table.insert(planned, job)
end
if looking then  -- every job's texts in as few MGETs as the argument count allows
    local keys, owners = {}, {}
    local function look()
        for k, entry in ipairs(redis.call('MGET', unpack(keys))) do
            local job, h = owners[k][1], owners[k][2]
            if entry and #entry == entry_size and string.byte(entry, 1) == 1 then
                job.hits[h], job.count, found = entry, job.count + 1, found + 1
            elseif entry then
                foreign = foreign + 1
                job.hits[h] = false  -- a key to drop: not an entry of this model and format
            end
        end
        keys, owners = {}, {}
    end
    for _, job in ipairs(planned) do
        for h = 1, job.hashes do
            table.insert(keys, cache .. fingerprint .. ':' .. ARGV[job.keys_at + h])
            table.insert(owners, {job, h})
            if #keys == MGET_AT_ONCE then look() end
        end
    end
    if #keys > 0 then look() end
end
for _, job in ipairs(planned) do
    job.whole = job.hashes > 0 and job.count == job.hashes
    if not job.whole then needed = needed + 1 end
end

if only and needed > 0 then return refuse('uncached', needed) end
local waiting = redis.call('LLEN', lane)
if needed > 0 and waiting + needed > limit then return refuse('full', waiting) end

run(FIRST_COMMAND, once_count)
local answered = 0
for _, job in ipairs(planned) do
    local key, entries, positions = job_prefix .. job.id, {}, {}
    for h = 1, (looking or handed) and job.hashes or 0 do
        local entry = job.hits[h]
        if entry then
            table.insert(entries, entry)
            table.insert(positions, struct.pack('>I4', h - 1) .. entry)
        end
        if looking then  -- kept here: a hit pushes its expiry back, a foreign entry goes
            local member = fingerprint .. ':' .. ARGV[job.keys_at + h]
            if entry then
                redis.call('EXPIRE', cache .. member, cache_ttl)
                redis.call('ZADD', index, 'XX', now + cache_ttl, member)
            elseif entry == false then
                redis.call('DEL', cache .. member)
            end
        end
    end
    if job.whole then  -- rq's commands less the lane push, then finished as rq's worker records a success
        local c = job.first
        for _ = 1, job.commands do
            local n = tonumber(ARGV[c])
            local name = string.upper(ARGV[c + 1])
            if not ((name == 'RPUSH' or name == 'LPUSH') and ARGV[c + 2] == lane) then
                redis.call(unpack(ARGV, c + 1, c + n))
            end
            c = c + n + 1
        end
        local tokens, truncated = 0, 0
        for _, entry in ipairs(entries) do
            tokens = tokens + struct.unpack('<I4', entry, 2)
            truncated = truncated + string.byte(entry, 6)
        end
        local shaped_dim = dim
        local options = cmsgpack.unpack(job.shape)
        if type(options[2]) == 'number' and options[2] < dim then shaped_dim = options[2] end
        local value = cmsgpack.pack({texts = job.hashes, dim = shaped_dim, tokens = tokens, cached = job.hashes})
        redis.call('HSET', key, 'status', 'finished', 'started_at', rq_now, 'ended_at', rq_now,
            'last_heartbeat', rq_now, 'worker_name', '')
        redis.call('EXPIRE', key, result_ttl)
        local result = results .. job.id
        redis.call('XADD', result, 'MAXLEN', '~', 10, '*', 'type', 1, 'worker_name', '', 'execution_id', '',
            'execution_started_at', now, 'execution_ended_at', now, 'return_value', base64(value),
            'embedq_cached', table.concat(entries), 'embedq_shape', job.shape, 'embedq_model', model_name,
            'embedq_dim', dim)
        redis.call('EXPIRE', result, result_ttl)
        redis.call('ZADD', finished, now + result_ttl, job.id)
        answered = answered + 1
    else
        run(job.first, job.commands)
        if #positions > 0 then redis.call('HSET', key, 'embedq_hits', table.concat(positions)) end
    end
end
-- misses are counted by the workers that compute them (finish_pass.lua): all-miss traffic pays no count here
if found > 0 then redis.call('HINCRBY', stats, 'hits', found) end
if foreign > 0 then redis.call('HINCRBY', stats, 'foreign', foreign) end
if answered > 0 then redis.call('HINCRBY', stats, 'answered', answered) end
if waiting == 0 and needed > 0 then ring() end
return {'ok', waiting, answered, found, fingerprint or ''}
