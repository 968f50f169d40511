-- Records a failed delivery: schedules a retry while attempts remain (and the failure is
-- retryable, and no cancellation was requested), otherwise dead-letters the job.
-- ARGV: prefix, job id, token, retryable ('1'/'0'), retry at (ms), now (ms), error code, message
-- Returns 'retry', 'dead' or 'lost'.
local prefix, id = ARGV[1], ARGV[2]
local job = prefix .. 'job:' .. id
local fields = redis.call('HMGET', job, 'state', 'token', 'queue', 'attempt', 'max_attempts', 'cancel', 'dedup_key')
if fields[1] ~= 'leased' or fields[2] ~= ARGV[3] then
  return 'lost'
end
local q = prefix .. 'queue:' .. fields[3]
redis.call('ZREM', q .. ':leased', id)
redis.call('HDEL', job, 'token', 'worker', 'lease_expires_at')
redis.call('HSET', job, 'error_code', ARGV[7], 'error_message', ARGV[8])
if ARGV[4] == '1' and tonumber(fields[4]) < tonumber(fields[5]) and fields[6] ~= '1' then
  redis.call('HSET', job, 'state', 'delayed')
  redis.call('ZADD', q .. ':delayed', ARGV[5], id)
  redis.call('LPUSH', q .. ':notify', 1)
  redis.call('LTRIM', q .. ':notify', 0, 63)
  return 'retry'
end
if fields[7] and fields[7] ~= '' and redis.call('GET', q .. ':dedup:' .. fields[7]) == id then
  redis.call('DEL', q .. ':dedup:' .. fields[7])
end
redis.call('HSET', job, 'state', 'dead', 'died_at', ARGV[6])
redis.call('ZADD', q .. ':dead', ARGV[6], id)
return 'dead'
