-- Named queries. Each starts with `-- name: NAME`, a line saying what it does, and a
-- `-- params:` line naming the positional parameters. `{schema}` is replaced by the validated,
-- quoted schema name when the file is loaded.

-- name: enqueue_one
-- Add one job. A dedupe_key that matches a queued or running job inserts nothing.
-- params: $1 entrypoint, $2 payload, $3 priority, $4 execute_after (NULL = now), $5 dedupe_key
INSERT INTO {schema}.jobs (entrypoint, payload, priority, execute_after, dedupe_key)
VALUES ($1, $2, $3, coalesce($4, now()), $5)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
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
-- The queued or running job that holds a dedupe_key.
-- params: $1 dedupe_key
SELECT id FROM {schema}.jobs WHERE dedupe_key = $1;

-- name: claim_jobs
-- Claim up to $2 due jobs for this worker in one statement.
-- The CTE walks jobs_claim_idx (queued rows only, highest priority first, then oldest), skips
-- rows another worker has locked instead of waiting for them, and stops at $2 rows; the
-- UPDATE then marks exactly those rows picked. Returned rows come in no particular order.
-- params: $1 entrypoints text[], $2 batch size, $3 worker id
WITH next_jobs AS (
    SELECT id
    FROM {schema}.jobs
    WHERE status = 'queued'
      AND entrypoint = ANY($1::text[])
      AND execute_after <= now()
    ORDER BY priority DESC, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET status = 'picked', worker_id = $3, started = now(), attempts = j.attempts + 1
FROM next_jobs
WHERE j.id = next_jobs.id
RETURNING j.id, j.entrypoint, j.payload, j.priority, j.attempts, j.created,
    j.execute_after, j.dedupe_key;

-- name: finish_jobs
-- Move finished jobs from `jobs` to `history` in one statement, each with its result or error.
-- Only jobs this worker still holds move: a job reclaimed from it in the meantime stays.
-- params: $1 worker id, $2 ids bigint[], $3 statuses text[], $4 results text[] (JSON),
--   $5 errors text[], $6 tracebacks text[], $7 started timestamptz[], $8 finished timestamptz[]
WITH done AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::timestamptz[], $8::timestamptz[])
        AS d(id, status, result, error, traceback, started, finished)
    WHERE j.id = d.id AND j.worker_id = $1 AND j.status = 'picked'
    RETURNING j.id, j.entrypoint, j.payload, j.priority, d.status, j.attempts, j.dedupe_key,
        d.result, d.error, d.traceback, j.worker_id, j.created, d.started, d.finished
)
INSERT INTO {schema}.history (id, entrypoint, payload, priority, status, attempts, dedupe_key,
    result, error, traceback, worker_id, created, started, finished)
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key,
    result::jsonb, error, traceback, worker_id, created, started, finished
FROM done;

-- name: return_jobs
-- Give jobs a stopping worker claimed but never started back to the queue, as if never claimed.
-- params: $1 worker id, $2 ids bigint[]
UPDATE {schema}.jobs
SET status = 'queued', worker_id = NULL, started = NULL, attempts = attempts - 1
WHERE id = ANY($2::bigint[]) AND worker_id = $1 AND status = 'picked';

-- name: interrupt_jobs
-- Requeue jobs a stopping worker started but could not finish within its grace period; the
-- interrupted run counts as an attempt.
-- params: $1 worker id, $2 ids bigint[]
UPDATE {schema}.jobs
SET status = 'queued', worker_id = NULL, last_error = 'interrupted: worker shut down'
WHERE id = ANY($2::bigint[]) AND worker_id = $1 AND status = 'picked';

-- name: register_worker
-- Record a starting worker process; its id tags the jobs it claims.
-- params: $1 host, $2 pid, $3 entrypoints text[], $4 concurrency
INSERT INTO {schema}.workers (host, pid, entrypoints, concurrency)
VALUES ($1, $2, $3, $4)
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
-- Put back in the queue every job held by a worker that has not sent a heartbeat within the
-- timeout (or whose worker row is gone), then forget those workers. The lost run counts as an
-- attempt. Returns the ids requeued.
-- params: $1 heartbeat timeout in seconds (float)
WITH dead AS (
    DELETE FROM {schema}.workers
    WHERE heartbeat < now() - make_interval(secs => $1)
    RETURNING id
), requeued AS (
    UPDATE {schema}.jobs AS j
    SET status = 'queued', worker_id = NULL,
        last_error = 'worker ' || coalesce(j.worker_id::text, '?') || ' stopped sending heartbeats'
    WHERE j.status = 'picked'
      AND (j.worker_id IN (SELECT id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM {schema}.workers AS w WHERE w.id = j.worker_id))
    RETURNING j.id
)
SELECT id FROM requeued;

-- name: notify_jobs
-- Wake listening workers (after requeueing rows, which the INSERT trigger does not see).
-- params: none
SELECT pg_notify('{channel}', '');

-- name: upsert_entrypoints
-- Remember the entrypoints a Queue has handlers for.
-- params: $1 names text[]
INSERT INTO {schema}.entrypoints (name)
SELECT unnest($1::text[])
ON CONFLICT (name) DO UPDATE SET last_seen = now();

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
-- Finished jobs per entrypoint and status.
-- params: none
SELECT entrypoint, status, count(*) AS n
FROM {schema}.history
GROUP BY entrypoint, status
ORDER BY entrypoint, status;

-- name: list_workers
-- Workers with a recent heartbeat.
-- params: $1 heartbeat timeout in seconds (float)
SELECT id, host, pid, entrypoints, concurrency, started, heartbeat
FROM {schema}.workers
WHERE heartbeat >= now() - make_interval(secs => $1)
ORDER BY id;

-- name: get_job
-- One job, live or finished, by id.
-- params: $1 id
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key, NULL::jsonb AS result,
    last_error AS error, NULL::text AS traceback, worker_id, created, execute_after, started,
    NULL::timestamptz AS finished
FROM {schema}.jobs WHERE id = $1
UNION ALL
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key, result,
    error, traceback, worker_id, created, NULL::timestamptz, started, finished
FROM {schema}.history WHERE id = $1;

-- name: job_statuses
-- Current status of each of the given jobs, live or finished.
-- params: $1 ids bigint[]
SELECT id, status FROM {schema}.jobs WHERE id = ANY($1::bigint[])
UNION ALL
SELECT id, status FROM {schema}.history WHERE id = ANY($1::bigint[]);

-- name: count_runnable
-- How many jobs of these entrypoints are queued and due within $2 seconds, or picked.
-- params: $1 entrypoints text[], $2 horizon in seconds (float)
SELECT count(*) FROM {schema}.jobs
WHERE entrypoint = ANY($1::text[])
  AND (status = 'picked'
       OR (status = 'queued' AND execute_after <= now() + make_interval(secs => $2)));

-- name: analyze_jobs
-- Refresh the planner's statistics after a bulk load, so claims keep using jobs_claim_idx.
-- params: none
ANALYZE {schema}.jobs;
