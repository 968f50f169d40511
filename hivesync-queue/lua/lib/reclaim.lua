-- reclaim(prefix, q, id, now): takes back job `id`, leased on queue key `q`, from a worker that
-- is gone (its lease expired, or the worker is known dead): dropped when its cancellation was
-- requested, dead-lettered on its last attempt, otherwise next in line on its queue — it has
-- waited since it was first enqueued, so it does not queue again behind later jobs.
local function reclaim(prefix, q, id, now)
  redis.call('ZREM', q .. ':leased', id)
  local job = prefix .. 'job:' .. id
  local fields = redis.call('HMGET', job, 'cancel', 'attempt', 'max_attempts', 'enqueued_at')

  local function release_dedup()
    local key = redis.call('HGET', job, 'dedup_key')
    if key and key ~= '' and redis.call('GET', q .. ':dedup:' .. key) == id then
      redis.call('DEL', q .. ':dedup:' .. key)
    end
  end

  if not fields[2] then
    -- The job's hash is gone (evicted, or deleted by hand): nothing left to re-queue.
    release_dedup()
  elseif fields[1] == '1' then
    release_dedup()
    redis.call('DEL', job)
  elseif tonumber(fields[2]) >= tonumber(fields[3]) then
    release_dedup()
    redis.call('HSET', job, 'state', 'dead', 'died_at', now, 'error_code', 'LEASE_EXPIRED',
      'error_message', 'the worker stopped renewing its lease on the last attempt')
    redis.call('HDEL', job, 'token', 'worker', 'lease_expires_at')
    redis.call('ZADD', q .. ':dead', now, id)
  else
    redis.call('HSET', job, 'state', 'waiting', 'ready_at', fields[4] or now)
    redis.call('HDEL', job, 'token', 'worker', 'lease_expires_at')
    -- The ready list is consumed from its tail: RPUSH puts the job next in line.
    redis.call('RPUSH', q .. ':ready', id)
    redis.call('LPUSH', q .. ':notify', 1)
    redis.call('LTRIM', q .. ':notify', 0, 63)
  end
end
