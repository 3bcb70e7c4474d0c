DROP INDEX tasks_by_state;
DROP INDEX tasks_by_root;
