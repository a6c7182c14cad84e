-- Notices about schedules (pgq_nb.schedule.api_data).

-- name: live_workers_serving
-- How many live workers (heartbeat within $2 seconds) serve entrypoint $1: none means a new
-- schedule's ticks would wait queued.
-- params: $1 entrypoint text, $2 heartbeat timeout in seconds (float)
SELECT count(*) FROM {schema}.workers AS w
WHERE $1::text = ANY(w.entrypoints)
  AND w.heartbeat >= now() - make_interval(secs => $2::float8);
