--[[ An upload counted against its owner's quota before it is written: the owner's expired entries
  go, and the file is counted if the owner's live files leave room for it.
  KEYS[1]  usage       the owner's usage (a hash: file id -> "bytes:expires_at")
  ARGV[1]  file_id
  ARGV[2]  bytes       the upload's size
  ARGV[3]  expires_at  when the file expires (unix s)
  ARGV[4]  now         (unix s)
  ARGV[5]  quota       the most bytes the owner's files may hold
  returns  {1 if counted else 0, the bytes the owner's other live files hold}
]]
local usage = KEYS[1]
local file_id, bytes, expires_at, now, quota =
    ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local used, latest = 0, expires_at
local entries = redis.call('HGETALL', usage)
for i = 1, #entries, 2 do
    local size, expires = string.match(entries[i + 1], '^(%d+):(%d+)$')
    if not expires or tonumber(expires) <= now then
        redis.call('HDEL', usage, entries[i])
    elseif entries[i] ~= file_id then
        used = used + tonumber(size)
        latest = math.max(latest, tonumber(expires))
    end
end
if used + bytes > quota then return {0, used} end
redis.call('HSET', usage, file_id, bytes .. ':' .. expires_at)
redis.call('EXPIREAT', usage, latest)
return {1, used}
