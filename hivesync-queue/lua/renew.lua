-- Extends a lease held with this token.
-- ARGV: prefix, job id, token, new expiry (ms)
-- Returns 1 (held), 2 (held, cancellation requested) or 0 (lost).
local job = ARGV[1] .. 'job:' .. ARGV[2]
local fields = redis.call('HMGET', job, 'state', 'token', 'queue', 'cancel')
if fields[1] ~= 'leased' or fields[2] ~= ARGV[3] then
  return 0
end
redis.call('HSET', job, 'lease_expires_at', ARGV[4])
redis.call('ZADD', ARGV[1] .. 'queue:' .. fields[3] .. ':leased', 'XX', ARGV[4], ARGV[2])
if fields[4] == '1' then
  return 2
end
return 1
