DROP INDEX tasks_by_name;
ALTER TABLE tasks RESET (fillfactor);
DROP INDEX tasks_by_received_desc;
CREATE INDEX tasks_by_received ON tasks (project_id, received_at, id);
