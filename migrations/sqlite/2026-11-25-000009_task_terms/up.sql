-- Search indexes the distinct names, queues and workers of each project (a few hundred
-- values), not every task row: indexing every row cost ingest 60% of its throughput. The brain
-- records new values per ingest batch; a trigram index over the values finds the ones that
-- contain the search text, and the tasks are then found through their column indexes.
DROP TRIGGER tasks_search_update;
DROP TRIGGER tasks_search_delete;
DROP TRIGGER tasks_search_insert;
DROP TABLE tasks_search;

CREATE TABLE task_terms (
    id          INTEGER PRIMARY KEY,
    project_id  TEXT NOT NULL,
    field       TEXT NOT NULL,
    value       TEXT NOT NULL,
    UNIQUE (project_id, field, value)
);
CREATE VIRTUAL TABLE task_terms_search USING fts5(
    value,
    content = 'task_terms', content_rowid = 'id',
    tokenize = 'trigram case_sensitive 0'
);
CREATE TRIGGER task_terms_insert AFTER INSERT ON task_terms BEGIN
    INSERT INTO task_terms_search (rowid, value) VALUES (new.id, new.value);
END;
CREATE TRIGGER task_terms_delete AFTER DELETE ON task_terms BEGIN
    INSERT INTO task_terms_search (task_terms_search, rowid, value)
    VALUES ('delete', old.id, old.value);
END;
INSERT OR IGNORE INTO task_terms (project_id, field, value)
    SELECT DISTINCT project_id, 'name', name FROM tasks WHERE name IS NOT NULL;
INSERT OR IGNORE INTO task_terms (project_id, field, value)
    SELECT DISTINCT project_id, 'queue', queue FROM tasks WHERE queue IS NOT NULL;
INSERT OR IGNORE INTO task_terms (project_id, field, value)
    SELECT DISTINCT project_id, 'worker', worker_name FROM tasks WHERE worker_name IS NOT NULL;

CREATE INDEX tasks_by_queue ON tasks (project_id, queue);
CREATE INDEX tasks_by_worker ON tasks (project_id, worker_name);
