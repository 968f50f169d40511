-- Branch heads of project repositories shared by several machines (src/repo/shared.rs): the
-- source of truth for where each branch points, moved only by compare-and-swap. The git objects
-- themselves live in the object store; every node's DATA_DIR/repos is a cache of both.
-- Keep in step with ../postgres/0005_repo_refs.sql.

CREATE TABLE repo_refs (
    project_id BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    target     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);
