-- Puts a dead job back on its queue with fresh attempts.
-- ARGV: prefix, job id, now (ms)
-- Returns 1, or 0 when the job is not dead.
local prefix, id = ARGV[1], ARGV[2]
local job = prefix .. 'job:' .. id
local fields = redis.call('HMGET', job, 'state', 'queue')
if fields[1] ~= 'dead' then
  return 0
end
local q = prefix .. 'queue:' .. fields[2]
redis.call('ZREM', q .. ':dead', id)
redis.call('HDEL', job, 'died_at', 'error_code', 'error_message')
-- A cancellation requested before the job died does not carry over to its new life.
redis.call('HSET', job, 'state', 'waiting', 'attempt', 0, 'cancel', 0, 'ready_at', ARGV[3])
redis.call('LPUSH', q .. ':ready', id)
redis.call('LPUSH', q .. ':notify', 1)
redis.call('LTRIM', q .. ':notify', 0, 63)
return 1
