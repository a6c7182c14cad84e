-- Migration 12 (issue #22): the claim and the completions as functions of the schema,
-- claim_batch and finish_batch, so that a worker's completions and next claim travel in one
-- statement (finish_and_claim) planned with the settings they carry; and move_to_history
-- planned without sequential scans.

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
-- one InitPlan per statement, so a pause holds from the moment q.pause() returns. It filters
-- the claimed rows (next_jobs), not jobs: on jobs its estimate (one row) made the planner scan
-- every job once per claimed row, a nested loop of 10,000 x 256 (270 ms a claim).
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
    SELECT id, entrypoint
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
  AND next_jobs.entrypoint <> ALL (ARRAY(SELECT name FROM {schema}.entrypoints WHERE paused))
RETURNING j.id, j.entrypoint, j.payload, j.priority, j.attempts, j.created,
    j.execute_after, j.dedupe_key, j.workflow_id, j.step_name, j.step_index, j.schedule_name,
    j.fire_time, j.tags, j.meta, j.trace_context, j.snoozes, j.concurrency_key, j.use_cache,
    j.map_source, j.step_path
$claim$;

-- A batch of finished attempts, recorded in one statement (finish_jobs, and finish_and_claim
-- before its claim): see the comment of finish_jobs in pgq_nb/sql/queries/core.sql for what
-- each outcome does. A function of the schema, like claim_batch, for the planner settings it
-- carries (no sequential scan, bitmap scan, sort, hash or merge join: the batch is joined to
-- its rows by primary key, a nested loop whatever the statistics say): Postgres makes a prepared statement's
-- plan generic after five runs and a SQL function's plans are cached, so a plan made while
-- jobs was small would scan it whole for ever after (measured: 45 ms a batch at 300,000
-- queued jobs, instead of about 1). All of its writes are done when it returns (a data-modifying
-- CTE nobody reads runs at the end of the function's statement).
-- params: $1 worker id, $2 ids, $3 outcomes, $4 results (JSON), $5 errors, $6 tracebacks,
--   $7 started, $8 finished, $9 retry or snooze delays (s), $10 cache keys, $11 cached from
CREATE FUNCTION {schema}.finish_batch(bigint, bigint[], text[], text[], text[], text[],
    timestamptz[], timestamptz[], float8[], text[], bigint[])
RETURNS TABLE (id bigint, outcome text, workflow_id bigint, woken bigint)
LANGUAGE sql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off
SET search_path = pg_catalog, pg_temp
AS $finish$
WITH d AS (
    SELECT *
    FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::timestamptz[], $8::timestamptz[], $9::float8[], $10::text[], $11::bigint[])
        AS d(id, outcome, result, error, traceback, started, finished, delay, cache_key,
             cached_from)
), soonest AS (
    SELECT 'due:' || min(delay) AS payload FROM d WHERE outcome IN ('retry', 'snooze')
), snoozed AS (
    UPDATE {schema}.jobs AS j
    SET status = 'queued', worker_id = NULL, cancel_requested = false, started = NULL,
        execute_after = now() + make_interval(secs => d.delay),
        attempts = greatest(j.attempts - 1, 0), snoozes = j.snoozes + 1
    FROM d
    WHERE j.id = d.id AND d.outcome = 'snooze' AND j.worker_id IS NOT DISTINCT FROM $1
    RETURNING j.id, pg_notify('{channel}', (SELECT payload FROM soonest))
), retried AS (
    UPDATE {schema}.jobs AS j
    SET status = 'queued', worker_id = NULL, cancel_requested = false,
        execute_after = now() + make_interval(secs => d.delay),
        last_error = d.error,
        errors = coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'error', d.error, 'at', d.finished))
    FROM d
    WHERE j.id = d.id AND d.outcome = 'retry' AND j.worker_id IS NOT DISTINCT FROM $1
    RETURNING j.id, pg_notify('{channel}', (SELECT payload FROM soonest))
), finishing AS (
    SELECT array_agg(id) AS ids, array_agg(outcome) AS outcomes, array_agg(result) AS results,
        array_agg(error) AS errors, array_agg(traceback) AS tracebacks,
        array_agg(started) AS starts, array_agg(finished) AS ends,
        array_agg(cache_key) AS cache_keys, array_agg(cached_from) AS cached_froms
    FROM d
    WHERE outcome NOT IN ('retry', 'snooze')
), done AS (
    SELECT m.id, m.status AS outcome, m.workflow_id
    FROM finishing AS f,
        {schema}.move_to_history(f.ids, f.outcomes, holder => $1, results => f.results,
            final_errors => f.errors, tracebacks => f.tracebacks, attempt_errors => f.errors,
            starts => f.starts, ends => f.ends, count_shard => ($1 % 16)::smallint,
            cache_keys => f.cache_keys, cached_froms => f.cached_froms) AS m
    WHERE f.ids IS NOT NULL
), released AS (
    UPDATE {schema}.jobs AS c
    SET pending_deps = c.pending_deps - f.n,
        status = CASE WHEN c.pending_deps - f.n <= 0 THEN 'queued' ELSE c.status END,
        execute_after = CASE WHEN c.pending_deps - f.n <= 0 THEN now() ELSE c.execute_after END
    FROM (
        SELECT e.child_id, count(*)::integer AS n
        FROM done JOIN {schema}.job_deps AS e ON e.parent_id = done.id
        WHERE done.outcome = 'succeeded' AND done.workflow_id IS NOT NULL
        GROUP BY e.child_id
    ) AS f
    WHERE c.id = f.child_id AND c.status = 'blocked'
    RETURNING c.status
), woken AS (
    -- (a plain SELECT in WITH runs only when read: the statements read `woken` so the
    -- NOTIFY is sent)
    SELECT pg_notify('{channel}', '') FROM released WHERE status = 'queued' LIMIT 1
)
SELECT done.id, done.outcome, done.workflow_id, (SELECT count(*) FROM woken) AS woken
FROM done
$finish$;

-- The move into history (move_to_history: finish_batch, cancels, requeues, expiries) plans its
-- statements without a sequential scan, as finish_batch does, whoever calls it: Postgres 18
-- caches a SQL function's plans, and one made while jobs was small would scan it whole.
ALTER FUNCTION {schema}.move_to_history(bigint[], text[], text[], bigint, text[], text[],
    text[], text[], timestamptz[], timestamptz[], smallint, text[], bigint[])
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
