DROP INDEX tasks_by_name;
DROP INDEX tasks_by_state;
