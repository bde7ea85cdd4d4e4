--[[ A file's record deleted, unless a batch that is not yet final reads it.
  KEYS[1]  file          the file's record
  KEYS[2]  files         the index of files by creation time
  KEYS[3]  usage         its owner's usage hash
  KEYS[4]  active        the set of batches not yet final
  ARGV[1]  file_id
  ARGV[2]  batch_prefix  what a batch id is prefixed with to make its record's key
  returns  false if deleted, else the id of a batch that reads it
]]
local file, files, usage, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local file_id, batch_prefix = ARGV[1], ARGV[2]

for _, batch in ipairs(redis.call('SMEMBERS', active)) do
    if redis.call('HGET', batch_prefix .. batch, 'input_file_id') == file_id then return batch end
end
redis.call('DEL', file)
redis.call('ZREM', files, file_id)
redis.call('HDEL', usage, file_id)
return false
