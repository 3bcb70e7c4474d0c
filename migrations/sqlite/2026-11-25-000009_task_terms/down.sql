DROP INDEX tasks_by_worker;
DROP INDEX tasks_by_queue;
DROP TRIGGER task_terms_delete;
DROP TRIGGER task_terms_insert;
DROP TABLE task_terms_search;
DROP TABLE task_terms;
