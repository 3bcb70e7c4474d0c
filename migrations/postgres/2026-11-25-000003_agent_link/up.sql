-- The agent link: an enrolled agent's own public key, its hashed credential, and the session
-- generation that fences an older connection when a newer one arrives.
ALTER TABLE agents ADD COLUMN public_key TEXT;
ALTER TABLE agents ADD COLUMN credential_hash TEXT;
ALTER TABLE agents ADD COLUMN session_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN hostname TEXT;
CREATE UNIQUE INDEX agents_by_credential ON agents (credential_hash);
-- Commands still waiting for their agent, oldest first (replayed on every connect).
CREATE INDEX commands_by_agent ON commands (agent_id, issued_at);
