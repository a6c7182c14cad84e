-- Named queries of the Prometheus metrics (pgq_nb.metrics): what one scrape reads, in one
-- read-only transaction. None reads history: finished jobs come from the finished_counts
-- counters (the query history_counts in core.sql); the live set in `jobs` is read once, as
-- q.stats() reads it; the rest are tables of a row per worker, entrypoint or schedule.
-- tests/test_metrics.py reads the plan of each of them (no scan of history, one pass over
-- jobs only in metrics_live_jobs).

-- name: metrics_live_jobs
-- Live jobs per entrypoint and status (the counts q.stats() shows), in one pass over the live
-- set: how many, how many of the queued ones wait to run again after a failed attempt, and the
-- seconds since the longest-waiting queued job became due (NULL: none is due; a job due later
-- is not a backlog).
-- params: none
SELECT entrypoint, status, count(*) AS n,
    count(*) FILTER (WHERE status = 'queued' AND attempts > 0) AS awaiting_retry,
    extract(epoch FROM now() - min(execute_after)
        FILTER (WHERE status = 'queued' AND execute_after <= now()))::float8 AS oldest_due_s
FROM {schema}.jobs
GROUP BY entrypoint, status;

-- name: metrics_workers
-- Workers whose heartbeat is younger than the timeout, and the jobs they may run at once.
-- params: $1 heartbeat timeout in seconds (float)
SELECT count(*) AS alive, coalesce(sum(concurrency), 0)::bigint AS slots
FROM {schema}.workers
WHERE heartbeat >= now() - make_interval(secs => $1);

-- name: metrics_entrypoints
-- Every registered entrypoint and whether it is paused.
-- params: none
SELECT name, paused FROM {schema}.entrypoints;

-- name: metrics_schedules
-- Every schedule: enabled or paused, the seconds since its next tick came due and did not fire
-- (negative: not due yet), and its last tick as epoch seconds (NULL: never fired).
-- params: none
SELECT name, enabled,
    extract(epoch FROM now() - next_run)::float8 AS late_s,
    extract(epoch FROM next_run)::float8 AS next_run,
    extract(epoch FROM last_run)::float8 AS last_run
FROM {schema}.schedules;
