-- Originals that a retry command already ran again (issue #25): a bulk retry skips them unless
-- its filter asks for them, so running the same bulk retry twice does not retry the same
-- failures twice. Goes with its task row (cleanup, deletes).
CREATE TABLE task_retries (
    task_row_id TEXT PRIMARY KEY NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    command_id  TEXT NOT NULL,
    retried_at  BIGINT NOT NULL
);
