DROP INDEX tasks_by_worker;
DROP INDEX tasks_by_queue;
DROP TABLE task_terms;
CREATE INDEX tasks_search ON tasks USING gin (
    (coalesce(name, '') || E'\x1f' || coalesce(queue, '') || E'\x1f' || coalesce(worker_name, ''))
    gin_trgm_ops
);
