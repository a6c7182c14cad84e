-- A workflow run's timeline (pgq_nb.workflow_timeline: run.timeline() and the web dashboard's
-- run page). Same conventions as core.sql. Only the run's own rows are read, through
-- jobs_workflow_idx and history_workflow_idx; no payloads, no results.

-- name: workflow_timeline_run
-- One workflow run by id, with the server's clock (the end of the bars still open).
-- params: $1 workflow id
SELECT id, name, status, steps, created, finished, now() AS now
FROM {schema}.workflows
WHERE id = $1;

-- name: workflow_timeline_steps
-- The first $2 steps of one run in submission order, live or finished, with their times
-- (created, execute_after: when the last attempt became due, started, finished). `pending`:
-- for a step that never started, how many of its parents had not succeeded (a live step's
-- counter; a finished one's counted over its edges), which tells a step cancelled while it
-- waited from one cancelled in the queue; 0 for the rest.
-- params: $1 workflow id, $2 limit
SELECT id, step_name, step_index, step_path, map_source, entrypoint, status, attempts, created,
    execute_after, started, finished, pending
FROM (
    SELECT id, step_name, step_index, step_path, map_source, entrypoint, status, attempts,
        created, execute_after, started, NULL::timestamptz AS finished, pending_deps AS pending
    FROM {schema}.jobs WHERE workflow_id = $1
    UNION ALL
    SELECT h.id, h.step_name, h.step_index, h.step_path, h.map_source, h.entrypoint, h.status,
        h.attempts, h.created, h.execute_after, h.started, h.finished,
        CASE WHEN h.started IS NULL AND h.status <> 'succeeded' THEN (
            SELECT count(*)::integer
            FROM {schema}.job_deps AS d
            WHERE d.child_id = h.id
              AND NOT EXISTS (SELECT 1 FROM {schema}.history AS p
                              WHERE p.id = d.parent_id AND p.status = 'succeeded'))
        ELSE 0 END
    FROM {schema}.history AS h WHERE h.workflow_id = $1
) AS steps
ORDER BY id
LIMIT $2;
