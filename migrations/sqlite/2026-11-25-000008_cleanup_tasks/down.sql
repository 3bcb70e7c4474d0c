ALTER TABLE projects DROP COLUMN deleting_since;
DROP TABLE cleanup_tasks;
