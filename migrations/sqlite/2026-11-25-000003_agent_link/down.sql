DROP INDEX commands_by_agent;
DROP INDEX agents_by_credential;
ALTER TABLE agents DROP COLUMN hostname;
ALTER TABLE agents DROP COLUMN session_generation;
ALTER TABLE agents DROP COLUMN credential_hash;
ALTER TABLE agents DROP COLUMN public_key;
