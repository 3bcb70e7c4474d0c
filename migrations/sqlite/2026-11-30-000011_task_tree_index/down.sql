DROP INDEX tasks_by_root;
