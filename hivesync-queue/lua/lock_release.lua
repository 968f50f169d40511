-- Frees a named lock, only for its holder.
-- ARGV: prefix, name, owner
-- Returns 1 when freed, 0 otherwise.
local key = ARGV[1] .. 'lock:' .. ARGV[2]
if redis.call('HGET', key, 'owner') == ARGV[3] then
  redis.call('DEL', key)
  return 1
end
return 0
