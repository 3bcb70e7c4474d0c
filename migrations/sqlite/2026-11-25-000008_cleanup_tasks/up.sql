-- Long deletions run as trees of cleanup tasks, worked through in the background in small
-- steps, resumable after a restart (a step's lease expires), retried with backoff.
CREATE TABLE cleanup_tasks (
    id               TEXT PRIMARY KEY NOT NULL,
    parent_id        TEXT REFERENCES cleanup_tasks (id),
    -- No foreign key: a cleanup outlives the project it deletes.
    project_id       TEXT NOT NULL,
    source_event_id  TEXT,
    resource_type    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    last_error       TEXT,
    next_attempt_at  BIGINT NOT NULL,
    lease_until      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    completed_at     BIGINT
);
CREATE INDEX cleanup_tasks_due ON cleanup_tasks (status, next_attempt_at);
CREATE INDEX cleanup_tasks_by_parent ON cleanup_tasks (parent_id);
CREATE INDEX cleanup_tasks_by_project ON cleanup_tasks (project_id, created_at);

-- A project being deleted is hidden at once and removed when its cleanup tree completes.
ALTER TABLE projects ADD COLUMN deleting_since BIGINT;
