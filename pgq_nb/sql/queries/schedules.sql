-- Named queries for cron schedules (used by pgq_nb/schedule/database.py and data.py). Fire
-- times are computed in Python (pgq_nb/schedule/cron.py) against the database clock; these
-- statements store them. A tick is
-- fired by writing its schedule_ticks row and its job in one statement, so a second attempt at
-- the same tick finds the primary key taken and writes nothing.

-- name: schedules_now
-- The database clock, shared by every worker: ticks are due by this clock, not the worker's.
-- params: none
SELECT now();

-- name: upsert_schedules
-- Create or update @q.schedule schedules (source 'code': entrypoint = name, no payload), in
-- name order (so concurrent registrations cannot deadlock). An existing row keeps enabled,
-- last_run and last_job_id; its next_run is replaced only when the expression or time zone
-- changed. A name taken by a q.add_schedule schedule is left alone and not returned.
-- Their tags and meta (the labels of their ticks' jobs) are replaced. Sends the 'schedules:'
-- NOTIFY (on commit), so sleeping schedulers look at the table again.
-- params: $1 names text[], $2 expressions text[], $3 time zones text[], $4 catch_up text[],
--   $5 next runs timestamptz[] (each schedule's first tick after now), $6 tags as JSON arrays
--   text[] (NULL: none), $7 meta as JSON text[] (NULL: none)
INSERT INTO {schema}.schedules AS s (name, entrypoint, expression, tz, catch_up, next_run,
    tags, meta)
SELECT name, name, expression, tz, catch_up, next_run,
    CASE WHEN t IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(t::jsonb)) END,
    m::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
            $7::text[])
    AS u(name, expression, tz, catch_up, next_run, t, m)
ORDER BY name
ON CONFLICT (name) DO UPDATE SET
    next_run = CASE
        WHEN (s.expression, s.tz) IS DISTINCT FROM (excluded.expression, excluded.tz)
        THEN excluded.next_run
        ELSE s.next_run
    END,
    expression = excluded.expression,
    tz = excluded.tz,
    catch_up = excluded.catch_up,
    tags = excluded.tags,
    meta = excluded.meta,
    last_registered = now()
WHERE s.source = 'code'
RETURNING name, pg_notify('{channel}', 'schedules:');

-- name: lock_due_schedules
-- The enabled schedules of the entrypoints $1 that are due, locked until this transaction ends.
-- A row that another worker holds is skipped rather than waited for: that worker is firing it.
-- params: $1 entrypoints text[], $2 now (NULL = the database clock)
SELECT name, expression, tz, catch_up, next_run, last_run,
    coalesce($2::timestamptz, now()) AS now
FROM {schema}.schedules
WHERE entrypoint = ANY($1::text[])
  AND enabled
  AND next_run <= coalesce($2::timestamptz, now())
ORDER BY name
FOR UPDATE SKIP LOCKED;

-- name: fire_ticks
-- Fire ticks and move their schedules on, in one statement.
-- Each tick first claims its (schedule_name, fire_time) row in schedule_ticks, naming a job id
-- drawn in advance from the jobs' identity. Only a tick whose row is new gets its job (the
-- schedule's entrypoint and payload); a tick fired before, by anyone, conflicts and
-- writes nothing (its drawn id is simply never used). Every schedule in $3 gets its new
-- next_run; last_run and last_job_id follow the newest tick this statement fired for it.
-- Returns the jobs created.
-- params: $1 tick schedule names text[], $2 tick fire times timestamptz[],
--   $3 schedule names text[], $4 their next runs timestamptz[]
WITH wanted AS (
    SELECT name, fire_time, nextval(pg_get_serial_sequence('{schema}.jobs', 'id')) AS job_id
    FROM unnest($1::text[], $2::timestamptz[]) AS w(name, fire_time)
), ticked AS (
    INSERT INTO {schema}.schedule_ticks (schedule_name, fire_time, job_id)
    SELECT name, fire_time, job_id FROM wanted
    ON CONFLICT (schedule_name, fire_time) DO NOTHING
    RETURNING schedule_name, fire_time, job_id
), queued AS (
    INSERT INTO {schema}.jobs (id, entrypoint, payload, schedule_name, fire_time, tags, meta)
    OVERRIDING SYSTEM VALUE
    SELECT t.job_id, s.entrypoint, s.payload, t.schedule_name, t.fire_time, s.tags, s.meta
    FROM ticked AS t JOIN {schema}.schedules AS s ON s.name = t.schedule_name
    RETURNING id, schedule_name, fire_time
), newest AS (
    SELECT DISTINCT ON (schedule_name) schedule_name, fire_time, id
    FROM queued
    ORDER BY schedule_name, fire_time DESC
), advanced AS (
    UPDATE {schema}.schedules AS s
    SET next_run = a.next_run,
        last_run = greatest(s.last_run, n.fire_time),
        last_job_id = coalesce(n.id, s.last_job_id)
    FROM unnest($3::text[], $4::timestamptz[]) AS a(name, next_run)
    LEFT JOIN newest AS n ON n.schedule_name = a.name
    WHERE s.name = a.name
)
SELECT id, schedule_name, fire_time FROM queued ORDER BY schedule_name, fire_time;

-- name: run_schedule_now
-- Queue a run of a schedule now, outside its cron ticks (a job of its entrypoint with its
-- payload): the job's fire_time is now, and no
-- schedule_ticks row is written, so the next tick still fires as planned. The schedule's
-- last_job_id points at the new job. Returns nothing for an unknown schedule.
-- params: $1 name
WITH known AS (
    SELECT name, entrypoint, payload, tags, meta FROM {schema}.schedules WHERE name = $1
), queued AS (
    INSERT INTO {schema}.jobs (entrypoint, payload, schedule_name, fire_time, tags, meta)
    SELECT entrypoint, payload, name, now(), tags, meta FROM known
    RETURNING id, schedule_name
), noted AS (
    UPDATE {schema}.schedules AS s SET last_job_id = q.id
    FROM queued AS q
    WHERE s.name = q.schedule_name
)
SELECT id FROM queued;

-- name: pause_schedule
-- Stop firing a schedule; jobs of it already queued stay queued. Returns nothing for an unknown
-- schedule.
-- params: $1 name
UPDATE {schema}.schedules SET enabled = false WHERE name = $1 RETURNING name;

-- name: lock_schedule
-- One schedule, locked until this transaction ends, with the database clock.
-- params: $1 name
SELECT name, entrypoint, payload, source, expression, tz, catch_up, enabled, next_run,
    tags, meta, now() AS now
FROM {schema}.schedules
WHERE name = $1
FOR UPDATE;

-- name: resume_schedule
-- Fire a paused schedule again, from $2 (its first tick after now). Sends the 'schedules:'
-- NOTIFY (on commit), so sleeping schedulers look at the table again.
-- params: $1 name, $2 next run
UPDATE {schema}.schedules SET enabled = true, next_run = $2 WHERE name = $1
RETURNING pg_notify('{channel}', 'schedules:');

-- name: schedule_names
-- Every stored schedule's name (for messages about unknown ones).
-- params: none
SELECT name FROM {schema}.schedules ORDER BY name;

-- name: list_schedules
-- Every schedule, with its newest job (live or finished): last_run is that job's fire time
-- and last_status its status, so the two always describe the same run, a tick's or one that
-- q.run_schedule_now queued (schedules.last_run is the newest cron tick, which catch-up reads;
-- it is shown only when the job is gone, purged). And how many live workers (a heartbeat
-- within $1 seconds) have registered its entrypoint's handler.
-- params: $1 heartbeat timeout in seconds (float)
SELECT s.name, s.entrypoint, s.source, s.expression, s.tz, s.catch_up, s.enabled, s.next_run,
    coalesce(last_job.fire_time, s.last_run) AS last_run,
    s.last_job_id, last_job.status AS last_status,
    (SELECT count(*) FROM {schema}.workers AS w
     WHERE s.entrypoint = ANY(w.entrypoints)
       AND w.heartbeat >= now() - make_interval(secs => $1))::integer AS live_workers,
    s.created, s.last_registered
FROM {schema}.schedules AS s
LEFT JOIN LATERAL (
    SELECT j.status, j.fire_time FROM {schema}.jobs AS j WHERE j.id = s.last_job_id
    UNION ALL
    SELECT h.status, h.fire_time FROM {schema}.history AS h WHERE h.id = s.last_job_id
    LIMIT 1
) AS last_job ON true
ORDER BY s.name;

-- name: next_schedule_run
-- The earliest next_run among the enabled schedules of the entrypoints $1 (NULL if none).
-- params: $1 entrypoints text[]
SELECT min(next_run) FROM {schema}.schedules WHERE enabled AND entrypoint = ANY($1::text[]);

-- name: schedule_for_tick
-- A schedule, and the latest tick of it fired before $2 (NULL if none).
-- params: $1 name, $2 fire time
SELECT s.name, s.expression, s.tz,
    (SELECT max(t.fire_time) FROM {schema}.schedule_ticks AS t
     WHERE t.schedule_name = s.name AND t.fire_time < $2) AS last_fire_time
FROM {schema}.schedules AS s
WHERE s.name = $1;

-- name: prune_schedule_ticks
-- Forget ticks fired more than $1 seconds ago (by the moment they were fired, so a backfilled
-- old tick is remembered as long as a tick fired on time), but keep each schedule's newest (a
-- handler's last_fire_time). Returns how many were deleted.
-- params: $1 age in seconds (float)
WITH gone AS (
    DELETE FROM {schema}.schedule_ticks AS t
    WHERE t.fired < now() - make_interval(secs => $1)
      AND t.fire_time < (SELECT max(n.fire_time) FROM {schema}.schedule_ticks AS n
                         WHERE n.schedule_name = t.schedule_name)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: add_schedule
-- Store a schedule added with q.add_schedule (source 'data'). Returns nothing when the name is
-- taken (by any schedule), writing nothing. Sends the 'schedules:' NOTIFY (on commit) so
-- that sleeping schedulers look at the table again.
-- params: $1 name, $2 entrypoint, $3 payload bytea, $4 expression, $5 time zone, $6 catch_up,
--   $7 next run (the first tick after now)
INSERT INTO {schema}.schedules (name, entrypoint, payload, source, expression, tz, catch_up,
    next_run)
VALUES ($1, $2, $3, 'data', $4, $5, $6, $7)
ON CONFLICT (name) DO NOTHING
RETURNING name, pg_notify('{channel}', 'schedules:');

-- name: update_schedule
-- Change a q.add_schedule schedule (locked by lock_schedule first). enabled, last_run and
-- last_job_id are kept. Sends the 'schedules:' NOTIFY (on commit).
-- params: $1 name, $2 entrypoint, $3 payload bytea, $4 expression, $5 time zone, $6 catch_up,
--   $7 next run
UPDATE {schema}.schedules
SET entrypoint = $2, payload = $3, expression = $4, tz = $5, catch_up = $6, next_run = $7
WHERE name = $1 AND source = 'data'
RETURNING pg_notify('{channel}', 'schedules:');

-- name: remove_schedule
-- Drop a q.add_schedule schedule: no worker fires it from the statement's commit on. Its jobs,
-- their history and its fired ticks stay. Returns nothing for an unknown name or a
-- @q.schedule one. Sends the 'schedules:' NOTIFY (on commit).
-- params: $1 name
DELETE FROM {schema}.schedules WHERE name = $1 AND source = 'data'
RETURNING name, pg_notify('{channel}', 'schedules:');

-- name: schedule_source
-- Who owns a schedule ('code' or 'data'), NULL if there is none of that name.
-- params: $1 name
SELECT source FROM {schema}.schedules WHERE name = $1;

-- name: get_schedule
-- One schedule (no lock), with the database clock.
-- params: $1 name
SELECT name, entrypoint, source, expression, tz, catch_up, enabled, next_run, now() AS now
FROM {schema}.schedules
WHERE name = $1;

-- name: backfill_ticks
-- Fire ticks of one schedule, oldest first, through the same schedule_ticks rows as the
-- scheduler: a tick fired before, by anyone (a worker, or a backfill running at the same time
-- in another process: its rows are waited for, then conflict), writes nothing. The job ids are
-- drawn in tick order, so the jobs are claimed in time order. The schedule row is held FOR
-- SHARE, so it cannot be removed half-way. Does not move the schedule's next_run or last_run.
-- Returns the ticks this statement fired, with their jobs.
-- params: $1 name, $2 fire times timestamptz[] (ascending)
WITH known AS (
    SELECT name, entrypoint, payload, tags, meta FROM {schema}.schedules WHERE name = $1 FOR SHARE
), wanted AS (
    SELECT k.name, w.fire_time, nextval(pg_get_serial_sequence('{schema}.jobs', 'id')) AS job_id
    FROM known AS k, unnest($2::timestamptz[]) WITH ORDINALITY AS w(fire_time, ord)
    ORDER BY w.ord
), ticked AS (
    INSERT INTO {schema}.schedule_ticks (schedule_name, fire_time, job_id)
    SELECT name, fire_time, job_id FROM wanted
    ON CONFLICT (schedule_name, fire_time) DO NOTHING
    RETURNING schedule_name, fire_time, job_id
)
INSERT INTO {schema}.jobs (id, entrypoint, payload, schedule_name, fire_time, tags, meta)
OVERRIDING SYSTEM VALUE
SELECT t.job_id, k.entrypoint, k.payload, t.schedule_name, t.fire_time, k.tags, k.meta
FROM ticked AS t, known AS k
ORDER BY t.job_id
RETURNING id, fire_time;

-- name: fired_ticks
-- The job each of the given ticks of a schedule fired (ticks not fired, or forgotten by
-- prune_schedule_ticks, are missing).
-- params: $1 name, $2 fire times timestamptz[]
SELECT fire_time, job_id FROM {schema}.schedule_ticks
WHERE schedule_name = $1 AND fire_time = ANY($2::timestamptz[]);
