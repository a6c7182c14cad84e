-- Migration 13 (issue #22): move_to_history finds the batch's rows in jobs by primary key
-- whatever the planner estimates. Its DELETE joined jobs to the batch (unnest of the arrays)
-- on id alone; the planner, told by its statistics that few jobs match `worker_id IS NOT
-- DISTINCT FROM holder`, drove the join from jobs, a full walk of jobs_pkey with the batch
-- read again for every row: with 20,000 jobs and a batch of 1,024, 1.6 million comparisons and
-- 200 ms (4.5 ms now); a drain's completions cost twice as much per job at batch 768 as at
-- 512. `j.id = ANY(ids)` gives the jobs side an index condition of its own (the batch's rows,
-- by primary key), and the join of those rows with the batch may now be hashed (no hash of
-- jobs is possible any more: only the rows of `ids` come out of it). Same signature: workers
-- of the version before that are already running keep calling it.
CREATE OR REPLACE FUNCTION {schema}.move_to_history(ids bigint[], outcomes text[],
    from_statuses text[] DEFAULT NULL, holder bigint DEFAULT NULL, results text[] DEFAULT NULL,
    final_errors text[] DEFAULT NULL, tracebacks text[] DEFAULT NULL,
    attempt_errors text[] DEFAULT NULL, starts timestamptz[] DEFAULT NULL,
    ends timestamptz[] DEFAULT NULL, count_shard smallint DEFAULT 0,
    cache_keys text[] DEFAULT NULL, cached_froms bigint[] DEFAULT NULL)
RETURNS TABLE (id bigint, status text, workflow_id bigint) LANGUAGE sql AS $$
WITH moved AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest(ids, outcomes, results, final_errors, tracebacks, attempt_errors, starts, ends,
            cache_keys, cached_froms)
        AS d(job_id, outcome, result_json, final_error, trace, attempt_error, started_at,
             finished_at, cache_key_of, cached_from_of)
    WHERE j.id = d.job_id
      AND j.id = ANY(ids)  -- (see migration 13: the batch's rows by primary key, nothing else)
      AND CASE WHEN from_statuses IS NULL THEN j.worker_id IS NOT DISTINCT FROM holder
               ELSE j.status = ANY(from_statuses) END
    RETURNING j.*, d.outcome, d.result_json, d.final_error, d.trace, d.attempt_error,
        d.started_at, coalesce(d.finished_at, now()) AS finished_at, d.cache_key_of,
        d.cached_from_of
), saved AS (
    INSERT INTO {schema}.history (id, entrypoint, payload, priority, status, attempts,
        dedupe_key, result, error, traceback, errors, worker_id, created, execute_after,
        started, finished, workflow_id, step_name, step_index, schedule_name, fire_time, tags,
        meta, trace_context, snoozes, concurrency_key, cache_key, cached_from, map_source,
        step_path, use_cache)
    SELECT id, entrypoint, payload, priority, outcome, attempts, dedupe_key,
        result_json::jsonb, final_error, trace,
        CASE WHEN attempt_error IS NULL THEN errors
             ELSE coalesce(errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                 'attempt', attempts, 'error', attempt_error, 'at', finished_at))
        END,
        worker_id, created, execute_after, coalesce(started_at, started), finished_at,
        workflow_id, step_name, step_index, schedule_name, fire_time, tags, meta, trace_context,
        snoozes, concurrency_key, cache_key_of, cached_from_of, map_source, step_path,
        use_cache
    FROM moved
    RETURNING entrypoint, status
), counted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), count_shard, 1)
    FROM saved
)
-- (a plain SELECT in WITH runs only when read: the join reads `counted`, one row)
SELECT moved.id, moved.outcome, moved.workflow_id FROM moved, counted
$$;

ALTER FUNCTION {schema}.move_to_history(bigint[], text[], text[], bigint, text[], text[],
    text[], text[], timestamptz[], timestamptz[], smallint, text[], bigint[])
    SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = on;
