-- The tree of a task: every task sharing its root (rows without a root are not indexed).
CREATE INDEX tasks_by_root ON tasks (project_id, root_task_id) WHERE root_task_id IS NOT NULL;
