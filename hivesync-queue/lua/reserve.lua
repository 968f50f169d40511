-- Leases the oldest due job of a queue. (Prefixed at load time with lib/reserve.lua.)
-- ARGV: prefix, queue, now (ms), lease expiry (ms), lease token, worker id
-- Returns {id, kind, payload, attempt, max_attempts, enqueued_at} or false.
return reserve(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6])
