-- Migration 12 (issue #22): the claim as a function of the schema, claim_batch, so that a
-- worker's completions and next claim travel in one statement (finish_and_claim).

-- Issue #22: the claim as a function, so that a worker's claim is one statement: the planner
-- settings that keep it on jobs_claim_idx (see pgq_nb.claiming.CLAIM_PLAN: with statistics
-- that predate a burst of enqueues the planner would scan and sort every queued row) are the
-- function's own, and need no transaction of their own; finish_and_claim (the previous
-- batch's completions, then this claim) is one round trip. Claim up to $2 due jobs of the
-- entrypoints $1 for worker $3: the CTE walks jobs_claim_idx (queued rows only, highest
-- priority first, then oldest), skips rows another worker has locked instead of waiting for
-- them, and stops at $2 rows; the UPDATE then marks exactly those rows picked. Rows come back
-- in no particular order. The attempt is not counted here but by mark_started, when the worker
-- starts the handlers: a worker that dies between the two has not run the job, and its loss
-- costs no attempt. Paused entrypoints are left out of $1 by the worker (a filter on them in
-- the CTE would skew the planner's row estimate towards a sequential scan and sort); the
-- UPDATE leaves out those paused since the worker last heard (its pause NOTIFY not read yet):
-- one InitPlan per statement, so a pause holds from the moment q.pause() returns.
-- Its columns are read by name (claim_jobs, finish_and_claim): a later migration may add
-- columns (CREATE OR REPLACE), never rename or remove one, since workers of the version
-- before may still be running; a change of shape is a new function beside this one.
CREATE FUNCTION {schema}.claim_batch(text[], integer, bigint)
RETURNS TABLE (id bigint, entrypoint text, payload bytea, priority integer, attempts integer,
    created timestamptz, execute_after timestamptz, dedupe_key text, workflow_id bigint,
    step_name text, step_index integer, schedule_name text, fire_time timestamptz, tags text[],
    meta jsonb, trace_context text, snoozes integer, concurrency_key text, use_cache boolean,
    map_source bigint, step_path integer[])
LANGUAGE sql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET search_path = pg_catalog, pg_temp
AS $claim$
WITH next_jobs AS (
    SELECT id
    FROM {schema}.jobs
    WHERE status = 'queued'
      AND entrypoint = ANY($1)
      AND execute_after <= now()
    ORDER BY priority DESC, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET status = 'picked', worker_id = $3, started = NULL
FROM next_jobs
WHERE j.id = next_jobs.id
  AND j.entrypoint <> ALL (ARRAY(SELECT name FROM {schema}.entrypoints WHERE paused))
RETURNING j.id, j.entrypoint, j.payload, j.priority, j.attempts, j.created,
    j.execute_after, j.dedupe_key, j.workflow_id, j.step_name, j.step_index, j.schedule_name,
    j.fire_time, j.tags, j.meta, j.trace_context, j.snoozes, j.concurrency_key, j.use_cache,
    j.map_source, j.step_path
$claim$;
