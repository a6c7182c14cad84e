-- Per-key limits (issue #21, item 3): at most max_per_key jobs of one concurrency_key of an
-- entrypoint run at once, across every worker. Running-per-key is never stored: it is counted
-- from picked rows (jobs_key_running_idx), so a job that finishes, is retried, snoozed or
-- returned, or whose worker died and was reclaimed, frees its key with no bookkeeping.

-- name: lock_keyed_claims
-- Serialise keyed claims of these entrypoints until the claim's transaction ends: one
-- transaction-level advisory lock each, taken in a fixed order (of the lock key) in one
-- statement, so two workers never wait for each other crosswise. The claim that follows is a
-- statement of its own, started once these are held: under READ COMMITTED its snapshot sees
-- every keyed claim committed before (a statement that waited for a lock would still read with
-- the snapshot of its start, and count the running jobs of a claim that committed meanwhile as
-- queued).
-- params: $1 entrypoints text[]
SELECT pg_advisory_xact_lock(l.k)
FROM (SELECT DISTINCT hashtextextended('pgq_nb keys {schema} ' || e, 0) AS k
      FROM unnest($1::text[]) AS e ORDER BY 1) AS l;

-- name: claim_keyed
-- Claim up to $2 due jobs of one entrypoint with max_per_key, as claim_limited does (its slots,
-- token bucket and pause hold too), taking no more jobs of one key than the key has room for:
-- max_per_key less its running (picked) jobs. First the entrypoint's first $5 due jobs in
-- claim order (`head`, a walk of jobs_claim_idx as claim_limited's), each key's in order up
-- to its room; jobs without a key (a function returned None, a cron tick, a job enqueued
-- before the key was declared) have no limit. Only when that head was full ($5 jobs) and still
-- gave fewer than $2 (full keys hold the front of the queue) are keys read one by one from
-- jobs_key_queued_idx (a loose index scan: one probe per key with queued jobs, in key order,
-- until $2 keys with room and a due job are found), each key's first jobs up to its room: a
-- key with a million queued jobs then costs one probe, and a full key never holds back the
-- others. The best of those, in claim order, are taken.
-- Callers hold lock_keyed_claims for the entrypoint (see there).
-- params: $1 entrypoint, $2 batch size, $3 worker id, $4 max_per_key (the worker's; the one
--   recorded with the entrypoint wins), $5 how many of the first jobs to look through
WITH RECURSIVE cap AS (
    SELECT coalesce((SELECT max_per_key FROM {schema}.entrypoints WHERE name = $1), $4) AS n
), running AS (
    SELECT j.concurrency_key AS k, count(*) AS n FROM {schema}.jobs AS j
    WHERE j.status = 'picked' AND j.entrypoint = $1 AND j.concurrency_key IS NOT NULL
    GROUP BY j.concurrency_key
), head AS (
    SELECT j.id, j.priority, j.concurrency_key AS k FROM {schema}.jobs AS j
    WHERE j.status = 'queued' AND j.entrypoint = $1 AND j.execute_after <= now()
    ORDER BY j.priority DESC, j.id
    LIMIT $5
), from_head AS (
    SELECT h.id, h.priority
    FROM (SELECT head.*, row_number() OVER (PARTITION BY k ORDER BY priority DESC, id) AS rn
          FROM head) AS h
    LEFT JOIN running AS r ON r.k = h.k
    WHERE h.k IS NULL OR h.rn <= (SELECT n FROM cap) - coalesce(r.n, 0)
), keys AS (
    -- found: the keys seen so far that have room and a due job; the walk stops at $2 of them
    -- (each gives at least one job), so its length is bounded by the full keys (no more than
    -- the jobs running), the keys with no due job, and the batch, never by every key queued
    (SELECT j.concurrency_key AS k, 0 AS found FROM {schema}.jobs AS j
     WHERE j.status = 'queued' AND j.entrypoint = $1 AND j.concurrency_key IS NOT NULL
       AND (SELECT count(*) FROM head) >= $5 AND (SELECT count(*) FROM from_head) < $2
     ORDER BY j.concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT j.concurrency_key FROM {schema}.jobs AS j
            WHERE j.status = 'queued' AND j.entrypoint = $1 AND j.concurrency_key IS NOT NULL
              AND j.concurrency_key > keys.k
            ORDER BY j.concurrency_key LIMIT 1),
        keys.found + CASE
            WHEN (SELECT n FROM cap) > coalesce((SELECT r.n FROM running AS r WHERE r.k = keys.k), 0)
                 AND EXISTS (SELECT 1 FROM {schema}.jobs AS j
                             WHERE j.status = 'queued' AND j.entrypoint = $1
                               AND j.concurrency_key = keys.k AND j.execute_after <= now())
            THEN 1 ELSE 0 END
    FROM keys WHERE keys.k IS NOT NULL AND keys.found < $2
), by_key AS (
    SELECT c.id, c.priority
    FROM keys
    LEFT JOIN running AS r ON r.k = keys.k
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority FROM {schema}.jobs AS j
        WHERE j.status = 'queued' AND j.entrypoint = $1 AND j.concurrency_key IS NOT NULL
          AND j.concurrency_key = keys.k AND j.execute_after <= now()
        ORDER BY j.priority DESC, j.id
        LIMIT greatest(0, (SELECT n FROM cap) - coalesce(r.n, 0))
    ) AS c
    WHERE keys.k IS NOT NULL
), bucket AS (
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
), chosen AS (
    -- (a key's jobs in the head are its first ones: the same rows by_key reads, or fewer)
    SELECT c.id FROM (SELECT * FROM from_head UNION SELECT * FROM by_key) AS c
    ORDER BY c.priority DESC, c.id
    LIMIT (SELECT n FROM allowance)
), next_jobs AS (
    SELECT j.id
    FROM {schema}.jobs AS j
    WHERE j.id IN (SELECT id FROM chosen) AND j.status = 'queued'
      AND NOT EXISTS (SELECT 1 FROM {schema}.entrypoints AS e WHERE e.name = $1 AND e.paused)
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

-- name: set_key_limit
-- Record an entrypoint's per-key limit (from its @q.entrypoint registration by a starting
-- worker): max_per_key (NULL: none) and the payload field its key is read from (NULL: none,
-- or a function's, which only a process with the handler can compute). Returns the
-- max_per_key recorded before.
-- params: $1 entrypoint, $2 max_per_key, $3 key field
WITH old AS (  -- (the statement's snapshot: the row before this UPDATE)
    SELECT max_per_key FROM {schema}.entrypoints WHERE name = $1
)
UPDATE {schema}.entrypoints SET max_per_key = $2, key_field = $3 WHERE name = $1
RETURNING (SELECT max_per_key FROM old) AS max_per_key;

-- name: set_job_keys
-- Give jobs just written (in the same transaction) their concurrency_key.
-- params: $1 ids bigint[], $2 keys text[]
UPDATE {schema}.jobs AS j SET concurrency_key = t.k
FROM unnest($1::bigint[], $2::text[]) AS t(id, k)
WHERE j.id = t.id;

-- name: entrypoint_keys
-- What every entrypoint's workers recorded of its per-key limit (a process that enqueues
-- jobs it has no handler for keys them from it).
-- params: none
SELECT name, max_per_key, key_field FROM {schema}.entrypoints;

-- name: busiest_keys
-- The keys with the most jobs running, then waiting (only jobs of keyed entrypoints have a
-- key); max_per_key as the entrypoint's workers recorded it (NULL: no worker has yet).
-- params: $1 how many
SELECT j.entrypoint, j.concurrency_key AS key, e.max_per_key,
    count(*) FILTER (WHERE j.status = 'picked')::integer AS running,
    count(*) FILTER (WHERE j.status = 'queued')::integer AS waiting
FROM {schema}.jobs AS j
LEFT JOIN {schema}.entrypoints AS e ON e.name = j.entrypoint
WHERE j.concurrency_key IS NOT NULL
GROUP BY j.entrypoint, j.concurrency_key, e.max_per_key
ORDER BY running DESC, waiting DESC, j.entrypoint, j.concurrency_key
LIMIT $1;
