--[[ Jobs enqueued all or none: the lane's length limit and the served model's dimension are checked,
  then rq's own commands for the jobs run, then, if the lane was empty, the doorbell rings for the
  worker that went idle last (its caches are the warmest, so it starts soonest; the shared doorbell
  when no idle worker has looked within `idle_for`). A refusal leaves a short-lived mark in the first
  job's result stream, so a client that sent its first wait with the submit is answered at once.
  KEYS[1]   lane        the lane's rq list
  KEYS[2]   model       the served model's facts (a hash with its dim)
  KEYS[3]   doorbell    the list idle workers block on
  KEYS[4]   stream      the first job's result stream
  KEYS[5]   waiters     the idle workers by when they went idle
  KEYS[6]   idle        the idle workers by when they last looked
  ARGV[1]   limit       the lane's length limit
  ARGV[2]   jobs        how many jobs this adds
  ARGV[3]   dimensions  the largest `dimensions` asked (0: none)
  ARGV[4]   bells       the prefix of a worker's own doorbell (its name follows)
  ARGV[5]   idle_for    seconds an idle worker stays counted without looking again
  ARGV[6..] commands    rq's commands, each as its argument count, then its arguments
  returns   {'ok', jobs waiting before}, {'full', jobs waiting} or {'dimensions', the model's dim}
]]
local lane, model, doorbell, stream, waiters, idle = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local limit, jobs, dimensions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bells, idle_for = ARGV[4], tonumber(ARGV[5])
local COMMANDS = 6
local BELL_TTL = 60  -- seconds a ring waits for a worker that stopped looking
local LOOK_AT = 3  -- waiters tried before the shared doorbell

local function refuse(why, value)
    redis.call('XADD', stream, 'MAXLEN', 1, '*', 'refused', why)
    redis.call('EXPIRE', stream, 10)
    return {why, value}
end

local function ring()
    local clock = redis.call('TIME')
    local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
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

local waiting = redis.call('LLEN', lane)
if waiting + jobs > limit then return refuse('full', waiting) end
if dimensions > 0 then
    local dim = redis.call('HGET', model, 'dim')
    if dim and dimensions > tonumber(dim) then return refuse('dimensions', tonumber(dim)) end
end
local i = COMMANDS
while i <= #ARGV do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
end
if waiting == 0 then ring() end
return {'ok', waiting}
