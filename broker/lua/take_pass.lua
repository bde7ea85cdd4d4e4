--[[ A pass's jobs taken and marked started, as rq's dequeue + prepare_execution would one by one.
  The first lane with work gives the pass: its share of what waits (split with the workers idle now),
  at most `max_jobs` jobs, taken while they fit under `max_texts` texts (the count is in the job's
  meta); a job whose worker died before (meta.abandoned) runs alone; ids of jobs no longer queued
  (finished by a worker presumed dead, deleted) are dropped. Work left behind rings the doorbell (kept
  rung while work waits: with several shards, the workers of the others look here only when it rings).
  KEYS[1]   doorbell     the list idle workers block on
  KEYS[2]   suspended    rq's suspension flag (on a Cluster, the shard's own)
  KEYS[3]   held         the jobs this worker's pass holds
  KEYS[4]   worker       rq's hash of this worker (`held` again on a Cluster, where it is in another slot:
                         its state is then left alone)
  KEYS[5]   idle         the sorted set of workers waiting for work, by when they last looked
  KEYS[6]   waiters      the same workers by when they went idle (a submit rings the last to go idle)
  KEYS[7]   bell         this worker's own doorbell
  KEYS[8..] lanes        per lane, first choice first: its rq list, then its started registry
  ARGV[1]   max_jobs     most jobs a pass takes
  ARGV[2]   max_texts    most texts a pass takes
  ARGV[3]   execution    this pass's execution id
  ARGV[4]   name         this worker's name
  ARGV[5]   job_prefix   what a job id is prefixed with to make its hash's key
  ARGV[6]   timeout      the default job timeout (s)
  ARGV[7]   in_passing   1 for a look between the micro-batches of another pass (state and doorbell left alone)
  ARGV[8]   idle_for     seconds an idle worker stays counted without looking again
  ARGV[9]   was_idle     1 if this worker's last look found nothing (it is in the idle set)
  ARGV[10]  max_data     the most bytes of stored job data to fetch
  ARGV[11]  oversized    the mark sent instead of larger data (followed by its size)
  ARGV[12]  several      1 when the queue has other shards (their idle workers take what is left here too)
  ARGV[13..] fields      the job hash fields to read (must include status, data, meta, timeout)
  returns   {'jobs', lane number, then per job its id and its fields' values}, {'empty'} or {'suspended'}
  The time is Redis' own (TIME): an idle worker sends this script behind its blocking read of the
  doorbell, so it runs when the bell rings, not when it was sent.
]]
local doorbell, suspended, held, worker_hash, idle_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local waiters, bell = KEYS[6], KEYS[7]
local max_jobs, max_texts, execution = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local name, job_prefix, default_timeout, in_passing = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1'
local idle_for, was_idle, max_data, oversized = tonumber(ARGV[8]), ARGV[9] == '1', tonumber(ARGV[10]), ARGV[11]
local several = ARGV[12] == '1'
local FIRST_LANE, FIRST_FIELD = 8, 13
local FORGET_AFTER = 600  -- seconds

-- rq_time: unix seconds and microseconds as rq writes times (utcformat: %Y-%m-%dT%H:%M:%S.%fZ)
local function rq_time(seconds, micros)
    local days, second_of_day = math.floor(seconds / 86400), seconds % 86400
    local z = days + 719468  -- civil_from_days (H. Hinnant): days since 0000-03-01
    local era = math.floor(z / 146097)
    local day_of_era = z - era * 146097
    local year_of_era = math.floor((day_of_era - math.floor(day_of_era / 1460) + math.floor(day_of_era / 36524)
        - math.floor(day_of_era / 146096)) / 365)
    local day_of_year = day_of_era - (365 * year_of_era + math.floor(year_of_era / 4) - math.floor(year_of_era / 100))
    local month_from_march = math.floor((5 * day_of_year + 2) / 153)
    local day = day_of_year - math.floor((153 * month_from_march + 2) / 5) + 1
    local month = month_from_march < 10 and month_from_march + 3 or month_from_march - 9
    local year = year_of_era + era * 400 + (month <= 2 and 1 or 0)
    return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day, math.floor(second_of_day / 3600),
        math.floor(second_of_day % 3600 / 60), second_of_day % 60, micros)
end
-- end rq_time

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local fields = {unpack(ARGV, FIRST_FIELD)}
local at = {}
for i, field in ipairs(fields) do at[field] = i end

if redis.call('EXISTS', suspended) == 1 then return {'suspended'} end
local idle = nil
if was_idle then redis.call('ZREM', idle_set, name) end
for lane = FIRST_LANE, #KEYS, 2 do
    local queue, started_registry = KEYS[lane], KEYS[lane + 1]
    local waiting = redis.call('LLEN', queue)
    local ids = false
    if waiting > 0 then
        idle = idle or redis.call('ZCOUNT', idle_set, now - idle_for, '+inf')
        ids = redis.call('LPOP', queue, math.min(max_jobs, math.ceil(waiting / (idle + 1))))
    end
    local taken, back, texts, full = {}, {}, 0, false
    for _, id in ipairs(ids or {}) do
        local values = redis.call('HMGET', job_prefix .. id, unpack(fields))
        local data = values[at.data]
        if data and #data > max_data then values[at.data] = oversized .. #data end
        if values[at.status] == 'queued' and data then
            local count, abandoned = 1, 0
            local ok, meta = pcall(cmsgpack.unpack, values[at.meta] or '')
            if ok and type(meta) == 'table' then
                count, abandoned = tonumber(meta.texts) or 1, tonumber(meta.abandoned) or 0
            end
            if full or (#taken > 0 and (abandoned > 0 or texts + count > max_texts)) then
                full = true
                table.insert(back, 1, id)
            else
                table.insert(taken, {id, values, tonumber(values[at.timeout]) or default_timeout})
                texts, full = texts + count, abandoned > 0
            end
        end
    end
    if #back > 0 then redis.call('LPUSH', queue, unpack(back)) end
    if #taken > 0 then
        local started, members, reply = {}, {}, {'jobs', (lane - FIRST_LANE) / 2 + 1}
        local rq_now = rq_time(tonumber(clock[1]), tonumber(clock[2]))
        for _, job in ipairs(taken) do
            local member = job[1] .. ':' .. execution
            redis.call('HSET', job_prefix .. job[1], 'status', 'started', 'started_at', rq_now,
                'last_heartbeat', rq_now, 'worker_name', name)
            table.insert(started, now + job[3] + 60)
            table.insert(started, member)
            table.insert(members, member)
            table.insert(reply, job[1])
            table.insert(reply, job[2])
        end
        redis.call('ZADD', started_registry, unpack(started))
        redis.call('SADD', held, unpack(members))
        redis.call('EXPIRE', held, 86400)
        if was_idle then
            if worker_hash ~= held then redis.call('HSET', worker_hash, 'state', 'busy') end
            redis.call('ZREM', waiters, name)
        end
        for other = FIRST_LANE, #KEYS, 2 do  -- work left behind and a worker idle (here or in another shard): wake it
            if idle == 0 and not several then break end
            if redis.call('LLEN', KEYS[other]) > 0 then
                if redis.call('LLEN', doorbell) == 0 then redis.call('LPUSH', doorbell, 1) end
                break
            end
        end
        return reply
    end
end
if not in_passing then
    redis.call('DEL', doorbell, bell)  -- nothing waits, so any ring left is stale
    if worker_hash ~= held then redis.call('HSET', worker_hash, 'state', 'idle') end
    redis.call('ZADD', idle_set, now, name)
    redis.call('ZADD', waiters, 'NX', now, name)  -- when it went idle: kept while it stays idle
    -- workers that died where no supervisor buried them (a lost host) leave no trace for long; one idle
    -- for longer is as cold as any other: it goes back in as newly idle at its next look
    redis.call('ZREMRANGEBYSCORE', idle_set, '-inf', now - FORGET_AFTER)
    redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now - FORGET_AFTER)
end
return {'empty'}
