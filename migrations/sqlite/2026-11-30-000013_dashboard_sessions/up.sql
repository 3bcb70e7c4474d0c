-- Dashboard sign-in: a user may have a password (argon2id, PHC string; never the password),
-- and a signed-in browser holds a session. The cookie carries the session id; only its
-- SHA-256 is stored, so a copy of the database signs nobody in. The CSRF token is not a
-- credential on its own (it is useless without the cookie) and is kept to render forms.
ALTER TABLE users ADD COLUMN password_hash TEXT;
CREATE TABLE dashboard_sessions (
    id_hash      TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_by_user ON dashboard_sessions (user_id);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
-- Live updates: a page learns that something it shows changed from two cheap numbers, both
-- durable, so a page that reconnects compares and catches up: the sum of the project's agents'
-- ingest counters (bumped once per stored batch, in its transaction) and the newest command
-- status change.
ALTER TABLE agents ADD COLUMN events_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX command_status_by_project ON command_status (project_id, updated_at);
