-- Identity and access: users, projects, memberships, API tokens, agents.
-- Times are milliseconds since the Unix epoch (BIGINT) on both backends, so comparisons and
-- keyset cursors behave identically on SQLite and PostgreSQL.

CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    site_admin  BOOLEAN NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE memberships (
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
-- "which projects can this user see": the projects list and every project-scoped request.
CREATE INDEX memberships_by_user ON memberships (user_id, project_id);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    -- SHA-256 of the token; the plaintext is never stored. Unique: the lookup of every request.
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at);

CREATE TABLE agents (
    id                    TEXT PRIMARY KEY NOT NULL,
    project_id            TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    -- SHA-256 of the one-time enrollment token; NULL once spent.
    enrollment_token_hash TEXT UNIQUE,
    enrollment_expires_at BIGINT,
    enrolled_at           BIGINT,
    preserve              BOOLEAN NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    last_seen_at          BIGINT,
    UNIQUE (project_id, name)
);
