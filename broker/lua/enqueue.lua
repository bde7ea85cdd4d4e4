--[[ Jobs enqueued all or none: the lane's length limit and the served model's dimension are checked,
  then rq's own commands for the jobs run, then the doorbell rings if the lane was empty. A refusal
  leaves a short-lived mark in the first job's result stream, so a client that sent its first wait
  with the submit is answered at once.
  KEYS[1]   lane        the lane's rq list
  KEYS[2]   model       the served model's facts (a hash with its dim)
  KEYS[3]   doorbell    the list idle workers block on
  KEYS[4]   stream      the first job's result stream
  ARGV[1]   limit       the lane's length limit
  ARGV[2]   jobs        how many jobs this adds
  ARGV[3]   dimensions  the largest `dimensions` asked (0: none)
  ARGV[4..] commands    rq's commands, each as its argument count, then its arguments
  returns   {'ok', jobs waiting before}, {'full', jobs waiting} or {'dimensions', the model's dim}
]]
local lane, model, doorbell, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit, jobs, dimensions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local COMMANDS = 4

local function refuse(why, value)
    redis.call('XADD', stream, 'MAXLEN', 1, '*', 'refused', why)
    redis.call('EXPIRE', stream, 10)
    return {why, value}
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
if waiting == 0 then redis.call('LPUSH', doorbell, 1) end
return {'ok', waiting}
