-- Tasks and workers as the agents report them.
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY NOT NULL,
    project_id      TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    agent_id        TEXT,
    engine          TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    name            TEXT,
    queue           TEXT,
    state           TEXT NOT NULL,
    -- (state_at, state_rank) of the event that set `state`: an older event never overwrites it.
    state_rank      INTEGER NOT NULL,
    state_at        BIGINT NOT NULL,
    priority        TEXT,
    args            TEXT,
    kwargs          TEXT,
    result          TEXT,
    exception       TEXT,
    traceback       TEXT,
    retry_count     INTEGER NOT NULL DEFAULT 0,
    eta             BIGINT,
    received_at     BIGINT,
    started_at      BIGINT,
    finished_at     BIGINT,
    runtime_ms      BIGINT,
    worker_name     TEXT,
    parent_task_id  TEXT,
    root_task_id    TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- The ingest lookup (`task_id IN (...)` for a batch) and the detail route. task_id leads:
    -- it is the selective column, and PostgreSQL then uses the IN list as an index condition
    -- even before the table has statistics.
    UNIQUE (task_id, project_id, engine)
);
-- The default task list: newest received first.
CREATE INDEX tasks_by_received ON tasks (project_id, received_at, id);

CREATE TABLE workers (
    project_id         TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    agent_id           TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    online             BOOLEAN NOT NULL,
    state_at           BIGINT NOT NULL,
    last_heartbeat_at  BIGINT,
    pool               TEXT,
    concurrency        INTEGER,
    queues             TEXT,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (agent_id, name)
);

-- Events an agent dropped (cumulative, as the agent reports it).
ALTER TABLE agents ADD COLUMN dropped_events BIGINT NOT NULL DEFAULT 0;
