DROP TABLE task_retries;
