-- Counts one queue's jobs. Delayed jobs already due count as ready.
-- ARGV: prefix, queue, now (ms)
-- Returns {ready, delayed, running, dead, oldest ready_at (ms) or -1}.
local prefix, queue, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local q = prefix .. 'queue:' .. queue
local listed = redis.call('LLEN', q .. ':ready')
local due = redis.call('ZCOUNT', q .. ':delayed', '-inf', now)
local later = redis.call('ZCOUNT', q .. ':delayed', '(' .. now, '+inf')
local oldest = -1
local tail = redis.call('LINDEX', q .. ':ready', -1)
if tail then
  oldest = tonumber(redis.call('HGET', prefix .. 'job:' .. tail, 'ready_at')) or now
end
local first_due = redis.call('ZRANGEBYSCORE', q .. ':delayed', '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if first_due[2] then
  local at = tonumber(first_due[2])
  if oldest < 0 or at < oldest then
    oldest = at
  end
end
return {listed + due, later, redis.call('ZCARD', q .. ':leased'), redis.call('ZCARD', q .. ':dead'), oldest}
