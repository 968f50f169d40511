-- Deletes dead letters of a queue: one job, or all of them.
-- ARGV: prefix, queue, job id ('' = all)
-- Returns how many were deleted.
local prefix, queue, only = ARGV[1], ARGV[2], ARGV[3]
local q = prefix .. 'queue:' .. queue
local ids
if only ~= '' then
  if not redis.call('ZSCORE', q .. ':dead', only) then
    return 0
  end
  ids = {only}
else
  ids = redis.call('ZRANGE', q .. ':dead', 0, -1)
end
for _, id in ipairs(ids) do
  redis.call('ZREM', q .. ':dead', id)
  redis.call('DEL', prefix .. 'job:' .. id)
end
return #ids
