-- Finding finished jobs by their dedup key: an identical preview build reuses the newest
-- successful one. Keep in step with ../postgres/0003_job_keys.sql.

CREATE INDEX jobs_by_key ON jobs (dedup_key, state) WHERE dedup_key IS NOT NULL;
