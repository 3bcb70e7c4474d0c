DROP INDEX tasks_by_root;
CREATE INDEX tasks_by_root ON tasks (project_id, root_task_id) WHERE root_task_id IS NOT NULL;
