ALTER TABLE agents DROP COLUMN dropped_events;
DROP TABLE workers;
DROP TABLE tasks;
