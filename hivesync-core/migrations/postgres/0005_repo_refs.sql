-- Branch heads of project repositories shared by several machines (src/repo/shared.rs): the
-- source of truth for where each branch points, moved only by compare-and-swap. The git objects
-- themselves live in the object store; every node's DATA_DIR/repos is a cache of both.

CREATE TABLE repo_refs (
    project_id UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    target     TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, name)
);
