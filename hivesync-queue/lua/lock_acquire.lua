-- Takes or extends a named lock.
-- ARGV: prefix, name, owner, now (ms), ttl (ms)
-- Returns 1 when the owner now holds the lock, 0 when someone else does.
local key = ARGV[1] .. 'lock:' .. ARGV[2]
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local fields = redis.call('HMGET', key, 'owner', 'expires_at')
if fields[1] and fields[1] ~= ARGV[3] and tonumber(fields[2]) > now then
  return 0
end
redis.call('HSET', key, 'owner', ARGV[3], 'expires_at', now + ttl)
-- Expiry is judged by the caller's clock above; the server-side expiry only collects garbage.
redis.call('PEXPIRE', key, ttl + 3600000)
return 1
