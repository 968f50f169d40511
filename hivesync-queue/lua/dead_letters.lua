-- Lists a queue's dead letters, oldest first.
-- ARGV: prefix, queue, limit
-- Returns a flat list: id, kind, payload, attempt, error code, error message, died_at, ...
local prefix, queue = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGE', prefix .. 'queue:' .. queue .. ':dead', 0, tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', prefix .. 'job:' .. id, 'kind', 'payload', 'attempt', 'error_code',
    'error_message', 'died_at')
  table.insert(out, id)
  for i = 1, 6 do
    table.insert(out, f[i] or '')
  end
end
return out
