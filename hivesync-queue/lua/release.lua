-- Gives a delivered job back at the front of its queue without counting the attempt (a worker
-- shutting down); drops it instead if its cancellation was requested.
-- ARGV: prefix, job id, token
-- Returns 1 (released), 2 (dropped: cancellation was requested) or 0 (the lease was lost).
local prefix, id = ARGV[1], ARGV[2]
local job = prefix .. 'job:' .. id
local fields = redis.call('HMGET', job, 'state', 'token', 'queue', 'cancel', 'dedup_key')
if fields[1] ~= 'leased' or fields[2] ~= ARGV[3] then
  return 0
end
local q = prefix .. 'queue:' .. fields[3]
redis.call('ZREM', q .. ':leased', id)
if fields[4] == '1' then
  if fields[5] and fields[5] ~= '' and redis.call('GET', q .. ':dedup:' .. fields[5]) == id then
    redis.call('DEL', q .. ':dedup:' .. fields[5])
  end
  redis.call('DEL', job)
  return 2
end
redis.call('HINCRBY', job, 'attempt', -1)
redis.call('HDEL', job, 'token', 'worker', 'lease_expires_at')
-- It has been ready since it was first enqueued.
redis.call('HSET', job, 'state', 'waiting', 'ready_at', redis.call('HGET', job, 'enqueued_at'))
-- The ready list is consumed from its tail: RPUSH puts the job next in line.
redis.call('RPUSH', q .. ':ready', id)
redis.call('LPUSH', q .. ':notify', 1)
redis.call('LTRIM', q .. ':notify', 0, 63)
return 1
