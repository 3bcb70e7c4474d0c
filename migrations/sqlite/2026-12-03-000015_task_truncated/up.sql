-- Fields of a task whose stored value was cut to its size cap (comma-separated names; NULL when
-- none was). Nullable without a default, so adding it rewrites no existing row.
ALTER TABLE tasks ADD COLUMN truncated TEXT;
