-- Search across task name, queue and worker: a trigram full-text index (case-insensitive
-- substrings of 3+ characters), kept in step with `tasks` by triggers. External content keyed
-- by rowid: do not VACUUM without rebuilding it
-- (INSERT INTO tasks_search(tasks_search) VALUES ('rebuild')).
CREATE VIRTUAL TABLE tasks_search USING fts5(
    name, queue, worker_name,
    content = 'tasks', content_rowid = 'rowid',
    tokenize = 'trigram case_sensitive 0'
);
CREATE TRIGGER tasks_search_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO tasks_search (rowid, name, queue, worker_name)
    VALUES (new.rowid, new.name, new.queue, new.worker_name);
END;
CREATE TRIGGER tasks_search_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO tasks_search (tasks_search, rowid, name, queue, worker_name)
    VALUES ('delete', old.rowid, old.name, old.queue, old.worker_name);
END;
-- Ingest rewrites whole rows: only a change of the searched columns touches the index.
CREATE TRIGGER tasks_search_update AFTER UPDATE ON tasks
WHEN old.name IS NOT new.name OR old.queue IS NOT new.queue
    OR old.worker_name IS NOT new.worker_name
BEGIN
    INSERT INTO tasks_search (tasks_search, rowid, name, queue, worker_name)
    VALUES ('delete', old.rowid, old.name, old.queue, old.worker_name);
    INSERT INTO tasks_search (rowid, name, queue, worker_name)
    VALUES (new.rowid, new.name, new.queue, new.worker_name);
END;
INSERT INTO tasks_search (tasks_search) VALUES ('rebuild');
