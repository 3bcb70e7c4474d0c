ALTER TABLE tasks DROP COLUMN args_unavailable;
