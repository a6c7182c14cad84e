-- Named queries of the web dashboard (pgq_nb.web.data), beside the ones it shares with the
-- widget dashboard (dashboard.sql). Same conventions as core.sql. Pages are read every few
-- seconds by every open browser, so each one is bounded: index ranges with a LIMIT, primary
-- keys, the finished_counts counters; none counts over history.

-- name: web_failures
-- The $1 newest jobs that failed for good (of entrypoint $2, or of every one the counters say
-- has failures), with the start of their error and the end of their traceback: for each such
-- entrypoint its $1 newest through history_failed_idx, then the $1 newest of those.
-- params: $1 limit, $2 entrypoint (NULL = all), $3 characters of error and traceback kept
SELECT f.id, f.entrypoint, f.attempts, f.finished, f.error, f.traceback
FROM (
    SELECT entrypoint
    FROM {schema}.finished_counts
    WHERE status = 'failed' AND ($2::text IS NULL OR entrypoint = $2)
    GROUP BY entrypoint
    HAVING sum(n) > 0
) AS e
CROSS JOIN LATERAL (
    SELECT h.id, h.entrypoint, h.attempts, h.finished, left(h.error, $3) AS error,
        right(h.traceback, $3) AS traceback
    FROM {schema}.history AS h
    WHERE h.status = 'failed' AND h.entrypoint = e.entrypoint
    ORDER BY h.finished DESC
    LIMIT $1
) AS f
ORDER BY f.finished DESC, f.id DESC
LIMIT $1;

-- name: web_workflow_run
-- One workflow run by id (the primary key).
-- params: $1 workflow id
SELECT id, name, status, steps, created, finished
FROM {schema}.workflows
WHERE id = $1;

-- name: web_workflow_steps
-- The first $2 steps of one run in submission order, live (jobs_workflow_idx) or finished
-- (history_workflow_idx), with the start of their error; only that run's rows are read. A
-- step a map_over made has its place in step_path (its source's, then its item's).
-- params: $1 workflow id, $2 limit
SELECT id, step_name, step_index, step_path, entrypoint, status, attempts, started, finished,
    error
FROM (
    SELECT id, step_name, step_index, step_path, entrypoint, status, attempts, started,
        NULL::timestamptz AS finished, left(last_error, 300) AS error
    FROM {schema}.jobs WHERE workflow_id = $1
    UNION ALL
    SELECT id, step_name, step_index, step_path, entrypoint, status, attempts, started,
        finished, left(error, 300)
    FROM {schema}.history WHERE workflow_id = $1
) AS steps
ORDER BY id
LIMIT $2;

-- name: web_ping
-- The database answers (the /healthz check).
-- params: none
SELECT 1;
