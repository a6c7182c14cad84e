-- Migration 10: OpenTelemetry tracing (issue #20, pgq_nb.tracing). Each job records the W3C
-- traceparent of the span that enqueued it, read by the column default from the
-- transaction-local setting pgq_nb.traceparent (set by the enqueue only when tracing is on;
-- NULL otherwise), kept when it is retried and carried to history and back by
-- move_to_history and move_to_jobs (replaced here with the column added, same signatures).
ALTER TABLE {schema}.jobs
    ADD COLUMN trace_context text DEFAULT nullif(current_setting('pgq_nb.traceparent', true), '');
ALTER TABLE {schema}.history ADD COLUMN trace_context text;

CREATE OR REPLACE FUNCTION {schema}.move_to_history(ids bigint[], outcomes text[],
    from_statuses text[] DEFAULT NULL, holder bigint DEFAULT NULL, results text[] DEFAULT NULL,
    final_errors text[] DEFAULT NULL, tracebacks text[] DEFAULT NULL,
    attempt_errors text[] DEFAULT NULL, starts timestamptz[] DEFAULT NULL,
    ends timestamptz[] DEFAULT NULL, count_shard smallint DEFAULT 0)
RETURNS TABLE (id bigint, status text, workflow_id bigint) LANGUAGE sql AS $$
WITH moved AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest(ids, outcomes, results, final_errors, tracebacks, attempt_errors, starts, ends)
        AS d(job_id, outcome, result_json, final_error, trace, attempt_error, started_at,
             finished_at)
    WHERE j.id = d.job_id
      AND CASE WHEN from_statuses IS NULL THEN j.worker_id IS NOT DISTINCT FROM holder
               ELSE j.status = ANY(from_statuses) END
    RETURNING j.*, d.outcome, d.result_json, d.final_error, d.trace, d.attempt_error,
        d.started_at, coalesce(d.finished_at, now()) AS finished_at
), saved AS (
    INSERT INTO {schema}.history (id, entrypoint, payload, priority, status, attempts,
        dedupe_key, result, error, traceback, errors, worker_id, created, execute_after,
        started, finished, workflow_id, step_name, step_index, schedule_name, fire_time, tags,
        meta, trace_context)
    SELECT id, entrypoint, payload, priority, outcome, attempts, dedupe_key,
        result_json::jsonb, final_error, trace,
        CASE WHEN attempt_error IS NULL THEN errors
             ELSE coalesce(errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                 'attempt', attempts, 'error', attempt_error, 'at', finished_at))
        END,
        worker_id, created, execute_after, coalesce(started_at, started), finished_at,
        workflow_id, step_name, step_index, schedule_name, fire_time, tags, meta, trace_context
    FROM moved
    RETURNING entrypoint, status
), counted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), count_shard, 1)
    FROM saved
)
-- (a plain SELECT in WITH runs only when read: the join reads `counted`, one row)
SELECT moved.id, moved.outcome, moved.workflow_id FROM moved, counted
$$;


CREATE OR REPLACE FUNCTION {schema}.move_to_jobs(ids bigint[], from_statuses text[],
    pending integer[] DEFAULT NULL)
RETURNS TABLE (id bigint) LANGUAGE sql AS $$
WITH moved AS (
    DELETE FROM {schema}.history AS h
    USING unnest(ids, pending) AS p(job_id, parents)
    WHERE h.id = p.job_id AND h.status = ANY(from_statuses)
    RETURNING h.*, coalesce(p.parents, 0) AS parents
), requeued AS (
    INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, status, execute_after,
        attempts, dedupe_key, created, last_error, errors, pending_deps, workflow_id, step_name,
        step_index, schedule_name, fire_time, tags, meta, trace_context)
    SELECT id, entrypoint, payload, priority,
        CASE WHEN parents = 0 THEN 'queued' ELSE 'blocked' END, now(), 0, dedupe_key, created,
        error, errors, parents, workflow_id, step_name, step_index, schedule_name, fire_time,
        tags, meta, trace_context
    FROM moved
    RETURNING id
), uncounted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), 0::smallint, -1)
    FROM moved
)
-- (as in move_to_history: the join reads `uncounted`)
SELECT requeued.id FROM requeued, uncounted
$$;
