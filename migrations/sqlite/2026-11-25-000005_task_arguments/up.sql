-- Why a task cannot be retried: the agent could not get its real arguments (the event's repr
-- was truncated and the worker no longer held the task). NULL when they are available.
ALTER TABLE tasks ADD COLUMN args_unavailable TEXT;
