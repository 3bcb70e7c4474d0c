DROP INDEX tasks_by_queue;
DROP INDEX tasks_by_worker;
CREATE INDEX tasks_by_queue ON tasks (project_id, queue);
CREATE INDEX tasks_by_worker ON tasks (project_id, worker_name);
