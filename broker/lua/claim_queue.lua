--[[ A queue claimed for one model (name and dimension), atomically: two workers of different models
  started at once cannot both win. The claim expires unless heartbeats refresh it, so a queue whose
  last worker of a model is gone can serve another model.
  KEYS[1]  serving   the queue's claim (the model's identity, with a TTL); on a Cluster, both keys carry the
                     queue's name as their hash tag (shards.records_of)
  KEYS[2]  model     the queue's model facts (a hash: name, dim, fingerprint)
  ARGV[1]  identity  the model's identity (JSON of name and dim)
  ARGV[2]  ttl       seconds the claim lasts
  ARGV[3]  name      the model's name
  ARGV[4]  dim       the model's dimension
  ARGV[5]  fingerprint  the model's exported files, precision and settings, hashed (the cache's entries carry it)
  ARGV[6]  shards   how many shards the queue is split into (broker/shards.py)
  returns  false if claimed (the caller then adds the queue to the set of claimed queues), else the
           identity of the model that holds it
]]
local serving, model = KEYS[1], KEYS[2]
local identity, ttl, name, dim, fingerprint, shards = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local held = redis.call('GET', serving)
if held and held ~= identity then return held end
redis.call('SET', serving, identity, 'EX', ttl)
redis.call('HSET', model, 'name', name, 'dim', dim, 'fingerprint', fingerprint, 'shards', shards)
if fingerprint == '' then redis.call('HDEL', model, 'fingerprint') end
return false
