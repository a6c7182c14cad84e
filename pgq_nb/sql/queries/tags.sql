-- Named queries of tags and metadata (issue #20, item 2; pgq_nb.labels, pgq_nb.notebook.tagged):
-- labelling jobs, and the views filtered by tag and meta. A filter is `tags @> $t` (every tag
-- of $t) and `meta @> $m` (containment), served on history by the partial GIN indexes
-- history_tags_idx and history_meta_idx (the live table is small and has none: a filter on it
-- reads it whole). The `$t IS NULL OR ...` arms fold away
-- because these statements are prepared afresh for each call (a custom plan, with the values
-- known: see pgq_nb.notebook.tagged), so the planner sees the bare containment and can use
-- the index.

-- name: label_jobs
-- Write the tags and meta of jobs just added (same transaction, before anyone can claim them).
-- params: $1 ids bigint[], $2 tags as JSON arrays text[] (NULL: none), $3 meta as JSON
--   text[] (NULL: none)
UPDATE {schema}.jobs AS j
SET tags = CASE WHEN l.t IS NULL THEN NULL
                ELSE ARRAY(SELECT jsonb_array_elements_text(l.t::jsonb)) END,
    meta = l.m::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS l(id, t, m)
WHERE j.id = l.id;

-- name: label_schedule
-- Set the labels a q.add_schedule schedule gives its ticks' jobs (same transaction as its
-- add or update).
-- params: $1 name, $2 tags text[] (NULL: none), $3 meta as JSON text (NULL: none)
UPDATE {schema}.schedules SET tags = $2::text[], meta = $3::text::jsonb WHERE name = $1;

-- name: live_jobs_tagged
-- live_jobs of the jobs carrying every tag of $5 and containing $6.
-- params: $1 status (NULL = all), $2 entrypoint (NULL = all), $3 limit,
--   $4 payload preview in bytes (NULL = whole payloads), $5 tags text[] (NULL = any),
--   $6 meta jsonb (NULL = any)
SELECT id AS job_id, entrypoint, status, priority, attempts, created, execute_after, started,
    worker_id, dedupe_key, last_error, workflow_id, step_name, schedule_name, snoozes,
    CASE WHEN $4::integer IS NULL OR octet_length(payload) <= $4 THEN payload
         ELSE substring(payload FROM 1 FOR $4) END AS payload,
    octet_length(payload) AS payload_bytes
FROM {schema}.jobs
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR entrypoint = $2)
  AND ($5::text[] IS NULL OR tags @> $5::text[]) AND ($6::jsonb IS NULL OR meta @> $6::jsonb)
ORDER BY id
LIMIT $3;

-- name: history_tagged
-- recent_history (or recent_history_of) of the jobs carrying every tag of $6 and containing $7.
-- params: $1 finished since (NULL = ever), $2 finished before (NULL = now and after),
--   $3 status (NULL = all), $4 limit (NULL = all), $5 entrypoint (NULL = all),
--   $6 tags text[] (NULL = any), $7 meta jsonb (NULL = any)
SELECT id AS job_id, entrypoint, status, attempts, priority, created, execute_after, started,
    finished,
    extract(epoch FROM started - greatest(created, execute_after))::float8 AS queue_wait_s,
    extract(epoch FROM finished - started)::float8 AS run_s,
    error, worker_id, dedupe_key, workflow_id, step_name, schedule_name, snoozes, cached_from
FROM {schema}.history
WHERE ($1::timestamptz IS NULL OR finished >= $1::timestamptz)
  AND ($2::timestamptz IS NULL OR finished < $2::timestamptz)
  AND ($3::text IS NULL OR status = $3) AND ($5::text IS NULL OR entrypoint = $5)
  AND ($6::text[] IS NULL OR tags @> $6::text[]) AND ($7::jsonb IS NULL OR meta @> $7::jsonb)
ORDER BY finished DESC
LIMIT $4;

-- name: failed_tagged
-- failed_view (or failed_view_of) of the jobs carrying every tag of $4 and containing $5.
-- params: $1 limit, $2 entrypoint (NULL = all), $3 payload preview in bytes (NULL = whole
--   payloads), $4 tags text[] (NULL = any), $5 meta jsonb (NULL = any)
SELECT id AS job_id, entrypoint, attempts, error, errors, traceback, created, started,
    finished,
    CASE WHEN $3::integer IS NULL OR octet_length(payload) <= $3 THEN payload
         ELSE substring(payload FROM 1 FOR $3) END AS payload,
    octet_length(payload) AS payload_bytes
FROM {schema}.history
WHERE status = 'failed' AND ($2::text IS NULL OR entrypoint = $2)
  AND ($4::text[] IS NULL OR tags @> $4::text[]) AND ($5::jsonb IS NULL OR meta @> $5::jsonb)
ORDER BY finished DESC
LIMIT $1;

-- name: results_tagged
-- succeeded_results (or succeeded_results_of) of the jobs carrying every tag of $3 and
-- containing $4, in id order.
-- params: $1 entrypoint, $2 ids bigint[] (NULL = all), $3 tags text[] (NULL = any),
--   $4 meta jsonb (NULL = any)
SELECT id AS job_id, payload, result, cached_from, cache_key IS NOT NULL AS keyed
FROM {schema}.history
WHERE entrypoint = $1 AND status = 'succeeded'
  AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
  AND ($3::text[] IS NULL OR tags @> $3::text[]) AND ($4::jsonb IS NULL OR meta @> $4::jsonb)
ORDER BY id;

-- name: job_counts_tagged
-- job_counts of the live jobs carrying every tag of $1 and containing $2.
-- params: $1 tags text[] (NULL = any), $2 meta jsonb (NULL = any)
SELECT entrypoint, status, count(*) AS n
FROM {schema}.jobs
WHERE ($1::text[] IS NULL OR tags @> $1::text[]) AND ($2::jsonb IS NULL OR meta @> $2::jsonb)
GROUP BY entrypoint, status;

-- name: finished_tagged
-- finished_between of the jobs carrying every tag of $3 and containing $4 (the counters have
-- no labels: this counts the matching rows of history, through the GIN indexes), with the
-- span in seconds from the first of them (or $1) to $2 (or now).
-- params: $1 finished since (NULL = ever), $2 finished before (NULL = now and after),
--   $3 tags text[] (NULL = any), $4 meta jsonb (NULL = any)
WITH matched AS (
    SELECT entrypoint, status, started, finished
    FROM {schema}.history
    WHERE ($1::timestamptz IS NULL OR finished >= $1::timestamptz)
      AND ($2::timestamptz IS NULL OR finished < $2::timestamptz)
      AND ($3::text[] IS NULL OR tags @> $3::text[]) AND ($4::jsonb IS NULL OR meta @> $4::jsonb)
)
SELECT entrypoint, status, count(*) AS n,
    coalesce(sum(extract(epoch FROM finished - started)), 0)::float8 AS run_s,
    count(started) AS timed,
    greatest(extract(epoch FROM coalesce($2::timestamptz, now())
        - coalesce($1::timestamptz, (SELECT min(finished) FROM matched))), 1)::float8 AS span_s
FROM matched
GROUP BY entrypoint, status;

-- name: failed_jobs_tagged
-- failed_jobs (q.failed_jobs, `pgq-nb failed`) of the jobs carrying every tag of $3 and
-- containing $4, newest first.
-- params: $1 entrypoint (NULL = all), $2 limit, $3 tags text[] (NULL = any),
--   $4 meta jsonb (NULL = any)
SELECT id, entrypoint, payload, priority, status, attempts, dedupe_key, result,
    error, traceback, errors, worker_id, created, execute_after, started, finished,
    workflow_id, step_name, schedule_name, fire_time
FROM {schema}.history
WHERE status = 'failed' AND ($1::text IS NULL OR entrypoint = $1)
  AND ($3::text[] IS NULL OR tags @> $3::text[]) AND ($4::jsonb IS NULL OR meta @> $4::jsonb)
ORDER BY finished DESC
LIMIT $2;
