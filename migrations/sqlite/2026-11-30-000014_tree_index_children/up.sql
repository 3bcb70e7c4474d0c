-- The tree index holds only tasks whose root is another task. Celery sets a top-level task's
-- root to its own id, so before this nearly every task had an entry keyed by a random UUID:
-- one more random index page written per new task, 40% of the bytes ingest wrote. The tree
-- query finds the root itself by its task id.
DROP INDEX tasks_by_root;
CREATE INDEX tasks_by_root ON tasks (project_id, root_task_id) WHERE root_task_id <> task_id;
