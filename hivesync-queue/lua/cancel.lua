-- Cancels a job: removes it when waiting, delayed or dead; flags it when running.
-- ARGV: prefix, job id
-- Returns 'removed', 'requested' or 'not_found'.
local prefix, id = ARGV[1], ARGV[2]
local job = prefix .. 'job:' .. id
local fields = redis.call('HMGET', job, 'state', 'queue', 'dedup_key')
local state = fields[1]
if not state then
  return 'not_found'
end
local q = prefix .. 'queue:' .. fields[2]
if state == 'leased' then
  redis.call('HSET', job, 'cancel', 1)
  return 'requested'
end
if state == 'waiting' then
  redis.call('LREM', q .. ':ready', 0, id)
elseif state == 'delayed' then
  redis.call('ZREM', q .. ':delayed', id)
elseif state == 'dead' then
  redis.call('ZREM', q .. ':dead', id)
end
if fields[3] and fields[3] ~= '' and redis.call('GET', q .. ':dedup:' .. fields[3]) == id then
  redis.call('DEL', q .. ':dedup:' .. fields[3])
end
redis.call('DEL', job)
return 'removed'
