-- Removes a delivered job for good, if this token still holds its lease.
-- (Prefixed at load time with lib/complete.lua.)
-- ARGV: prefix, job id, token
-- Returns 1, or 0 when the lease was lost.
return complete(ARGV[1], ARGV[2], ARGV[3])
