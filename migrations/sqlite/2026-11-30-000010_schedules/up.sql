-- Schedules of operator actions (cron + IANA zone) and the history of their runs.
CREATE TABLE schedules (
    id               TEXT PRIMARY KEY NOT NULL,
    project_id       TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL,
    cron             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    -- The type's settings, JSON (the API's `<type>Config` object).
    config           TEXT NOT NULL,
    -- The next due time, ms; null while disabled. A brain claims a due time by moving this
    -- forward in the transaction that records the run.
    next_run_at      BIGINT,
    last_run_at      BIGINT,
    last_status      TEXT,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- The scheduler's "what is due" scan.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;
-- The list, per project, oldest first.
CREATE INDEX schedules_by_project ON schedules (project_id, created_at, id);

CREATE TABLE schedule_runs (
    id               TEXT PRIMARY KEY NOT NULL,
    schedule_id      TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    -- The due time this run fired for (null for "run now"): unique, so a due time fires once
    -- whatever number of brains claim it.
    due_at           BIGINT,
    -- cron, catch_up (first due time missed while no brain ran) or manual.
    trigger_kind     TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    -- JSON: what the run did; the ids of the commands it issued.
    result           TEXT NOT NULL,
    command_ids      TEXT NOT NULL,
    error            TEXT
);
CREATE UNIQUE INDEX schedule_runs_once ON schedule_runs (schedule_id, due_at);
-- History, newest first.
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule_id, started_at);
-- Runs still waiting on their commands.
CREATE INDEX schedule_runs_open ON schedule_runs (status) WHERE status = 'running';
