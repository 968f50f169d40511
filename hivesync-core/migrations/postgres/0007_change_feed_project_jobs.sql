-- The change feed announces only jobs that belong to a project: the build-status cache
-- (src/job_cache.rs) can only hold what `get_member_job` returns, which is never a job without
-- one. PostgreSQL serialises the commits of every transaction that sent a notification, fsync
-- included, so announcing every job update cost the whole cluster its group commit: records of
-- jobs without a project (an embedding app's own jobs, pings) ran at a fifth of the rate
-- (docs/BENCHMARKS.md, "Job queue"). A job keeps the project it was created with or loses it
-- (ON DELETE SET NULL), so testing the row as it was covers every change the cache must hear.

DROP TRIGGER jobs_announce ON jobs;

CREATE TRIGGER jobs_announce AFTER UPDATE OR DELETE ON jobs
    FOR EACH ROW WHEN (OLD.project_id IS NOT NULL)
    EXECUTE FUNCTION hivesync_announce_job();
