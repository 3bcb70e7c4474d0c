-- Search across task name, queue and worker: a trigram index over the three, joined by a
-- separator no search term may contain (so a match never spans two fields); queried with
-- ILIKE '%term%' on exactly this expression.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX tasks_search ON tasks USING gin (
    (coalesce(name, '') || E'\x1f' || coalesce(queue, '') || E'\x1f' || coalesce(worker_name, ''))
    gin_trgm_ops
);
