-- reserve(prefix, queue, now, expiry, token, worker): leases the oldest due job of a queue.
-- First moves due delayed jobs to the ready list and reclaims expired leases (lib/reclaim.lua).
-- Returns {id, kind, payload, attempt, max_attempts, enqueued_at} or false.
local function reserve(prefix, queue, now, expiry, token, worker)
  local q = prefix .. 'queue:' .. queue

  for _, id in ipairs(redis.call('ZRANGEBYSCORE', q .. ':delayed', '-inf', now, 'LIMIT', 0, 256)) do
    redis.call('ZREM', q .. ':delayed', id)
    redis.call('HSET', prefix .. 'job:' .. id, 'state', 'waiting', 'ready_at', now)
    redis.call('LPUSH', q .. ':ready', id)
  end

  for _, id in ipairs(redis.call('ZRANGEBYSCORE', q .. ':leased', '-inf', now, 'LIMIT', 0, 256)) do
    reclaim(prefix, q, id, now)
  end

  -- Skip ids whose hash is gone rather than leasing a husk.
  local id, job
  repeat
    id = redis.call('RPOP', q .. ':ready')
    if not id then
      return false
    end
    job = prefix .. 'job:' .. id
  until redis.call('EXISTS', job) == 1
  local attempt = redis.call('HINCRBY', job, 'attempt', 1)
  redis.call('HSET', job, 'state', 'leased', 'token', token, 'worker', worker, 'lease_expires_at', expiry)
  redis.call('ZADD', q .. ':leased', expiry, id)
  local fields = redis.call('HMGET', job, 'kind', 'payload', 'max_attempts', 'enqueued_at')
  return {id, fields[1], fields[2], attempt, tonumber(fields[3]), tonumber(fields[4])}
end
