-- reserve(prefix, queue, now, expiry, token, worker): leases the oldest due job of a queue.
-- First moves due delayed jobs to the ready list and reclaims expired leases: re-queued,
-- dead-lettered on the last attempt, or dropped when their cancellation was requested.
-- Returns {id, kind, payload, attempt, max_attempts, enqueued_at} or false.
local function reserve(prefix, queue, now, expiry, token, worker)
  local q = prefix .. 'queue:' .. queue

  local function release_dedup(job, id)
    local key = redis.call('HGET', job, 'dedup_key')
    if key and key ~= '' and redis.call('GET', q .. ':dedup:' .. key) == id then
      redis.call('DEL', q .. ':dedup:' .. key)
    end
  end

  for _, id in ipairs(redis.call('ZRANGEBYSCORE', q .. ':delayed', '-inf', now, 'LIMIT', 0, 256)) do
    redis.call('ZREM', q .. ':delayed', id)
    redis.call('HSET', prefix .. 'job:' .. id, 'state', 'waiting', 'ready_at', now)
    redis.call('LPUSH', q .. ':ready', id)
  end

  for _, id in ipairs(redis.call('ZRANGEBYSCORE', q .. ':leased', '-inf', now, 'LIMIT', 0, 256)) do
    redis.call('ZREM', q .. ':leased', id)
    local job = prefix .. 'job:' .. id
    local fields = redis.call('HMGET', job, 'cancel', 'attempt', 'max_attempts')
    if not fields[2] then
      -- The job's hash is gone (evicted, or deleted by hand): nothing left to re-queue.
      release_dedup(job, id)
    elseif fields[1] == '1' then
      release_dedup(job, id)
      redis.call('DEL', job)
    elseif tonumber(fields[2]) >= tonumber(fields[3]) then
      release_dedup(job, id)
      redis.call('HSET', job, 'state', 'dead', 'died_at', now, 'error_code', 'LEASE_EXPIRED',
        'error_message', 'the worker stopped renewing its lease on the last attempt')
      redis.call('HDEL', job, 'token', 'worker', 'lease_expires_at')
      redis.call('ZADD', q .. ':dead', now, id)
    else
      redis.call('HSET', job, 'state', 'waiting', 'ready_at', now)
      redis.call('HDEL', job, 'token', 'worker', 'lease_expires_at')
      redis.call('LPUSH', q .. ':ready', id)
    end
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
