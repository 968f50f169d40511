-- Project repositories shared by several machines (src/repo/shared.rs). Branch heads are the
-- source of truth for where each branch points, moved only by compare-and-swap. Commits and trees
-- (small, and read by every sync) live here too, in git's loose format; file contents live in the
-- object store. Every node's DATA_DIR/repos is a cache of both.
-- Keep in step with ../postgres/0005_shared_repos.sql.

CREATE TABLE repo_refs (
    project_id BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    target     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE repo_objects (
    project_id BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (project_id, id)
);
