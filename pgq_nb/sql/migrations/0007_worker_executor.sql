-- Migration 7: where a worker runs its handlers (issue #17), shown by q.workers() and the
-- dashboard: `executor` is 'thread' (its loop and thread pool) or 'process' (a worker started
-- with processes=N), and `processes` the size of its process pool (NULL: none; a worker of
-- threads has one for entrypoints with executor='process').
ALTER TABLE {schema}.workers
    ADD COLUMN executor text NOT NULL DEFAULT 'thread',
    ADD COLUMN processes integer;
