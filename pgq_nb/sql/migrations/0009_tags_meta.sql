-- Migration 9: tags and metadata (issue #20, item 2). Jobs, history and schedules get `tags`
-- (text[]) and `meta` (jsonb), NULL when none were given; the views filter history on them
-- through partial GIN indexes (a job without labels costs them nothing; the live table, small,
-- has none), and the moves between jobs and history carry them.
ALTER TABLE {schema}.jobs ADD COLUMN tags text[], ADD COLUMN meta jsonb;
ALTER TABLE {schema}.history ADD COLUMN tags text[], ADD COLUMN meta jsonb;
ALTER TABLE {schema}.schedules ADD COLUMN tags text[], ADD COLUMN meta jsonb;

CREATE INDEX history_tags_idx ON {schema}.history USING gin (tags) WHERE tags IS NOT NULL;
CREATE INDEX history_meta_idx ON {schema}.history USING gin (meta jsonb_path_ops)
    WHERE meta IS NOT NULL;

-- The move of finished jobs from `jobs` to `history`, written once: the one place the history
-- column list is written. Every statement that finishes, fails or cancels jobs calls it
-- (finish_jobs, reclaim_stale, cancel_waiting, fail_descendants), in one statement with the
-- caller's other work. Returns the jobs moved, with their new status.
--   ids             the jobs to move; which of them move: those in one of `from_statuses`, or,
--                   when it is NULL, those `holder` holds (worker_id IS NOT DISTINCT FROM
--                   holder: a job reclaimed from the worker meanwhile is left alone)
--   outcomes        each job's status in history (succeeded, failed, cancelled,
--                   upstream_failed); the other arrays line up with `ids` too (NULL: all NULL)
--   results         the result as JSON text (NULL: none)
--   final_errors    history.error
--   tracebacks      history.traceback
--   attempt_errors  this attempt's error, appended to `errors` as {attempt, error, at: the
--                   finished time}; NULL appends nothing
--   starts, ends    started (NULL: the job's own) and finished (NULL: now())
--   count_shard     the finished_counts shard to count them in
-- (A LANGUAGE sql function with one statement: no plpgsql is needed, and Postgres 18 caches
-- its plan like a prepared statement's.)
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
        meta)
    SELECT id, entrypoint, payload, priority, outcome, attempts, dedupe_key,
        result_json::jsonb, final_error, trace,
        CASE WHEN attempt_error IS NULL THEN errors
             ELSE coalesce(errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                 'attempt', attempts, 'error', attempt_error, 'at', finished_at))
        END,
        worker_id, created, execute_after, coalesce(started_at, started), finished_at,
        workflow_id, step_name, step_index, schedule_name, fire_time, tags, meta
    FROM moved
    RETURNING entrypoint, status
), counted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), count_shard, 1)
    FROM saved
)
-- (a plain SELECT in WITH runs only when read: the join reads `counted`, one row)
SELECT moved.id, moved.outcome, moved.workflow_id FROM moved, counted
$$;

-- The move back from `history` to `jobs` (requeue_failed, retry_workflow_steps), written once:
-- the jobs of `ids` whose status is one of `from_statuses` leave history (and its counters) and
-- wait again under their ids, due now, with fresh attempts, their last error as last_error and
-- every earlier one still in `errors`. `pending` (lined up with `ids`; NULL: 0) is how many
-- parents each still waits for: more than 0 waits blocked. Returns the ids moved.
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
        step_index, schedule_name, fire_time, tags, meta)
    SELECT id, entrypoint, payload, priority,
        CASE WHEN parents = 0 THEN 'queued' ELSE 'blocked' END, now(), 0, dedupe_key, created,
        error, errors, parents, workflow_id, step_name, step_index, schedule_name, fire_time,
        tags, meta
    FROM moved
    RETURNING id
), uncounted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), 0::smallint, -1)
    FROM moved
)
-- (as in move_to_history: the join reads `uncounted`)
SELECT requeued.id FROM requeued, uncounted
$$;
