-- The tree of a task: every task sharing its root (rows without a root are not indexed).
CREATE INDEX tasks_by_root ON tasks (project_id, root_task_id) WHERE root_task_id IS NOT NULL;
-- Sorting by name (orderBy name, with the id tiebreak): pages walk this index.
CREATE INDEX tasks_by_name_id ON tasks (project_id, name, id);
