-- Notebooks as jobs (pgq_nb.nbjobs): stored contents, and each run's executed notebook.

-- name: store_notebook
-- Keep a notebook's content once per sha256 (a second enqueue of the same content writes
-- nothing).
-- params: $1 sha256 text, $2 path text, $3 content text
INSERT INTO {schema}.notebooks (sha256, path, content) VALUES ($1, $2, $3)
ON CONFLICT (sha256) DO NOTHING;

-- name: notebook_content
-- The stored content of a notebook, by sha256 (NULL: not stored).
-- params: $1 sha256 text
SELECT content FROM {schema}.notebooks WHERE sha256 = $1;

-- name: save_notebook_output
-- Record one attempt of a notebook job (the last attempt wins).
-- params: $1 job_id, $2 sha256, $3 path, $4 name, $5 attempt, $6 ok, $7 error,
--   $8 parameters (JSON text), $9 recorded (JSON text), $10 cells, $11 cells_run,
--   $12 started timestamptz, $13 duration_s, $14 executed ipynb text, $15 html text
INSERT INTO {schema}.notebook_outputs (job_id, sha256, path, name, attempt, ok, error,
    parameters, recorded, cells, cells_run, started, duration_s, executed, html)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, $11, $12, $13,
    $14, $15)
ON CONFLICT (job_id) DO UPDATE SET sha256 = excluded.sha256, path = excluded.path,
    name = excluded.name, attempt = excluded.attempt, ok = excluded.ok, error = excluded.error,
    parameters = excluded.parameters, recorded = excluded.recorded, cells = excluded.cells,
    cells_run = excluded.cells_run, started = excluded.started,
    duration_s = excluded.duration_s, executed = excluded.executed, html = excluded.html;

-- name: notebook_output
-- One notebook job's last attempt, with where the job is now (live or finished).
-- params: $1 job_id bigint
SELECT o.job_id, o.path, o.name, o.attempt, o.ok, o.error, o.parameters::text AS parameters,
    o.recorded::text AS recorded, o.cells, o.cells_run, o.started, o.duration_s, o.executed,
    o.html, coalesce(h.status, j.status) AS status
FROM {schema}.notebook_outputs AS o
LEFT JOIN {schema}.history AS h ON h.id = o.job_id
LEFT JOIN {schema}.jobs AS j ON j.id = o.job_id
WHERE o.job_id = $1;

-- name: notebook_runs
-- The runs of notebooks (one row per job: its last attempt), newest first, optionally only
-- those whose path or name is $1; at most $2 rows. Large columns (executed, html) are left out;
-- of the recorded values, only those named in $3 are read out (when it is not NULL).
-- params: $1 path or name text (NULL: every notebook), $2 limit bigint (NULL: no limit),
--   $3 recorded names text[] (NULL: all)
SELECT o.job_id, o.path, o.name, coalesce(h.status, j.status) AS status, o.attempt, o.ok,
    o.error, o.parameters::text AS parameters,
    CASE WHEN $3::text[] IS NULL THEN o.recorded::text
        ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)::text
              FROM jsonb_each(o.recorded) AS e WHERE e.key = ANY ($3::text[]))
    END AS recorded, o.cells,
    o.cells_run, o.started, o.duration_s, coalesce(h.schedule_name, j.schedule_name)
    AS schedule_name, coalesce(h.fire_time, j.fire_time) AS fire_time
FROM {schema}.notebook_outputs AS o
LEFT JOIN {schema}.history AS h ON h.id = o.job_id
LEFT JOIN {schema}.jobs AS j ON j.id = o.job_id
WHERE $1::text IS NULL OR o.path = $1 OR o.name = $1
ORDER BY o.job_id DESC
LIMIT $2;

-- name: notebook_runs_count
-- How many runs q.notebook_runs($1) matches (when its default cap left some out).
-- params: $1 path or name text (NULL: every notebook)
SELECT count(*) FROM {schema}.notebook_outputs AS o
WHERE $1::text IS NULL OR o.path = $1 OR o.name = $1;

-- name: purge_notebook_outputs
-- Retention (q.purge_history): forget the outputs of jobs no longer in jobs or history.
-- params: none
DELETE FROM {schema}.notebook_outputs AS o
WHERE NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = o.job_id)
    AND NOT EXISTS (SELECT 1 FROM {schema}.history AS h WHERE h.id = o.job_id);
