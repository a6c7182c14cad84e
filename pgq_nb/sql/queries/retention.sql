-- Retention policies (issue #20, item 1): stored by q.retention(), applied by every worker in
-- the background (pgq_nb.retention), one worker at a time, in short transactions.

-- name: set_retention_policy
-- Write one entrypoint's policy ('' is the default policy), replacing what it had.
-- params: $1 entrypoint text, $2 succeeded interval, $3 failed interval, $4 cancelled interval,
--   $5 keep_last integer (NULL: none)
INSERT INTO {schema}.retention_policies (entrypoint, succeeded, failed, cancelled, keep_last)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (entrypoint) DO UPDATE SET succeeded = excluded.succeeded,
    failed = excluded.failed, cancelled = excluded.cancelled, keep_last = excluded.keep_last,
    updated = now();

-- name: drop_retention_policy
-- Forget one entrypoint's policy ('' the default one). Returns whether there was one.
-- params: $1 entrypoint text
DELETE FROM {schema}.retention_policies WHERE entrypoint = $1 RETURNING entrypoint;

-- name: retention_policies
-- Every stored policy, the default ('') first.
-- params: none
SELECT entrypoint, succeeded, failed, cancelled, keep_last, updated
FROM {schema}.retention_policies
ORDER BY entrypoint;

-- name: retention_targets
-- What there is to purge: the (entrypoint, status) pairs history holds, from the counters (one
-- row per shard, never a count over history).
-- params: none
SELECT entrypoint, status FROM {schema}.finished_counts
GROUP BY entrypoint, status
HAVING sum(n) > 0;

-- name: retention_try_lock
-- One worker at a time applies the policies: a transaction-level advisory lock, taken without
-- waiting (false: another worker holds it; this one skips its turn). Released at commit.
-- params: $1 lock key bigint
SELECT pg_try_advisory_xact_lock($1);

-- name: retention_purge
-- One batch of a policy: delete up to $5 jobs of entrypoint $1 with status $2 that finished
-- more than $3 ago (by the server's clock), oldest first (a range of
-- history_entrypoint_finished_idx), keeping the $4 newest of them whatever their age and every
-- job of a workflow run that has not succeeded (running: later steps read their parents'
-- results; failed or cancelled: run.retry() requeues steps that wait for them); and take them off finished_counts in the same statement
-- (count_finished, as purge_history does), so the counters always match history: in shard 16,
-- which no worker's completions use (they use 0-15), so none waits on this transaction's
-- counter rows. Rows another transaction holds are skipped (left for the next batch), so it
-- never waits on a row lock.
-- Returns how many were deleted.
-- params: $1 entrypoint text, $2 status text, $3 period interval, $4 keep_last integer (NULL:
--   none), $5 batch size
WITH kept AS (
    SELECT finished FROM {schema}.history
    WHERE entrypoint = $1 AND status = $2
    ORDER BY finished DESC
    OFFSET coalesce($4::integer, 1) - 1
    LIMIT 1
), edge AS (
    SELECT CASE WHEN $4::integer IS NULL THEN now() - $3::interval
        ELSE least(now() - $3::interval,
            coalesce((SELECT finished FROM kept), '-infinity'::timestamptz)) END AS cutoff
), doomed AS (
    SELECT h.id
    FROM {schema}.history AS h
    WHERE h.entrypoint = $1 AND h.finished < (SELECT cutoff FROM edge) AND h.status = $2
      AND NOT EXISTS (
          SELECT FROM {schema}.workflows AS w
          WHERE w.id = h.workflow_id AND w.status <> 'succeeded')
    ORDER BY h.finished
    LIMIT $5
    FOR UPDATE OF h SKIP LOCKED
), gone AS (
    DELETE FROM {schema}.history AS h
    USING doomed
    WHERE h.id = doomed.id
    RETURNING h.id, h.entrypoint, h.status
), unlinked AS (
    -- the edges to the purged steps (only a succeeded run's: no retry will count them)
    DELETE FROM {schema}.job_deps AS d USING gone WHERE d.child_id = gone.id
), uncounted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), 16::smallint, -1)
    FROM gone
)
-- (a plain SELECT in WITH runs only when read: the join reads `uncounted`, one row)
SELECT count(*) FROM gone, uncounted;

-- name: storage_tables
-- The size of pgq_nb's tables with their indexes and TOAST (pg_total_relation_size) and the
-- planner's row estimate (pg_class.reltuples, -1: never analyzed): no scan.
-- params: $1 schema name text
SELECT c.relname AS table_name, pg_total_relation_size(c.oid) AS bytes,
    c.reltuples::bigint AS estimated_rows
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r'
  AND c.relname IN ('jobs', 'history', 'payload_dtypes', 'notebook_outputs', 'notebooks',
      'workflows', 'job_deps', 'workflow_maps', 'workflow_map_sources', 'workflow_map_deps');

-- name: storage_history_sample
-- The row width of history per (entrypoint, status), from a sample of about $1 percent of its
-- pages (TABLESAMPLE SYSTEM: reads only those pages), for q.storage()'s estimate of bytes.
-- params: $1 percent of pages float8
SELECT entrypoint, status, count(*) AS rows, sum(pg_column_size(h.*))::bigint AS bytes
FROM {schema}.history AS h TABLESAMPLE SYSTEM ($1)
GROUP BY entrypoint, status;

-- name: storage_jobs_sample
-- As storage_history_sample, for jobs.
-- params: $1 percent of pages float8
SELECT entrypoint, status, count(*) AS rows, sum(pg_column_size(j.*))::bigint AS bytes
FROM {schema}.jobs AS j TABLESAMPLE SYSTEM ($1)
GROUP BY entrypoint, status;

-- name: storage_history_rows
-- Rows of history per (entrypoint, status): the counters (exact, no scan).
-- params: none
SELECT entrypoint, status, sum(n)::bigint AS rows FROM {schema}.finished_counts
GROUP BY entrypoint, status
HAVING sum(n) > 0;

-- name: storage_dtypes_rows
-- Rows of payload_dtypes per entrypoint (a small table: one row per enqueue_df call).
-- params: none
SELECT entrypoint, count(*) AS rows FROM {schema}.payload_dtypes GROUP BY entrypoint;

-- name: storage_jobs_rows
-- Rows of jobs per (entrypoint, status): a count of the live set (small next to history).
-- params: none
SELECT entrypoint, status, count(*) AS rows FROM {schema}.jobs GROUP BY entrypoint, status;

-- name: storage_notebook_rows
-- Rows of the notebook tables (one per notebook job run, one per notebook content).
-- params: none
SELECT (SELECT count(*) FROM {schema}.notebook_outputs) AS outputs,
    (SELECT count(*) FROM {schema}.notebooks) AS notebooks;

-- name: storage_workflow_rows
-- Rows of the workflow tables (runs, their edges and their map_overs), by table.
-- params: none
SELECT 'workflows' AS table_name, count(*) AS rows FROM {schema}.workflows
UNION ALL SELECT 'job_deps', count(*) FROM {schema}.job_deps
UNION ALL SELECT 'workflow_maps', count(*) FROM {schema}.workflow_maps
UNION ALL SELECT 'workflow_map_sources', count(*) FROM {schema}.workflow_map_sources
UNION ALL SELECT 'workflow_map_deps', count(*) FROM {schema}.workflow_map_deps;

-- name: purge_workflow_runs
-- Retention (q.purge_history and the policies), after the jobs: of the next $2 runs after run
-- id $1 (in id order), forget those no step of which is left in jobs or history (all purged:
-- only a succeeded run's steps are) with their map_overs and what those recorded
-- (workflow_maps, workflow_map_sources, workflow_map_deps); a step's edges (job_deps) went
-- with it. A run being submitted is invisible until its steps are, and a retried one has its
-- steps in one of the two tables, so neither is taken. Index probes only (jobs_workflow_idx,
-- history_workflow_idx, the map tables' map and run indexes).
-- Returns the last run id looked at (NULL: none left; call again with it until then).
-- params: $1 after this run id bigint, $2 how many runs to look at
WITH chunk AS (
    SELECT id FROM {schema}.workflows WHERE id > $1 ORDER BY id LIMIT $2
), empty AS (
    SELECT c.id FROM chunk AS c
    WHERE NOT EXISTS (SELECT FROM {schema}.jobs AS j WHERE j.workflow_id = c.id)
      AND NOT EXISTS (SELECT FROM {schema}.history AS h WHERE h.workflow_id = c.id)
), maps AS (
    SELECT m.id FROM {schema}.workflow_maps AS m WHERE m.workflow_id IN (SELECT id FROM empty)
), sources AS (
    DELETE FROM {schema}.workflow_map_sources AS s USING maps WHERE s.map_id = maps.id
), waiting AS (
    DELETE FROM {schema}.workflow_map_deps AS d USING maps WHERE d.map_id = maps.id
), nodes AS (
    DELETE FROM {schema}.workflow_maps AS m USING empty WHERE m.workflow_id = empty.id
), runs AS (
    DELETE FROM {schema}.workflows AS w USING empty WHERE w.id = empty.id
)
SELECT max(id) FROM chunk;
