-- The signed, hash-chained audit log, and commands.

-- One row: this installation's id, part of every chain's name.
CREATE TABLE installation (
    id          TEXT PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A chain's head. Every append first bumps head_seq here (taking the row's write lock), so
-- appends to one chain are serialized by the database on both backends.
CREATE TABLE audit_chains (
    id                TEXT PRIMARY KEY NOT NULL,
    -- The project whose actions the chain records; NULL for the site chain. No foreign key:
    -- a chain outlives its project.
    project_id        TEXT UNIQUE,
    head_seq          BIGINT NOT NULL,
    head_hash         TEXT NOT NULL,
    -- Size of the last checkpoint written to checkpoints.log.
    checkpointed_seq  BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL
);

CREATE TABLE audit_rows (
    chain_id    TEXT NOT NULL REFERENCES audit_chains (id),
    seq         BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    -- The signed statement bytes (RFC 8785 JSON), verbatim.
    statement   TEXT NOT NULL,
    -- Index copies of statement fields; the verifier checks them against the statement.
    kind        TEXT NOT NULL,
    command_id  TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (chain_id, seq),
    -- Fork guard: no two rows may follow the same row.
    UNIQUE (chain_id, prev_hash)
);
CREATE INDEX audit_rows_by_command ON audit_rows (command_id) WHERE command_id IS NOT NULL;

CREATE TRIGGER audit_rows_no_update BEFORE UPDATE ON audit_rows
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;
CREATE TRIGGER audit_rows_no_delete BEFORE DELETE ON audit_rows
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;

-- A command as issued. Never updated: its status lives in command_status.
CREATE TABLE commands (
    id               TEXT PRIMARY KEY NOT NULL,
    project_id       TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- No foreign key: deleting an agent keeps the commands sent to it.
    agent_id         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    issuer_type      TEXT NOT NULL,
    issuer_id        TEXT NOT NULL,
    issuer_name      TEXT NOT NULL,
    idempotency_key  TEXT,
    critical         BOOLEAN NOT NULL,
    global_throttle  BOOLEAN NOT NULL,
    bound_depth      BIGINT,
    issued_at        BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    audit_chain      TEXT NOT NULL,
    audit_seq        BIGINT NOT NULL
);
-- The commands list: newest first within a project, keyset on (issued_at, id).
CREATE INDEX commands_by_project ON commands (project_id, issued_at, id);

-- Current status of each command: a cache of its latest outcome row, written in the same
-- transaction as that row.
CREATE TABLE command_status (
    command_id  TEXT PRIMARY KEY NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT,
    late        BOOLEAN NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- The timeout sweeper: open commands by deadline.
CREATE INDEX command_status_open ON command_status (status, expires_at);

CREATE TABLE idempotency_keys (
    project_id    TEXT NOT NULL,
    issuer_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    command_id    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, issuer_id, kind, key)
);

-- Last depth each agent reported for each queue (purge confirm tokens bind to it).
CREATE TABLE queue_depths (
    agent_id     TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    queue        TEXT NOT NULL,
    depth        BIGINT NOT NULL,
    observed_at  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, queue)
);
