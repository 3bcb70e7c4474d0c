DROP INDEX tasks_by_name_id;
DROP INDEX tasks_by_state;
DROP INDEX tasks_by_root;
