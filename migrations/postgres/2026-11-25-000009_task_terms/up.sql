-- Search indexes the distinct names, queues and workers of each project, not every task row
-- (a trigram index over every row cost ingest a third of its throughput). The brain records
-- new values per ingest batch; the trigram index over the values finds the ones containing the
-- search text, and the tasks are then found through their column indexes.
DROP INDEX tasks_search;
CREATE TABLE task_terms (
    project_id  TEXT COLLATE "C" NOT NULL,
    field       TEXT NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, field, value)
);
CREATE INDEX task_terms_search ON task_terms USING gin (value gin_trgm_ops);
INSERT INTO task_terms SELECT DISTINCT project_id, 'name', name FROM tasks WHERE name IS NOT NULL
    ON CONFLICT DO NOTHING;
INSERT INTO task_terms SELECT DISTINCT project_id, 'queue', queue FROM tasks WHERE queue IS NOT NULL
    ON CONFLICT DO NOTHING;
INSERT INTO task_terms SELECT DISTINCT project_id, 'worker', worker_name FROM tasks
    WHERE worker_name IS NOT NULL ON CONFLICT DO NOTHING;
CREATE INDEX tasks_by_queue ON tasks (project_id, queue);
CREATE INDEX tasks_by_worker ON tasks (project_id, worker_name);
