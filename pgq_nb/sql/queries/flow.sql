-- Flow control across every worker: global concurrency slots, rate limits, pausing, and dedupe
-- keys with a scope.

-- name: set_limits
-- Record an entrypoint's global limits (from its @q.entrypoint registration) and make its slot
-- rows and token bucket match: slots 1..max_running exist, free ones above it go.
-- params: $1 entrypoint, $2 max_running (NULL = none), $3 rate per second (NULL = none),
--   $4 burst
WITH ep AS (
    UPDATE {schema}.entrypoints SET max_running = $2, rate_per_s = $3 WHERE name = $1
), add_slots AS (
    INSERT INTO {schema}.entrypoint_slots (entrypoint, slot)
    SELECT $1, generate_series(1, coalesce($2, 0))
    ON CONFLICT DO NOTHING
), drop_slots AS (
    DELETE FROM {schema}.entrypoint_slots
    WHERE entrypoint = $1 AND slot > coalesce($2, 0) AND job_id IS NULL
), bucket AS (
    INSERT INTO {schema}.rate_buckets (entrypoint, rate, burst, tokens)
    SELECT $1, $3, $4, $4 WHERE $3 IS NOT NULL
    ON CONFLICT (entrypoint) DO UPDATE SET rate = excluded.rate, burst = excluded.burst
)
DELETE FROM {schema}.rate_buckets WHERE entrypoint = $1 AND $3 IS NULL;

-- name: claim_limited
-- Claim up to $2 due jobs of one entrypoint with a global limit. The token bucket (if any) is
-- locked (claims of this entrypoint queue here, briefly) and refilled for the time since it was
-- last used; free slots (if any) are taken FOR UPDATE SKIP LOCKED. Then as many jobs as both
-- allow are claimed as in claim_jobs, each bound to a slot, and the tokens are spent.
-- The refill is measured on the clock when the bucket's lock is held (clock_timestamp(), not
-- now(), the transaction's start): a claim that waited for the lock while a later one spent
-- and stamped the bucket would otherwise see a negative time since (fewer tokens than none:
-- a negative LIMIT, the worker's claim failing) and stamp the bucket back in time (the next
-- claim refilled that time twice: more than the rate).
-- params: $1 entrypoint, $2 batch size, $3 worker id
WITH bucket AS (
    SELECT greatest(0, least(burst,
               tokens + rate * greatest(0, extract(epoch FROM clock_timestamp() - updated))))
               AS avail,
           greatest(updated, clock_timestamp()) AS at
    FROM {schema}.rate_buckets WHERE entrypoint = $1
    FOR UPDATE
), slots AS (
    SELECT slot FROM {schema}.entrypoint_slots
    WHERE entrypoint = $1 AND job_id IS NULL
    ORDER BY slot
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), allowance AS (
    SELECT least(
        $2,
        CASE WHEN EXISTS (SELECT 1 FROM {schema}.entrypoint_slots WHERE entrypoint = $1)
             THEN (SELECT count(*) FROM slots) ELSE $2 END,
        coalesce((SELECT floor(avail) FROM bucket), $2)
    )::integer AS n
), next_jobs AS (
    SELECT id
    FROM {schema}.jobs
    WHERE status = 'queued'
      AND entrypoint = $1
      AND execute_after <= now()
      AND NOT EXISTS (SELECT 1 FROM {schema}.entrypoints AS e WHERE e.name = $1 AND e.paused)
    ORDER BY priority DESC, id
    LIMIT (SELECT n FROM allowance)
    FOR UPDATE SKIP LOCKED
), numbered_jobs AS (
    SELECT id, row_number() OVER (ORDER BY id) AS rn FROM next_jobs
), numbered_slots AS (
    SELECT slot, row_number() OVER (ORDER BY slot) AS rn FROM slots
), taken AS (
    UPDATE {schema}.entrypoint_slots AS s
    SET job_id = j.id, worker_id = $3
    FROM numbered_slots AS ns JOIN numbered_jobs AS j USING (rn)
    WHERE s.entrypoint = $1 AND s.slot = ns.slot
), spent AS (
    UPDATE {schema}.rate_buckets AS r
    SET tokens = b.avail - (SELECT count(*) FROM next_jobs), updated = b.at
    FROM bucket AS b
    WHERE r.entrypoint = $1
)
UPDATE {schema}.jobs AS j
SET status = 'picked', worker_id = $3, started = NULL
FROM next_jobs
WHERE j.id = next_jobs.id
RETURNING j.id, j.entrypoint, j.payload, j.priority, j.attempts, j.created,
    j.execute_after, j.dedupe_key, j.workflow_id, j.step_name, j.step_index, j.schedule_name,
    j.fire_time, j.tags, j.meta, j.trace_context, j.snoozes, j.concurrency_key, j.use_cache,
    j.map_source, j.step_path;

-- name: release_slots
-- Free the slots of jobs this worker finished, and wake the workers waiting for one.
-- params: $1 worker id, $2 job ids bigint[]
WITH freed AS (
    UPDATE {schema}.entrypoint_slots SET job_id = NULL, worker_id = NULL
    WHERE job_id = ANY($2::bigint[]) AND worker_id = $1
    RETURNING 1
)
SELECT pg_notify('{channel}', '') FROM freed LIMIT 1;

-- name: sweep_slots
-- Free slots whose job is no longer running for the worker that took it (dead workers,
-- cancelled or returned jobs), and forget dedupe windows that have expired.
-- params: none
WITH freed AS (
    UPDATE {schema}.entrypoint_slots AS s SET job_id = NULL, worker_id = NULL
    WHERE s.job_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.jobs AS j
          WHERE j.id = s.job_id AND j.status = 'picked' AND j.worker_id = s.worker_id)
    RETURNING 1
), expired AS (
    DELETE FROM {schema}.dedupe_windows WHERE expires < now()
)
SELECT count(*)::integer AS freed FROM freed;

-- name: set_paused
-- Pause or resume an entrypoint for every worker; workers are told at once (and re-read the
-- paused set at every heartbeat).
-- params: $1 entrypoint, $2 paused
WITH changed AS (
    INSERT INTO {schema}.entrypoints (name, paused) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
    RETURNING name, paused
)
SELECT pg_notify('{channel}', CASE WHEN paused THEN 'pause:' ELSE 'resume:' END || name)
FROM changed;

-- name: paused_entrypoints
-- Entrypoints nobody may claim now.
-- params: none
SELECT name FROM {schema}.entrypoints WHERE paused;

-- name: flow_overview
-- Every entrypoint with a limit or a pause: its limits, running and waiting jobs.
-- params: none
SELECT e.name AS entrypoint, e.max_running, e.rate_per_s, e.paused,
    (SELECT count(*) FROM {schema}.jobs AS j
     WHERE j.entrypoint = e.name AND j.status = 'picked')::integer AS running,
    (SELECT count(*) FROM {schema}.jobs AS j
     WHERE j.entrypoint = e.name AND j.status = 'queued')::integer AS waiting
FROM {schema}.entrypoints AS e
WHERE e.paused OR e.max_running IS NOT NULL OR e.rate_per_s IS NOT NULL
ORDER BY e.name;

-- name: enqueue_windowed
-- Add one job whose dedupe_key is refused for a time window after enqueue, even once the job
-- has finished: the key row is taken (or taken over, once expired) and the job written in one
-- statement. Inserts nothing within the window.
-- params: $1 entrypoint, $2 payload, $3 priority, $4 execute_after (NULL = now),
--   $5 dedupe_key, $6 window in seconds
WITH key AS (
    INSERT INTO {schema}.dedupe_windows (dedupe_key, job_id, expires)
    VALUES ($5, nextval(pg_get_serial_sequence('{schema}.jobs', 'id')),
            now() + make_interval(secs => $6))
    ON CONFLICT (dedupe_key) DO UPDATE
        SET job_id = excluded.job_id, expires = excluded.expires
        WHERE {schema}.dedupe_windows.expires <= now()
    RETURNING job_id
)
INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, execute_after, dedupe_key,
    dedupe_scope)
SELECT job_id, $1, $2, $3, coalesce($4, now()), $5, 'window' FROM key
RETURNING id;

-- name: find_windowed
-- The job that holds a windowed dedupe_key.
-- params: $1 dedupe_key
SELECT job_id AS id FROM {schema}.dedupe_windows WHERE dedupe_key = $1 AND expires > now();

-- name: enqueue_many_deduped
-- Add many jobs with reserved ids and dedupe keys; rows whose key is taken (by a live job, or
-- by an earlier row of the same batch) are skipped. Returns the ids inserted.
-- params: $1 ids bigint[], $2 entrypoints text[], $3 payloads bytea[], $4 priorities int[],
--   $5 execute_after timestamptz[] (NULL = now), $6 dedupe keys text[], $7 scope
INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, execute_after, dedupe_key,
    dedupe_scope)
SELECT id, e, p, pr, coalesce(ea, now()), k, $7
FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::integer[], $5::timestamptz[],
            $6::text[]) AS t(id, e, p, pr, ea, k)
ORDER BY id
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND dedupe_scope <> 'window'
    AND (status <> 'picked' OR dedupe_scope = 'active') DO NOTHING
RETURNING id;

-- name: find_dedupe_many
-- The live jobs holding any of these dedupe keys.
-- params: $1 keys text[]
SELECT dedupe_key, id FROM {schema}.jobs
WHERE dedupe_key = ANY($1::text[]) AND dedupe_scope <> 'window'
  AND (status <> 'picked' OR dedupe_scope = 'active');
