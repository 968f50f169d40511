-- Adds a job, or returns the unfinished job holding its dedup key.
-- ARGV: prefix, job id, queue, kind, payload, max_attempts, now (ms), run_at (ms), dedup key ('' = none)
-- Returns {'added', id} or {'duplicate', existing id}.
local prefix, id, queue = ARGV[1], ARGV[2], ARGV[3]
local now, run_at, dedup = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local job = prefix .. 'job:' .. id
local q = prefix .. 'queue:' .. queue

if dedup ~= '' then
  local existing = redis.call('GET', q .. ':dedup:' .. dedup)
  if existing and redis.call('EXISTS', prefix .. 'job:' .. existing) == 1 then
    return {'duplicate', existing}
  end
end
if redis.call('EXISTS', job) == 1 then
  return {'duplicate', id}
end

redis.call('HSET', job, 'queue', queue, 'kind', ARGV[4], 'payload', ARGV[5], 'attempt', 0,
  'max_attempts', ARGV[6], 'dedup_key', dedup, 'cancel', 0, 'enqueued_at', now)
if dedup ~= '' then
  redis.call('SET', q .. ':dedup:' .. dedup, id)
end
if run_at > now then
  redis.call('HSET', job, 'state', 'delayed')
  redis.call('ZADD', q .. ':delayed', run_at, id)
else
  redis.call('HSET', job, 'state', 'waiting', 'ready_at', now)
  redis.call('LPUSH', q .. ':ready', id)
  redis.call('LPUSH', q .. ':notify', 1)
  redis.call('LTRIM', q .. ':notify', 0, 63)
end
return {'added', id}
