-- The SQL-backed job queue, worker heartbeats and cluster locks (used on the embedded defaults;
-- with Redis configured these tables stay empty), and job deduplication in the Store.
-- Times in these tables are Unix milliseconds: compared on every reserve, and identical on both
-- databases. Keep in step with ../postgres/0002_queue.sql.

ALTER TABLE jobs ADD COLUMN dedup_key TEXT;
-- At most one unfinished job per queue and dedup key.
CREATE UNIQUE INDEX jobs_active_dedup ON jobs (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND state NOT IN ('success', 'failed', 'cancelled');

CREATE TABLE queue_entries (
    job_id           BLOB PRIMARY KEY NOT NULL,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('waiting', 'leased', 'dead')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    dedup_key        TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    enqueued_at      BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    worker_id        TEXT,
    error_code       TEXT,
    error_message    TEXT,
    died_at          BIGINT
);
CREATE INDEX queue_entries_due ON queue_entries (queue, status, run_at, job_id);
CREATE INDEX queue_entries_leases ON queue_entries (queue, status, lease_expires_at);
CREATE UNIQUE INDEX queue_entries_dedup ON queue_entries (queue, dedup_key)
    WHERE dedup_key IS NOT NULL;

CREATE TABLE workers (
    id           TEXT PRIMARY KEY NOT NULL,
    status       TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE locks (
    name       TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
