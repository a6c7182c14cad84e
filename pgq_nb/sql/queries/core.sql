-- Named queries. Each starts with `-- name: NAME`, a line saying what it does, and a
-- `-- params:` line naming the positional parameters. `{schema}` is replaced by the validated,
-- quoted schema name when the file is loaded.

-- name: enqueue_one
-- Add one job. A dedupe_key held by a live job in its scope inserts nothing.
-- params: $1 entrypoint, $2 payload, $3 priority, $4 execute_after (NULL = now), $5 dedupe_key,
--   $6 dedupe scope ('queued' or 'active')
INSERT INTO {schema}.jobs (entrypoint, payload, priority, execute_after, dedupe_key,
    dedupe_scope)
VALUES ($1, $2, $3, coalesce($4, now()), $5, $6)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND dedupe_scope <> 'window'
    AND (status <> 'picked' OR dedupe_scope = 'active') DO NOTHING
RETURNING id;

-- name: enqueue_many
-- Add many jobs in one statement. Identities are drawn in row order, so the ids returned,
-- sorted, line up with the input arrays.
-- params: $1 entrypoints text[], $2 payloads bytea[], $3 priorities int[], $4 execute_after timestamptz[] (NULL = now)
INSERT INTO {schema}.jobs (entrypoint, payload, priority, execute_after)
SELECT e, p, pr, coalesce(ea, now())
FROM unnest($1::text[], $2::bytea[], $3::integer[], $4::timestamptz[])
    WITH ORDINALITY AS t(e, p, pr, ea, n)
ORDER BY n
RETURNING id;

-- name: find_dedupe
-- The live job that holds a dedupe_key in its scope.
-- params: $1 dedupe_key
SELECT id FROM {schema}.jobs
WHERE dedupe_key = $1 AND dedupe_scope <> 'window'
  AND (status <> 'picked' OR dedupe_scope = 'active');

-- name: claim_jobs
-- Claim up to $2 due jobs for this worker in one statement: claim_batch, in the schema (its
-- comment says how; a function so that its planner settings come with it).
-- params: $1 entrypoints text[], $2 batch size, $3 worker id
SELECT {include:_claimed_columns}
FROM {schema}.claim_batch($1, $2, $3) AS c;

-- name: claim_source
-- The claim statement inside claim_batch, as installed (EXPLAIN it with claim_jobs' params
-- under CLAIM_PLAN: the plan the function runs; tests and benchmarks check it).
-- params: $1 the schema's name
SELECT prosrc FROM pg_proc
WHERE proname = 'claim_batch' AND pronamespace = to_regnamespace(quote_ident($1));

-- name: finish_jobs
-- Record a batch of finished attempts in one statement: finish_batch, in the schema (a function
-- so that its planner settings come with it). An attempt to retry goes back to the
-- queue, due after its delay, with its error appended to `errors`; every other outcome moves
-- the job to `history` and counts it in `finished_counts` (move_to_history, in the schema:
-- the one place that move is written), and a succeeded workflow step counts itself off its
-- children's pending_deps (under each child's row lock; a child at zero becomes claimable,
-- and workers are woken). Only jobs this worker still holds are touched: a
-- job reclaimed from it in the meantime is left alone. Returns the jobs moved to history.
-- A snooze (pgq_nb.Snooze, issue #21) goes back to the queue like a retry but is no failure:
-- its attempt is taken back (mark_started counted it), snoozes goes up by one, errors stays.
-- A success of a cached entrypoint carries its cache key (and, served from the cache, the job
-- whose handler really ran), which move_to_history writes to history.
-- Retries tell the workers when the soonest of them is due, `due:SECONDS`, so an idle worker
-- wakes then rather than at its next poll: one NOTIFY per statement (every retried row sends
-- the same payload, and Postgres delivers identical notifications of a transaction once).
-- (worker_id is set exactly while a job is picked. It is compared with IS NOT DISTINCT FROM,
-- which no index serves, so that the planner finds the batch's rows by primary key: with
-- `worker_id = $1 AND status = 'picked'` it drove the join from jobs_picked_idx whenever its
-- statistics said no job was picked, a nested loop over every running job per batch row.)
-- params: $1 worker id, $2 ids bigint[], $3 outcomes text[] (succeeded, failed, cancelled,
--   retry, snooze), $4 results text[] (JSON), $5 errors text[], $6 tracebacks text[],
--   $7 started timestamptz[], $8 finished timestamptz[], $9 retry or snooze delays in
--   seconds float[], $10 cache keys text[], $11 cached from bigint[]
SELECT id, outcome, workflow_id, woken
FROM {schema}.finish_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: finish_and_claim
-- A worker's claim with the previous batch's completions, in one statement and so one round
-- trip and one commit: finish_batch ($1 to $11, as finish_jobs), then claim_batch ($12
-- entrypoints, $13 batch size). finish_batch has done all its writes when it returns (its
-- rows are counted first, and claim_batch is LATERAL to that count), so this worker's rows are
-- locked before queued ones (the order cancel_jobs relies on) and the claim, a statement of
-- its own inside claim_batch, sees them: a workflow step they released can be claimed at once.
-- Both are functions so that the planner settings they carry plan their statements; this
-- statement's own plan, cached by the driver and made generic by the server after five runs,
-- then holds as the table grows (with the completions' joins in it, a generic plan made while
-- jobs was small scanned it whole: 45 ms a batch at 300,000 queued jobs). The claimed
-- columns are named, not c.*: a later claim_batch may return more.
-- params: $1 to $11 as finish_jobs, $12 entrypoints text[], $13 batch size
SELECT {include:_claimed_columns}
FROM (SELECT count(*) AS n
      FROM {schema}.finish_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)) AS f,
    LATERAL {schema}.claim_batch($12, ($13 + 0 * f.n)::integer, $1) AS c;

-- name: _claimed_columns
-- What a claim returns, as pgq_nb.models.Job takes it (from claim_batch, aliased c).
c.id, c.entrypoint, c.payload, c.priority, c.attempts, c.created, c.execute_after,
    c.dedupe_key, c.workflow_id, c.step_name, c.step_index, c.schedule_name, c.fire_time,
    c.tags, c.meta, c.trace_context, c.snoozes, c.concurrency_key, c.use_cache, c.map_source,
    c.step_path

-- name: mark_started
-- The worker is about to start these jobs' handlers: count the attempt and note the start.
-- From here a lost worker costs the job an attempt (so a job that kills its worker every
-- time ends as failed); before it, it costs nothing. The worker writes it right after the
-- claim's COMMIT and starts the handlers without waiting for the reply (the simple protocol,
-- which takes no parameters: the worker inlines $1 and $2, integers it formats itself), so it
-- costs no wait, and its commit does not wait for the WAL flush: a worker's death cannot undo
-- it, only a server crash within a fraction of a second, which at worst leaves one attempt
-- uncounted.
-- params: $1 worker id, $2 ids as a bigint[] literal ('{1,2,3}')
BEGIN;
SET LOCAL synchronous_commit = off;
UPDATE {schema}.jobs
SET attempts = attempts + 1, started = now()
WHERE id = ANY('$2'::bigint[]) AND worker_id = $1;
COMMIT;

-- name: return_jobs
-- Give a stopping worker's unfinished jobs back to the queue, due after $4 seconds. The
-- interrupted run does not count as an attempt: the job did not fail, its worker was stopped.
-- Returns the ids given back (those this worker still held).
-- params: $1 worker id, $2 ids bigint[], $3 note for last_error, $4 delay in seconds (float)
UPDATE {schema}.jobs
SET status = 'queued', worker_id = NULL,
    attempts = CASE WHEN started IS NULL THEN attempts ELSE greatest(attempts - 1, 0) END,
    started = NULL, last_error = $3, cancel_requested = false,
    execute_after = now() + make_interval(secs => $4)
WHERE id = ANY($2::bigint[]) AND worker_id = $1 AND status = 'picked'
RETURNING id;

-- name: lock_returning
-- The jobs a stopping worker is about to give back that it still holds, locked until it has
-- (a cancel request waits for it), and which of them someone asked to cancel: those end as
-- cancelled instead of going back to the queue.
-- params: $1 worker id, $2 ids bigint[]
SELECT id, cancel_requested FROM {schema}.jobs
WHERE id = ANY($2::bigint[]) AND worker_id = $1 AND status = 'picked'
ORDER BY id
FOR UPDATE;

-- name: orphan_jobs
-- Jobs this worker holds but does not run: those of a claim whose reply was lost (the
-- connection broke while the COMMIT was under way, and it did commit).
-- params: $1 worker id, $2 ids the worker runs or has finished bigint[]
SELECT id FROM {schema}.jobs
WHERE worker_id = $1 AND status = 'picked' AND id <> ALL($2::bigint[]);

-- name: return_orphans
-- Give such jobs back to the queue, not counted as attempts. Returns their ids.
-- params: $1 worker id, $2 ids bigint[]
UPDATE {schema}.jobs
SET status = 'queued', worker_id = NULL,
    attempts = CASE WHEN started IS NULL THEN attempts ELSE greatest(attempts - 1, 0) END,
    started = NULL, cancel_requested = false
WHERE worker_id = $1 AND status = 'picked' AND id = ANY($2::bigint[])
RETURNING id;

-- name: register_worker
-- Record a starting worker process; its id tags the jobs it claims.
-- params: $1 host, $2 pid, $3 entrypoints text[], $4 concurrency, $5 executor, $6 processes
INSERT INTO {schema}.workers (host, pid, entrypoints, concurrency, executor, processes)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: heartbeat_worker
-- Tell the others this worker is alive (one row per worker, not one per job it holds).
-- Returns nothing when the row is gone: the worker was presumed dead and its jobs reclaimed.
-- params: $1 worker id
UPDATE {schema}.workers SET heartbeat = now() WHERE id = $1 RETURNING id;

-- name: deregister_worker
-- Remove a worker that stopped cleanly.
-- params: $1 worker id
DELETE FROM {schema}.workers WHERE id = $1;

-- name: reclaim_stale
-- Jobs held by a worker that has sent no heartbeat within the timeout (or whose worker row is
-- gone) lost their run, and that run counts as an attempt, unless the worker had not started
-- it yet (mark_started had not run: started is NULL), which goes back as it was. Jobs with
-- attempts left go back to the queue; the rest (a job that kills its worker every time) fail
-- for good, and those someone asked to cancel end cancelled (move_to_history). Forgets the
-- dead workers. Returns each job's id and whether it was requeued. Silence is counted from
-- the server's start at the earliest: while it was down nobody could send a heartbeat, and
-- the workers that ran jobs through the outage are still running them.
-- params: $1 heartbeat timeout in seconds (float)
WITH dead AS (
    DELETE FROM {schema}.workers
    WHERE greatest(heartbeat, pg_postmaster_start_time()) < now() - make_interval(secs => $1)
    RETURNING id
), stale AS (
    SELECT j.id, j.started IS NULL AS unstarted,
        (j.started IS NOT NULL AND j.attempts >= coalesce(e.max_attempts, 3))
            OR j.cancel_requested AS exhausted,
        j.cancel_requested,
        'worker ' || coalesce(j.worker_id::text, '?') || ' stopped sending heartbeats while '
            || 'running attempt ' || j.attempts AS error
    FROM {schema}.jobs AS j
    LEFT JOIN {schema}.entrypoints AS e ON e.name = j.entrypoint
    WHERE j.status = 'picked'
      AND (j.worker_id IN (SELECT id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM {schema}.workers AS w WHERE w.id = j.worker_id))
    FOR UPDATE OF j SKIP LOCKED
), requeued AS (
    UPDATE {schema}.jobs AS j
    SET status = 'queued', worker_id = NULL, started = NULL,
        last_error = CASE WHEN s.unstarted THEN j.last_error ELSE s.error END,
        errors = CASE WHEN s.unstarted THEN j.errors
            ELSE coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempts, 'error', s.error, 'at', now()))
            END
    FROM stale AS s
    WHERE j.id = s.id AND NOT s.exhausted
    RETURNING j.id
), lost AS (
    SELECT array_agg(id) AS ids,
        array_agg(CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END) AS outcomes,
        array_agg(CASE WHEN cancel_requested THEN 'cancelled while its worker was lost'
            ELSE error || '; no attempts left (a job that kills its worker every time?)'
            END) AS errors,
        array_agg(error) AS attempt_errors
    FROM stale
    WHERE exhausted
), failed AS (
    -- (the stale rows are locked above: still picked)
    SELECT m.id, m.workflow_id
    FROM lost AS l,
        {schema}.move_to_history(l.ids, l.outcomes, from_statuses => '{picked}',
            final_errors => l.errors, attempt_errors => l.attempt_errors) AS m
    WHERE l.ids IS NOT NULL
)
SELECT id, true AS requeued, NULL::bigint AS workflow_id FROM requeued
UNION ALL
SELECT id, false, workflow_id FROM failed;

-- name: next_due
-- Seconds until the soonest queued job of these entrypoints that is not due yet becomes due
-- (NULL: none). A worker asks after a claim that found nothing, and wakes then (see
-- worker_decisions.wake_at). Jobs due already are left out: a claim could not take them
-- (locked by another worker, no free slot or token), and waking for them would spin.
-- params: $1 entrypoints text[]
SELECT extract(epoch FROM min(execute_after) - now())::float8
FROM {schema}.jobs
WHERE status = 'queued' AND entrypoint = ANY($1::text[]) AND execute_after > now();

-- name: set_worker_entrypoints
-- A worker that serves its queue's whole registry took on handlers registered after it
-- started: record them with the worker (q.workers(), a schedule's live workers).
-- params: $1 worker id, $2 entrypoints text[]
UPDATE {schema}.workers SET entrypoints = $2 WHERE id = $1;

-- name: notify_jobs
-- Wake listening workers (after requeueing rows, which the INSERT trigger does not see).
-- params: none
SELECT pg_notify('{channel}', '');

-- name: upsert_entrypoints
-- Remember the entrypoints a Queue has handlers for, with their retry limits.
-- params: $1 names text[], $2 max_attempts int[]
INSERT INTO {schema}.entrypoints (name, max_attempts)
SELECT * FROM unnest($1::text[], $2::integer[])
ON CONFLICT (name) DO UPDATE SET last_seen = now(), max_attempts = excluded.max_attempts;

-- name: declare_entrypoints
-- Remember entrypoint names an enqueuing process has handlers for, without touching the
-- settings the workers that run them have recorded.
-- params: $1 names text[]
INSERT INTO {schema}.entrypoints (name)
SELECT unnest($1::text[])
ON CONFLICT (name) DO NOTHING;

-- name: known_entrypoints
-- Every entrypoint some Queue has registered.
-- params: none
SELECT name FROM {schema}.entrypoints;

-- name: job_counts
-- Live jobs per entrypoint and status (the live table is small).
-- params: none
SELECT entrypoint, status, count(*) AS n
FROM {schema}.jobs
GROUP BY entrypoint, status
ORDER BY entrypoint, status;

-- name: history_counts
-- Finished jobs per entrypoint and status, from the counters (never a count over history).
-- params: none
SELECT entrypoint, status, sum(n)::bigint AS n
FROM {schema}.finished_counts
GROUP BY entrypoint, status
ORDER BY entrypoint, status;

-- name: list_workers
-- Workers with a recent heartbeat.
-- params: $1 heartbeat timeout in seconds (float)
SELECT id, host, pid, entrypoints, concurrency, executor, processes, started, heartbeat
FROM {schema}.workers
WHERE heartbeat >= now() - make_interval(secs => $1)
ORDER BY id;

-- name: get_job
-- One job, live or finished, by id.
-- params: $1 id
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key, NULL::jsonb AS result,
    last_error AS error, NULL::text AS traceback, errors, worker_id, created, execute_after,
    started, NULL::timestamptz AS finished, workflow_id, step_name, schedule_name, fire_time
FROM {schema}.jobs WHERE id = $1
UNION ALL
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key, result,
    error, traceback, errors, worker_id, created, execute_after, started, finished,
    workflow_id, step_name, schedule_name, fire_time
FROM {schema}.history WHERE id = $1;

-- name: job_statuses
-- Current status of each of the given jobs, live or finished.
-- params: $1 ids bigint[]
SELECT id, status FROM {schema}.jobs WHERE id = ANY($1::bigint[])
UNION ALL
SELECT id, status FROM {schema}.history WHERE id = ANY($1::bigint[]);

-- name: count_runnable
-- How many jobs of these entrypoints are queued and due within $2 seconds, or picked. Queued
-- jobs of a paused entrypoint do not count: nobody may run them until it is resumed, so a
-- worker that stops when idle would otherwise never stop.
-- params: $1 entrypoints text[], $2 horizon in seconds (float)
SELECT count(*) FROM {schema}.jobs
WHERE entrypoint = ANY($1::text[])
  AND (status = 'picked'
       OR (status = 'queued' AND execute_after <= now() + make_interval(secs => $2)
           AND entrypoint <> ALL (ARRAY(SELECT name FROM {schema}.entrypoints WHERE paused))));

-- name: analyze_jobs
-- Refresh the planner's statistics after a bulk load, so claims keep using jobs_claim_idx.
-- params: none
ANALYZE {schema}.jobs;

-- name: cancel_waiting
-- Cancel jobs that have not started (queued or blocked): straight to history as cancelled
-- (move_to_history). Returns the jobs cancelled.
-- params: $1 ids bigint[]
WITH waiting AS (
    SELECT array_agg(id) AS ids, array_agg('cancelled'::text) AS outcomes,
        array_agg('cancelled before it ran'::text) AS errors
    FROM unnest($1::bigint[]) AS id
)
SELECT m.id, m.workflow_id
FROM waiting AS w,
    {schema}.move_to_history(w.ids, w.outcomes, from_statuses => '{queued,blocked}',
        final_errors => w.errors) AS m
WHERE w.ids IS NOT NULL;

-- name: request_cancel
-- Ask the workers running these jobs to cancel them (they are told by NOTIFY, or see the flag
-- at their next heartbeat).
-- params: $1 ids bigint[]
UPDATE {schema}.jobs SET cancel_requested = true
WHERE id = ANY($1::bigint[]) AND status = 'picked'
RETURNING id;

-- name: notify_cancel
-- Tell every worker which jobs to cancel.
-- params: $1 comma-separated ids
SELECT pg_notify('{channel}', 'cancel:' || $1);

-- name: cancel_requested
-- Jobs this worker holds that someone asked to cancel (the polling fallback for NOTIFY).
-- params: $1 worker id
SELECT id FROM {schema}.jobs
WHERE worker_id = $1 AND status = 'picked' AND cancel_requested;

-- name: failed_jobs
-- Jobs that failed for good, newest first.
-- params: $1 entrypoint (NULL = all), $2 limit
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key, result,
    error, traceback, errors, worker_id, created, execute_after, started, finished,
    workflow_id, step_name, schedule_name, fire_time
FROM {schema}.history
WHERE status = 'failed' AND ($1::text IS NULL OR entrypoint = $1)
ORDER BY finished DESC
LIMIT $2;

-- name: requeue_failed
-- Put failed jobs back in the queue under their old ids, with fresh attempts; their earlier
-- errors stay in `errors` (move_to_jobs, in the schema). Returns the ids requeued.
-- params: $1 ids bigint[] (NULL = all), $2 entrypoint (NULL = all)
WITH chosen AS (
    SELECT array_agg(id) AS ids
    FROM {schema}.history
    WHERE status = 'failed'
      AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
      AND ($2::text IS NULL OR entrypoint = $2)
      -- a job whose dedupe_key is live again stays failed rather than clash with it
      AND (dedupe_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {schema}.jobs AS live WHERE live.dedupe_key = history.dedupe_key))
)
SELECT m.id
FROM chosen AS c, {schema}.move_to_jobs(c.ids, '{failed}') AS m
WHERE c.ids IS NOT NULL;
