--[[ A queue claimed for one model (name and dimension), atomically: two workers of different models
  started at once cannot both win. The claim expires unless heartbeats refresh it, so a queue whose
  last worker of a model is gone can serve another model.
  KEYS[1]  serving   the queue's claim (the model's identity, with a TTL)
  KEYS[2]  model     the queue's model facts (a hash: name, dim, fingerprint)
  KEYS[3]  queues    the set of every claimed queue
  ARGV[1]  identity  the model's identity (JSON of name and dim)
  ARGV[2]  ttl       seconds the claim lasts
  ARGV[3]  name      the model's name
  ARGV[4]  dim       the model's dimension
  ARGV[5]  queue     the queue's name
  ARGV[6]  fingerprint  the model's exported files, precision and settings, hashed (the cache's entries carry it)
  ARGV[7]  shards   how many shards the queue is split into (broker/shards.py)
  returns  false if claimed, else the identity of the model that holds it
]]
local serving, model, queues = KEYS[1], KEYS[2], KEYS[3]
local identity, ttl, name, dim, queue, fingerprint = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local shards = ARGV[7]

local held = redis.call('GET', serving)
if held and held ~= identity then return held end
redis.call('SET', serving, identity, 'EX', ttl)
redis.call('HSET', model, 'name', name, 'dim', dim, 'fingerprint', fingerprint, 'shards', shards)
if fingerprint == '' then redis.call('HDEL', model, 'fingerprint') end
redis.call('SADD', queues, queue)
return false
