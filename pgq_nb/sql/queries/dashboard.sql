-- Named queries of the live dashboard and of q.plot_throughput() (pgq_nb.notebook.dashboard,
-- pgq_nb.notebook.charts). Same conventions as core.sql. The dashboard runs them every few
-- seconds, so each one is bounded: primary-key look-ups, index ranges with a LIMIT, and the
-- finished_counts counters; none counts over the whole of history.

-- name: dashboard_throughput
-- Finished jobs per minute and status since $1 (or the last $2 seconds), from at most the $3
-- newest of them: a backward range scan of history_finished_idx that stops at $3 rows. Also
-- the server's clock and how many jobs were looked at (= $3 when the cap was hit). Always at
-- least one row: minute, status and n are NULL when nothing finished in the window.
-- params: $1 since timestamptz (NULL = $2 seconds before now), $2 seconds, $3 most jobs
WITH recent AS (
    SELECT finished, status
    FROM {schema}.history
    WHERE finished >= coalesce($1::timestamptz, now() - make_interval(secs => $2))
    ORDER BY finished DESC
    LIMIT $3
), per_minute AS (
    SELECT date_trunc('minute', finished) AS minute, status, count(*)::bigint AS n
    FROM recent
    GROUP BY 1, 2
)
SELECT clock.now, clock.since, (SELECT count(*) FROM recent) AS seen, p.minute, p.status, p.n
FROM (
    SELECT now() AS now, coalesce($1::timestamptz, now() - make_interval(secs => $2)) AS since
) AS clock
LEFT JOIN per_minute AS p ON true
ORDER BY p.minute, p.status;

-- name: dashboard_failures
-- The $1 newest jobs that failed for good, with the start of their error and their tags. For
-- each entrypoint the counters say has failures, its $1 newest through history_failed_idx; then
-- the $1 newest of those. The cost is bounded by (entrypoints with failures) x $1 however large history is.
-- params: $1 limit
SELECT f.id, f.entrypoint, f.attempts, f.finished, f.error, f.tags
FROM (
    SELECT entrypoint
    FROM {schema}.finished_counts
    WHERE status = 'failed'
    GROUP BY entrypoint
    HAVING sum(n) > 0
) AS e
CROSS JOIN LATERAL (
    SELECT h.id, h.entrypoint, h.attempts, h.finished, left(h.error, 2000) AS error, h.tags
    FROM {schema}.history AS h
    WHERE h.status = 'failed' AND h.entrypoint = e.entrypoint
    ORDER BY h.finished DESC
    LIMIT $1
) AS f
ORDER BY f.finished DESC, f.id DESC
LIMIT $1;

-- name: dashboard_schedules
-- Schedules by name (at most $1), each with the status of its newest job (a tick's or one
-- q.run_schedule_now queued) and that job's fire time as last_run (as list_schedules): from
-- history once that job finished, else from jobs (primary-key look-ups).
-- params: $1 limit
SELECT s.name, s.expression, s.tz, s.enabled, s.next_run,
    coalesce(h.fire_time, j.fire_time, s.last_run) AS last_run, s.last_job_id,
    coalesce(h.status, j.status) AS last_status, h.finished AS last_finished,
    left(h.error, 500) AS last_error
FROM {schema}.schedules AS s
LEFT JOIN {schema}.history AS h ON h.id = s.last_job_id
LEFT JOIN {schema}.jobs AS j ON j.id = s.last_job_id
ORDER BY s.name
LIMIT $1;

-- name: dashboard_totals
-- What the tab titles count, over every row rather than over the capped lists: schedules, and
-- workflow runs still running (the workflows table has a row per run, not per step).
-- params: none
SELECT (SELECT count(*) FROM {schema}.schedules) AS schedules,
    (SELECT count(*) FROM {schema}.workflows WHERE status = 'running') AS workflows_running;

-- name: dashboard_workflows
-- The $1 most recent workflow runs, newest first (the primary key, backwards).
-- params: $1 limit
SELECT id, name, status, steps, created, finished
FROM {schema}.workflows
ORDER BY id DESC
LIMIT $1;

-- name: dashboard_workflow_counts
-- Steps per status of the given runs: live steps from jobs (jobs_workflow_idx), finished ones
-- from history (history_workflow_idx); only those runs' rows are read.
-- params: $1 workflow ids bigint[]
SELECT workflow_id, status, count(*)::bigint AS n
FROM {schema}.jobs
WHERE workflow_id = ANY($1::bigint[])
GROUP BY workflow_id, status
UNION ALL
SELECT workflow_id, status, count(*)::bigint
FROM {schema}.history
WHERE workflow_id = ANY($1::bigint[])
GROUP BY workflow_id, status;
