--[[ A new batch, recorded only while its input file is there (a file is deleted only while no
  active batch reads it: delete_file.lua).
  KEYS[1]   batch       the new batch's record
  KEYS[2]   batches     the index of batches by creation time
  KEYS[3]   active      the set of batches not yet final
  KEYS[4]   input       the input file's record
  ARGV[1]   batch_id
  ARGV[2]   expires_at  when the record expires (unix s)
  ARGV[3]   created_at  (unix s)
  ARGV[4..] fields      field / value pairs of the record
  returns   1 if created, 0 if the input file is gone
]]
local batch, batches, active, input = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_id, expires_at, created_at = ARGV[1], ARGV[2], ARGV[3]
local FIELDS = 4

if redis.call('EXISTS', input) == 0 then return 0 end
redis.call('HSET', batch, unpack(ARGV, FIELDS))
redis.call('EXPIREAT', batch, expires_at)
redis.call('ZADD', batches, created_at, batch_id)
redis.call('SADD', active, batch_id)
return 1
