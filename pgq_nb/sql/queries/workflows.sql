-- Workflows: durable DAGs of jobs. Edges live in job_deps; a child waits as `blocked` (outside
-- the claim index) with a counter of parents that have not succeeded yet.

-- name: create_workflow
-- A new workflow run.
-- params: $1 name, $2 number of steps
INSERT INTO {schema}.workflows (name, steps) VALUES ($1, $2) RETURNING id, created;

-- name: insert_steps
-- Every step of a workflow in one statement: roots queued, the rest blocked on their parents.
-- params: $1 ids bigint[], $2 entrypoints text[], $3 payloads bytea[], $4 priorities int[],
--   $5 pending parent counts int[], $6 step names text[], $7 map positions int[] (NULL for
--   single steps), $8 workflow id
INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, status, pending_deps,
    workflow_id, step_name, step_index)
SELECT id, ep, p, pr, CASE WHEN deps = 0 THEN 'queued' ELSE 'blocked' END, deps, $8, sn, si
FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::integer[], $5::integer[],
            $6::text[], $7::integer[]) AS t(id, ep, p, pr, deps, sn, si);

-- name: insert_edges
-- Every edge of a workflow in one statement.
-- params: $1 parent ids bigint[], $2 child ids bigint[]
INSERT INTO {schema}.job_deps (parent_id, child_id)
SELECT * FROM unnest($1::bigint[], $2::bigint[]);

-- name: fail_descendants
-- A step failed for good (or was cancelled): every step downstream of it can never run. Move
-- them to history as upstream_failed and mark their runs failed. Returns the ids moved.
-- params: $1 failed step ids bigint[], $2 their workflow ids bigint[]
WITH RECURSIVE down(id) AS (
    SELECT child_id FROM {schema}.job_deps WHERE parent_id = ANY($1::bigint[])
    UNION
    SELECT d.child_id FROM {schema}.job_deps AS d JOIN down ON d.parent_id = down.id
), gone AS (
    DELETE FROM {schema}.jobs AS j
    USING (SELECT DISTINCT id FROM down) AS x
    WHERE j.id = x.id AND j.status IN ('blocked', 'queued')
    RETURNING j.*
), saved AS (
    INSERT INTO {schema}.history (id, entrypoint, payload, priority, status, attempts,
        dedupe_key, error, errors, worker_id, created, execute_after, started, finished,
        workflow_id, step_name, step_index, schedule_name, fire_time)
    SELECT id, entrypoint, payload, priority, 'upstream_failed', attempts, dedupe_key,
        'not run: a step it depends on failed or was cancelled', errors, worker_id, created,
        execute_after, started, now(), workflow_id, step_name, step_index, schedule_name,
        fire_time
    FROM gone
    RETURNING entrypoint, status
), counted AS (
    INSERT INTO {schema}.finished_counts (entrypoint, status, shard, n)
    SELECT entrypoint, status, 0::smallint, count(*) FROM saved GROUP BY entrypoint, status
    ON CONFLICT (entrypoint, status, shard)
        DO UPDATE SET n = {schema}.finished_counts.n + excluded.n
), marked AS (
    UPDATE {schema}.workflows SET status = 'failed'
    WHERE id = ANY($2::bigint[]) AND status = 'running'
)
SELECT id FROM gone;

-- name: lock_workflows
-- Serialise the settling of these runs between workers: whoever locks second sees the other's
-- finished steps (each later statement takes a fresh snapshot).
-- params: $1 workflow ids bigint[]
SELECT id FROM {schema}.workflows WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE;

-- name: settle_workflows
-- Runs with no step left in `jobs` are over: succeeded unless already failed or cancelled.
-- params: $1 workflow ids bigint[]
UPDATE {schema}.workflows AS w
SET status = CASE WHEN w.status = 'running' THEN 'succeeded' ELSE w.status END,
    finished = now()
WHERE w.id = ANY($1::bigint[]) AND w.finished IS NULL
  AND NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.workflow_id = w.id)
RETURNING w.id, w.status;

-- name: parent_results
-- The results of the parents of the given steps, for Job.parent_results().
-- params: $1 child ids bigint[]
SELECT d.child_id, h.step_name, h.step_index, h.entrypoint, h.result
FROM {schema}.job_deps AS d
JOIN {schema}.history AS h ON h.id = d.parent_id
WHERE d.child_id = ANY($1::bigint[])
ORDER BY d.child_id, h.step_name, h.step_index NULLS FIRST, h.id;

-- name: get_workflow
-- One workflow run.
-- params: $1 id
SELECT id, name, status, steps, created, finished FROM {schema}.workflows WHERE id = $1;

-- name: workflow_counts
-- Steps of one run per status, live and finished.
-- params: $1 workflow id
SELECT status, count(*)::integer AS n FROM {schema}.jobs WHERE workflow_id = $1 GROUP BY status
UNION ALL
SELECT status, count(*)::integer FROM {schema}.history WHERE workflow_id = $1 GROUP BY status;

-- name: workflow_steps
-- Every step of one run, live or finished, in submission order.
-- params: $1 workflow id
SELECT id, step_name, step_index, entrypoint, status, attempts, created, started,
    NULL::timestamptz AS finished, last_error AS error, NULL::jsonb AS result
FROM {schema}.jobs WHERE workflow_id = $1
UNION ALL
SELECT id, step_name, step_index, entrypoint, status, attempts, created, started, finished,
    error, result
FROM {schema}.history WHERE workflow_id = $1
ORDER BY id;

-- name: workflow_results
-- Results of the succeeded steps of one run, in submission order.
-- params: $1 workflow id
SELECT step_name, step_index, result FROM {schema}.history
WHERE workflow_id = $1 AND status = 'succeeded'
ORDER BY step_name, step_index NULLS FIRST, id;

-- name: workflow_live_steps
-- The steps of a run still in `jobs`, by status (for cancel).
-- params: $1 workflow id
SELECT id, status FROM {schema}.jobs WHERE workflow_id = $1;

-- name: mark_workflow
-- Set a run's status (cancel, retry).
-- params: $1 workflow id, $2 status, $3 finished (NULL = still running)
UPDATE {schema}.workflows SET status = $2, finished = $3 WHERE id = $1;

-- name: retry_workflow_steps
-- Put a run's failed, cancelled and upstream_failed steps back: each waits again for its
-- parents that have not succeeded (pending_deps recomputed) and starts with fresh attempts.
-- params: $1 workflow id
WITH moved AS (
    DELETE FROM {schema}.history
    WHERE workflow_id = $1 AND status IN ('failed', 'cancelled', 'upstream_failed')
    RETURNING *
), pending AS (
    SELECT m.id, count(d.parent_id)::integer AS n
    FROM moved AS m
    LEFT JOIN {schema}.job_deps AS d ON d.child_id = m.id
    LEFT JOIN {schema}.history AS ok ON ok.id = d.parent_id AND ok.status = 'succeeded'
    WHERE d.parent_id IS NOT NULL AND ok.id IS NULL
    GROUP BY m.id
), requeued AS (
    INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, status, attempts, dedupe_key,
        created, last_error, errors, pending_deps, workflow_id, step_name, step_index)
    SELECT m.id, m.entrypoint, m.payload, m.priority,
        CASE WHEN coalesce(p.n, 0) = 0 THEN 'queued' ELSE 'blocked' END, 0, m.dedupe_key,
        m.created, m.error, m.errors, coalesce(p.n, 0), m.workflow_id, m.step_name,
        m.step_index
    FROM moved AS m LEFT JOIN pending AS p ON p.id = m.id
    RETURNING id
), uncounted AS (
    INSERT INTO {schema}.finished_counts (entrypoint, status, shard, n)
    SELECT entrypoint, status, 0::smallint, -count(*) FROM moved GROUP BY entrypoint, status
    ON CONFLICT (entrypoint, status, shard)
        DO UPDATE SET n = {schema}.finished_counts.n + excluded.n
), reopened AS (
    UPDATE {schema}.workflows SET status = 'running', finished = NULL
    WHERE id = $1 AND EXISTS (SELECT 1 FROM moved)
)
SELECT count(*)::integer FROM requeued;

-- name: list_workflows
-- The newest runs with their steps counted per status (through the workflow_id indexes).
-- params: $1 limit, $2 name (NULL = any)
WITH runs AS (
    SELECT id, name, status, steps, created, finished FROM {schema}.workflows
    WHERE $2::text IS NULL OR name = $2
    ORDER BY id DESC
    LIMIT $1
), counts AS (
    SELECT workflow_id, status, count(*)::integer AS n FROM {schema}.jobs
    WHERE workflow_id IN (SELECT id FROM runs) GROUP BY workflow_id, status
    UNION ALL
    SELECT workflow_id, status, count(*)::integer FROM {schema}.history
    WHERE workflow_id IN (SELECT id FROM runs) GROUP BY workflow_id, status
)
SELECT r.id, r.name, r.status, r.steps, r.created, r.finished,
    coalesce(jsonb_object_agg(c.status, c.n) FILTER (WHERE c.status IS NOT NULL), '{}')
        AS counts
FROM runs AS r LEFT JOIN counts AS c ON c.workflow_id = r.id
GROUP BY r.id, r.name, r.status, r.steps, r.created, r.finished
ORDER BY r.id DESC;
