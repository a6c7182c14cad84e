-- Workflow steps made at run time (wf.map_over; issue #21, item 1). A map_over is a row of
-- workflow_maps; its sources (workflow_map_sources) are the steps whose results it expands,
-- and the steps waiting on it are rows of workflow_map_deps (pgq_nb.workflow_maps explains
-- the counting). Same conventions as core.sql.

-- name: insert_workflow_map
-- One map_over node of a run being submitted. Returns its id.
-- params: $1 workflow id, $2 step name, $3 entrypoint, $4 priority, $5 tags text[] (NULL:
--   none), $6 meta as JSON text (NULL: none), $7 parent map id (NULL: a static parent)
INSERT INTO {schema}.workflow_maps (workflow_id, step_name, entrypoint, priority, tags, meta,
    parent_map)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
RETURNING id;

-- name: insert_map_sources
-- The static sources of the map_overs of a run being submitted (the steps of their parent).
-- params: $1 source step ids bigint[], $2 map ids bigint[]
INSERT INTO {schema}.workflow_map_sources (source_id, map_id)
SELECT * FROM unnest($1::bigint[], $2::bigint[]);

-- name: insert_map_deps
-- The steps that wait on the map_overs of a run being submitted.
-- params: $1 map ids bigint[], $2 child step ids bigint[], $3 direct boolean[], $4 weights int[]
INSERT INTO {schema}.workflow_map_deps (map_id, child_id, direct, weight)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::boolean[], $4::integer[]);

-- name: expand_maps
-- Steps that just succeeded (finish_jobs, earlier in the same transaction, moved them to
-- history: only the ones this worker still held) that are sources of a map_over: one new step
-- per item of the source's result, queued, in the source's run, named as the map, at the
-- source's place then the item's (step_path). Each new step gets an edge to the map's direct
-- dependents and becomes a source of every map_over over this map; every step waiting on the
-- map (weight: through how many of its parents) is counted up by weight * (items - 1) under
-- its row lock, taken in id order (one that reaches 0 is queued; workers are woken), and the
-- run's step count grows. Steps of an entrypoint with per-key limits take their key from the
-- field its workers recorded (entrypoints.key_field). A result that is not a JSON array counts as no items (the worker
-- fails a source that returns anything else before it gets here). Returns the steps it
-- made in runs cancelled meanwhile (a source that finished anyway; the status is the locked
-- run row's, not the snapshot's: a cancel committed while this waited counts), which the
-- caller cancels (cancel_waiting) so that a retry of the run finds them with the rest.
-- params: $1 succeeded step ids bigint[], $2 their results as JSON text[] (NULL: not a list)
WITH done AS (
    SELECT * FROM unnest($1::bigint[], $2::text[]) AS d(id, result)
), src AS (
    SELECT s.source_id, s.map_id, m.workflow_id, m.step_name, m.entrypoint, m.priority,
        m.tags, m.meta, d.result,
        coalesce(h.step_path, CASE WHEN h.step_index IS NULL THEN '{}'::integer[]
                                   ELSE ARRAY[h.step_index] END) AS path
    FROM done AS d
    JOIN {schema}.workflow_map_sources AS s ON s.source_id = d.id
    JOIN {schema}.workflow_maps AS m ON m.id = s.map_id
    JOIN {schema}.history AS h ON h.id = d.id AND h.status = 'succeeded'
), items AS (
    SELECT src.source_id, src.map_id, src.workflow_id, src.step_name, src.entrypoint,
        src.priority, src.tags, src.meta, src.path, (e.n - 1)::integer AS i, e.item,
        nextval('{schema}.jobs_id_seq') AS new_id
    FROM src,
        json_array_elements(CASE WHEN src.result IS NOT NULL
                                  AND json_typeof(src.result::json) = 'array'
                                 THEN src.result::json ELSE '[]'::json END)
            WITH ORDINALITY AS e(item, n)
), inserted AS (
    INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, status, workflow_id,
        step_name, step_index, map_source, step_path, tags, meta, concurrency_key)
    SELECT new_id, items.entrypoint,
        CASE WHEN json_typeof(item) = 'null' THEN NULL ELSE convert_to(item::text, 'UTF8') END,
        priority, 'queued', workflow_id, step_name, i, source_id, path || i, tags, meta,
        -- per-key limits: the key field its workers recorded (a key function cannot run here;
        -- an item without the field runs without a key)
        CASE WHEN ep.max_per_key IS NOT NULL AND json_typeof(item) = 'object'
             THEN item ->> ep.key_field END
    FROM items
    LEFT JOIN {schema}.entrypoints AS ep ON ep.name = items.entrypoint
    ORDER BY new_id
    RETURNING id
), edges AS (
    INSERT INTO {schema}.job_deps (parent_id, child_id)
    SELECT i.new_id, d.child_id
    FROM items AS i JOIN {schema}.workflow_map_deps AS d ON d.map_id = i.map_id AND d.direct
), registered AS (
    INSERT INTO {schema}.workflow_map_sources (source_id, map_id)
    SELECT i.new_id, m.id
    FROM items AS i JOIN {schema}.workflow_maps AS m ON m.parent_map = i.map_id
), sizes AS (
    SELECT src.source_id, src.map_id, src.workflow_id, count(i.new_id)::integer AS n
    FROM src LEFT JOIN items AS i ON i.source_id = src.source_id AND i.map_id = src.map_id
    GROUP BY src.source_id, src.map_id, src.workflow_id
), deltas AS (
    SELECT d.child_id, sum(d.weight * (s.n - 1))::integer AS delta
    FROM sizes AS s JOIN {schema}.workflow_map_deps AS d ON d.map_id = s.map_id
    GROUP BY d.child_id
), locked AS (
    SELECT c.id FROM {schema}.jobs AS c
    WHERE c.id IN (SELECT child_id FROM deltas) AND c.status = 'blocked'
    ORDER BY c.id
    FOR UPDATE
), released AS (
    UPDATE {schema}.jobs AS c
    SET pending_deps = c.pending_deps + f.delta,
        status = CASE WHEN c.pending_deps + f.delta <= 0 THEN 'queued' ELSE c.status END,
        execute_after = CASE WHEN c.pending_deps + f.delta <= 0 THEN now()
                             ELSE c.execute_after END
    FROM deltas AS f, locked AS l
    WHERE c.id = f.child_id AND l.id = c.id AND c.status = 'blocked'
    RETURNING c.status
), woken AS (
    SELECT pg_notify('{channel}', '') FROM released WHERE status = 'queued' LIMIT 1
), runs AS (
    -- the run rows, locked (after the job rows: the global order): FOR UPDATE re-reads the
    -- newest version after waiting, so a cancel that committed meanwhile is seen here
    SELECT w.id, w.status FROM {schema}.workflows AS w
    WHERE w.id IN (SELECT workflow_id FROM sizes)
    ORDER BY w.id
    FOR UPDATE
), grown AS (
    UPDATE {schema}.workflows AS w
    SET steps = w.steps + g.n
    FROM (SELECT workflow_id, sum(n)::integer AS n FROM sizes GROUP BY workflow_id) AS g, runs
    WHERE w.id = g.workflow_id AND runs.id = w.id AND g.n > 0
)
-- (a plain SELECT in WITH runs only when read: read `woken` so the NOTIFY is sent)
SELECT (SELECT count(*) FROM woken)::integer AS woken,
    ARRAY(SELECT i.new_id FROM items AS i
          JOIN runs AS w ON w.id = i.workflow_id
          WHERE w.status = 'cancelled' ORDER BY i.new_id) AS cancelled;
