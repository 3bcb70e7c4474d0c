DROP INDEX tasks_by_runtime;
DROP INDEX tasks_by_started;
DROP INDEX tasks_by_finished;
