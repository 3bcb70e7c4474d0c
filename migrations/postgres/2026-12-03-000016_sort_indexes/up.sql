-- The sort keys people use, each read straight off an index in the grammar's order (nulls as
-- the smallest value, ties by id): scanned forward for `desc`, backward for `asc`. Without
-- them `orderBy=[{"runtime_ms":"desc"}]` sorted every task of the project for each page
-- (11 to 31 s at 10M tasks). received_at already has tasks_by_received_desc.
-- The cost: these columns change as a task progresses, so its updates are no longer HOT.
CREATE INDEX tasks_by_runtime ON tasks (project_id, runtime_ms DESC NULLS LAST, id DESC);
CREATE INDEX tasks_by_started ON tasks (project_id, started_at DESC NULLS LAST, id DESC);
CREATE INDEX tasks_by_finished ON tasks (project_id, finished_at DESC NULLS LAST, id DESC);
