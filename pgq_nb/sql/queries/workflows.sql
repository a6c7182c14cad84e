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
-- them to history as upstream_failed (move_to_history) and mark their runs failed. Downstream:
-- its children (job_deps), and the steps waiting on a map_over it is a source of
-- (workflow_map_sources, workflow_map_deps), and theirs. Returns the ids moved.
-- params: $1 failed step ids bigint[], $2 their workflow ids bigint[]
WITH RECURSIVE down(id) AS (
    SELECT x.child_id
    FROM unnest($1::bigint[]) AS f(id),
        LATERAL (SELECT d.child_id FROM {schema}.job_deps AS d WHERE d.parent_id = f.id
                 UNION ALL
                 SELECT w.child_id
                 FROM {schema}.workflow_map_sources AS s
                 JOIN {schema}.workflow_map_deps AS w ON w.map_id = s.map_id
                 WHERE s.source_id = f.id) AS x
    UNION
    SELECT x.child_id
    FROM down,
        LATERAL (SELECT d.child_id FROM {schema}.job_deps AS d WHERE d.parent_id = down.id
                 UNION ALL
                 SELECT w.child_id
                 FROM {schema}.workflow_map_sources AS s
                 JOIN {schema}.workflow_map_deps AS w ON w.map_id = s.map_id
                 WHERE s.source_id = down.id) AS x
), doomed AS (
    SELECT array_agg(id) AS ids, array_agg('upstream_failed'::text) AS outcomes,
        array_agg('not run: a step it depends on failed or was cancelled'::text) AS errors
    FROM (SELECT DISTINCT id FROM down) AS x
), gone AS (
    SELECT m.id
    FROM doomed AS d,
        {schema}.move_to_history(d.ids, d.outcomes, from_statuses => '{blocked,queued}',
            final_errors => d.errors) AS m
    WHERE d.ids IS NOT NULL
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
-- The results of the parents of the given steps, for Job.parent_results(): a map's in order
-- (step_path: a map_over's by source, then item), and a placeholder row for each map_over
-- the step depends on, so that one that made no steps still gives an empty list. Also one
-- `source` row for each given step that is a source of a map_over (its result must be a
-- list): the claim learns it in the same round trip.
-- params: $1 child ids bigint[]
SELECT d.child_id, h.step_name, h.step_index, h.entrypoint, h.result, h.step_path, h.id,
    false AS placeholder, false AS source
FROM {schema}.job_deps AS d
JOIN {schema}.history AS h ON h.id = d.parent_id
WHERE d.child_id = ANY($1::bigint[])
UNION ALL
SELECT w.child_id, m.step_name, NULL, m.entrypoint, NULL, NULL, NULL, true, false
FROM {schema}.workflow_map_deps AS w
JOIN {schema}.workflow_maps AS m ON m.id = w.map_id
WHERE w.child_id = ANY($1::bigint[]) AND w.direct
UNION ALL
SELECT x.id, NULL, NULL, NULL, NULL, NULL, NULL, false, true
FROM unnest($1::bigint[]) AS x(id)
WHERE EXISTS (SELECT FROM {schema}.workflow_map_sources AS s WHERE s.source_id = x.id)
ORDER BY child_id, step_name, placeholder DESC, step_path NULLS FIRST, step_index NULLS FIRST,
    id;

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
-- Every step of one run, live or finished, in submission order (a map_over's steps in the
-- order they were made, with their place in step_path).
-- params: $1 workflow id
SELECT id, step_name, step_index, step_path, entrypoint, status, attempts, created, started,
    NULL::timestamptz AS finished, last_error AS error, NULL::jsonb AS result
FROM {schema}.jobs WHERE workflow_id = $1
UNION ALL
SELECT id, step_name, step_index, step_path, entrypoint, status, attempts, created, started,
    finished, error, result
FROM {schema}.history WHERE workflow_id = $1
ORDER BY id;

-- name: workflow_results
-- Results of the succeeded steps of one run, in submission order, and a placeholder row for
-- each map_over done expanding (every source of it and of the maps above it succeeded), so
-- that one that made no steps still gives an empty list.
-- params: $1 workflow id
WITH RECURSIVE chain AS (
    SELECT m.id AS map_id, m.id AS up, m.parent_map
    FROM {schema}.workflow_maps AS m WHERE m.workflow_id = $1
    UNION ALL
    SELECT c.map_id, m.id, m.parent_map
    FROM chain AS c JOIN {schema}.workflow_maps AS m ON m.id = c.parent_map
)
SELECT step_name, step_index, result, step_path, id, false AS placeholder
FROM {schema}.history
WHERE workflow_id = $1 AND status = 'succeeded'
UNION ALL
SELECT m.step_name, NULL, NULL, NULL, NULL, true
FROM {schema}.workflow_maps AS m
WHERE m.workflow_id = $1
  AND NOT EXISTS (SELECT 1 FROM chain AS c
                  JOIN {schema}.workflow_map_sources AS s ON s.map_id = c.up
                  WHERE c.map_id = m.id
                    AND NOT EXISTS (SELECT 1 FROM {schema}.history AS ok
                                    WHERE ok.id = s.source_id AND ok.status = 'succeeded'))
ORDER BY step_name, placeholder DESC, step_path NULLS FIRST, step_index NULLS FIRST, id;

-- name: workflow_live_steps
-- The steps of a run still in `jobs`, by status (for cancel).
-- params: $1 workflow id
SELECT id, status FROM {schema}.jobs WHERE workflow_id = $1;

-- name: cancel_workflow
-- Mark a run cancelled, unless it is over (a run that finished stays as it ended: cancelling
-- it changes nothing). Takes the run row's lock: it waits for a completion holding it (a
-- map_over source expanding, a run settling).
-- params: $1 workflow id
UPDATE {schema}.workflows SET status = 'cancelled' WHERE id = $1 AND finished IS NULL;

-- name: retry_workflow_steps
-- Put a run's failed, cancelled and upstream_failed steps back: each waits again for its
-- parents that have not succeeded (pending_deps recomputed) and starts with fresh attempts
-- (move_to_jobs, in the schema). A step waiting on a map_over also waits, by its weight, for
-- every source of that map (and of the maps above it) that has not succeeded, hence not
-- expanded yet. Returns how many.
-- params: $1 workflow id
WITH steps AS (
    SELECT h.id,
        (SELECT count(*)::integer
         FROM {schema}.job_deps AS d
         WHERE d.child_id = h.id
           AND NOT EXISTS (SELECT 1 FROM {schema}.history AS ok
                           WHERE ok.id = d.parent_id AND ok.status = 'succeeded'))
        + (SELECT coalesce(sum(w.weight), 0)::integer
           FROM {schema}.workflow_map_deps AS w
           JOIN {schema}.workflow_map_sources AS s ON s.map_id = w.map_id
           WHERE w.child_id = h.id
             AND NOT EXISTS (SELECT 1 FROM {schema}.history AS ok
                             WHERE ok.id = s.source_id AND ok.status = 'succeeded')) AS pending
    FROM {schema}.history AS h
    WHERE h.workflow_id = $1 AND h.status IN ('failed', 'cancelled', 'upstream_failed')
), moved AS (
    SELECT m.id
    FROM (SELECT array_agg(id) AS ids, array_agg(pending) AS pending FROM steps) AS s,
        {schema}.move_to_jobs(s.ids, '{failed,cancelled,upstream_failed}', s.pending) AS m
    WHERE s.ids IS NOT NULL
), reopened AS (
    UPDATE {schema}.workflows SET status = 'running', finished = NULL
    WHERE id = $1 AND EXISTS (SELECT 1 FROM moved)
)
SELECT count(*)::integer FROM moved;

-- name: list_workflows
-- The newest runs with their steps counted per status (through the workflow_id indexes).
-- params: $1 limit (NULL = all), $2 name (NULL = any)
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

-- name: count_workflows
-- How many runs there are (of one name): what a capped q.workflows() left out.
-- params: $1 name (NULL = any)
SELECT count(*) FROM {schema}.workflows WHERE $1::text IS NULL OR name = $1;
