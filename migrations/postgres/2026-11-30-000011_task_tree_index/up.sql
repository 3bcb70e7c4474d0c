-- The tree of a task: every task sharing its root (rows without a root are not indexed).
CREATE INDEX tasks_by_root ON tasks (project_id, root_task_id) WHERE root_task_id IS NOT NULL;
-- State filters in the default order (newest first). Without it a state filter walked or
-- sorted the whole project: first page of state=failed 368 ms at 1M rows, a CSV export of the
-- failed tasks 3,182 rows/s. Updates now set only the columns they change, so the index costs
-- ingest only when the state changes.
CREATE INDEX tasks_by_state ON tasks (project_id, state, received_at DESC NULLS LAST, id DESC);
-- Sorting by name (orderBy name, with the id tiebreak; plain asc puts nulls first): pages walk
-- this index.
CREATE INDEX tasks_by_name_id ON tasks (project_id, name NULLS FIRST, id);
