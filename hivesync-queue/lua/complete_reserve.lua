-- Completes a delivery and leases the next job in one round trip: what a worker does after a
-- job succeeds. (Prefixed at load time with lib/complete.lua and lib/reserve.lua.)
-- ARGV: prefix, job id, token, next queue, now (ms), lease expiry (ms), new token, worker id
-- Returns {completed (1/0)} or {completed, id, kind, payload, attempt, max_attempts, enqueued_at}.
local done = complete(ARGV[1], ARGV[2], ARGV[3])
local next = reserve(ARGV[1], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8])
if next then
  return {done, next[1], next[2], next[3], next[4], next[5], next[6]}
end
return {done}
