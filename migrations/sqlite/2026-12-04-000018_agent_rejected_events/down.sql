ALTER TABLE agents DROP COLUMN last_rejection;
ALTER TABLE agents DROP COLUMN rejected_events;
