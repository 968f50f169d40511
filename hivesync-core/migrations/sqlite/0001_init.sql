-- HiveSync schema, SQLite flavour. Keep in step with ../postgres/0001_init.sql: the Store
-- implementation runs the same statements on both.
-- Ids are UUIDv7 stored as 16-byte blobs (time-ordered); timestamps are RFC 3339 text in UTC.

CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    preferences   TEXT NOT NULL DEFAULT '{}',
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE projects (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_by  BLOB NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE project_members (
    project_id BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    added_at   TEXT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_by_user ON project_members (user_id, project_id);

CREATE TABLE jobs (
    id            BLOB PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    project_id    BLOB REFERENCES projects (id) ON DELETE SET NULL,
    user_id       BLOB REFERENCES users (id) ON DELETE SET NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'building', 'bundling',
                                                 'uploading', 'success', 'failed', 'cancelled')),
    progress      REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    phase         TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error_code    TEXT,
    error_message TEXT,
    payload       TEXT NOT NULL DEFAULT '{}',
    result        TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX jobs_by_queue_state ON jobs (queue, state, id);
CREATE INDEX jobs_by_project ON jobs (project_id, id);

CREATE TABLE notifications (
    id         BLOB PRIMARY KEY NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    data       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    read_at    TEXT
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
