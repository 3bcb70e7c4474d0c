-- The sort keys people use, each read straight off an index in the grammar's order (SQLite
-- sorts nulls as the smallest value, as the grammar does; ties by id), forward or backward.
-- Without them `orderBy=[{"runtime_ms":"desc"}]` sorted every task of the project for each
-- page. received_at already has tasks_by_received.
CREATE INDEX tasks_by_runtime ON tasks (project_id, runtime_ms, id);
CREATE INDEX tasks_by_started ON tasks (project_id, started_at, id);
CREATE INDEX tasks_by_finished ON tasks (project_id, finished_at, id);
