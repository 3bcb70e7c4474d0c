DROP INDEX tasks_search;
