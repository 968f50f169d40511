-- complete(prefix, id, token): removes a delivered job for good, if this token still holds its
-- lease. Returns 1, or 0 when the lease was lost.
local function complete(prefix, id, token)
  local job = prefix .. 'job:' .. id
  local fields = redis.call('HMGET', job, 'state', 'token', 'queue', 'dedup_key')
  if fields[1] ~= 'leased' or fields[2] ~= token then
    return 0
  end
  local q = prefix .. 'queue:' .. fields[3]
  redis.call('ZREM', q .. ':leased', id)
  if fields[4] and fields[4] ~= '' and redis.call('GET', q .. ':dedup:' .. fields[4]) == id then
    redis.call('DEL', q .. ':dedup:' .. fields[4])
  end
  redis.call('DEL', job)
  return 1
end
