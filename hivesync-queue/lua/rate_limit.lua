-- GCRA: one step for a key. Times in microseconds, from the caller's clock.
-- ARGV: prefix, key, now, emission interval, period, consume ('1' counts the request)
-- Returns {allowed (1/0), remaining, retry_after}.
local key = ARGV[1] .. 'ratelimit:' .. ARGV[2]
local now, interval, period = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', key)) or now
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_until = now + period
if new_tat > allow_until then
  return {0, 0, new_tat - allow_until}
end
if ARGV[6] == '1' then
  -- Kept until the bucket has refilled, plus a minute: expiry only collects garbage.
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 60000)
end
return {1, math.floor((allow_until - new_tat) / interval), 0}
