-- Text the list grammar filters and sorts on compares bytewise, as on SQLite: the columns take
-- the "C" collation, so plain comparisons, ORDER BY and the indexes below all agree.
ALTER TABLE tasks
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN engine TYPE text COLLATE "C",
    ALTER COLUMN task_id TYPE text COLLATE "C",
    ALTER COLUMN name TYPE text COLLATE "C",
    ALTER COLUMN queue TYPE text COLLATE "C",
    ALTER COLUMN state TYPE text COLLATE "C",
    ALTER COLUMN priority TYPE text COLLATE "C",
    ALTER COLUMN worker_name TYPE text COLLATE "C",
    ALTER COLUMN agent_id TYPE text COLLATE "C",
    ALTER COLUMN result TYPE text COLLATE "C",
    ALTER COLUMN exception TYPE text COLLATE "C",
    ALTER COLUMN parent_task_id TYPE text COLLATE "C",
    ALTER COLUMN root_task_id TYPE text COLLATE "C";
ALTER TABLE commands
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN agent_id TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN issuer_type TYPE text COLLATE "C",
    ALTER COLUMN issuer_id TYPE text COLLATE "C",
    ALTER COLUMN issuer_name TYPE text COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C";
ALTER TABLE command_status
    ALTER COLUMN status TYPE text COLLATE "C",
    ALTER COLUMN detail TYPE text COLLATE "C";

-- The default order (newest received first, nulls last, ties by id descending) read straight
-- off an index, alone and under a name filter; the name index also serves sorting by
-- name (plain asc/desc sort nulls as the smallest value: NULLS FIRST ascending).
DROP INDEX tasks_by_received;
CREATE INDEX tasks_by_received_desc
    ON tasks (project_id, received_at DESC NULLS LAST, id DESC);
-- No index on state: it changes with every event, and an update that touches an indexed
-- column rewrites every index entry of the row (no HOT update). A state filter walks the
-- default-order index instead, and room is left on each page for HOT updates.
ALTER TABLE tasks SET (fillfactor = 85);
CREATE INDEX tasks_by_name
    ON tasks (project_id, name NULLS FIRST, received_at DESC NULLS LAST, id DESC);
