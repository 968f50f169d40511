-- Takes back every job leased by a worker known to be gone, at once (lib/reclaim.lua).
-- ARGV: prefix, worker id, now (ms), queue names...
-- Returns the ids taken back.
local prefix, worker, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local taken = {}
for i = 4, #ARGV do
  local q = prefix .. 'queue:' .. ARGV[i]
  for _, id in ipairs(redis.call('ZRANGE', q .. ':leased', 0, -1)) do
    if redis.call('HGET', prefix .. 'job:' .. id, 'worker') == worker then
      reclaim(prefix, q, id, now)
      taken[#taken + 1] = id
    end
  end
end
return taken
