DROP INDEX command_status_by_project;
ALTER TABLE agents DROP COLUMN events_seq;
DROP TABLE dashboard_sessions;
ALTER TABLE users DROP COLUMN password_hash;
