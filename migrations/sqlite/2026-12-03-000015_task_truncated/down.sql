ALTER TABLE tasks DROP COLUMN truncated;
