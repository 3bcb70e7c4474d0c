-- The default order (newest received first) under a state or name filter; the name index also
-- serves sorting by name. (tasks_by_received serves the default order itself: SQLite sorts
-- nulls first ascending, so read backwards it is "DESC NULLS LAST", the API's plain desc.)
CREATE INDEX tasks_by_state ON tasks (project_id, state, received_at, id);
CREATE INDEX tasks_by_name ON tasks (project_id, name, received_at, id);
