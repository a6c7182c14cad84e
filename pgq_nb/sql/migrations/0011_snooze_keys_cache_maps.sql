-- Migration 11 (issue #21): snooze, per-key limits, cached steps and workflow steps made at
-- run time. New columns on jobs and history (carried by move_to_history and move_to_jobs,
-- replaced here: move_to_history takes cache_keys and cached_froms, so it is dropped and made
-- again), the entrypoints' max_per_key, and their indexes.
ALTER TABLE {schema}.jobs
    ADD COLUMN snoozes integer NOT NULL DEFAULT 0,
    ADD COLUMN concurrency_key text,
    ADD COLUMN use_cache boolean,
    ADD COLUMN map_source bigint,
    ADD COLUMN step_path integer[];
ALTER TABLE {schema}.history
    ADD COLUMN snoozes integer NOT NULL DEFAULT 0,
    ADD COLUMN concurrency_key text,
    ADD COLUMN cache_key text,
    ADD COLUMN cached_from bigint,
    ADD COLUMN map_source bigint,
    ADD COLUMN step_path integer[],
    ADD COLUMN use_cache boolean;
ALTER TABLE {schema}.entrypoints ADD COLUMN max_per_key integer;

CREATE INDEX jobs_key_running_idx ON {schema}.jobs (entrypoint, concurrency_key)
    WHERE status = 'picked' AND concurrency_key IS NOT NULL;
CREATE INDEX history_cache_idx ON {schema}.history (cache_key, finished)
    WHERE cache_key IS NOT NULL AND status = 'succeeded';

DROP FUNCTION {schema}.move_to_history(bigint[], text[], text[], bigint, text[], text[], text[],
    text[], timestamptz[], timestamptz[], smallint);

CREATE FUNCTION {schema}.move_to_history(ids bigint[], outcomes text[],
    from_statuses text[] DEFAULT NULL, holder bigint DEFAULT NULL, results text[] DEFAULT NULL,
    final_errors text[] DEFAULT NULL, tracebacks text[] DEFAULT NULL,
    attempt_errors text[] DEFAULT NULL, starts timestamptz[] DEFAULT NULL,
    ends timestamptz[] DEFAULT NULL, count_shard smallint DEFAULT 0,
    cache_keys text[] DEFAULT NULL, cached_froms bigint[] DEFAULT NULL)
RETURNS TABLE (id bigint, status text, workflow_id bigint) LANGUAGE sql AS $$
WITH moved AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest(ids, outcomes, results, final_errors, tracebacks, attempt_errors, starts, ends,
            cache_keys, cached_froms)
        AS d(job_id, outcome, result_json, final_error, trace, attempt_error, started_at,
             finished_at, cache_key_of, cached_from_of)
    WHERE j.id = d.job_id
      AND CASE WHEN from_statuses IS NULL THEN j.worker_id IS NOT DISTINCT FROM holder
               ELSE j.status = ANY(from_statuses) END
    RETURNING j.*, d.outcome, d.result_json, d.final_error, d.trace, d.attempt_error,
        d.started_at, coalesce(d.finished_at, now()) AS finished_at, d.cache_key_of,
        d.cached_from_of
), saved AS (
    INSERT INTO {schema}.history (id, entrypoint, payload, priority, status, attempts,
        dedupe_key, result, error, traceback, errors, worker_id, created, execute_after,
        started, finished, workflow_id, step_name, step_index, schedule_name, fire_time, tags,
        meta, trace_context, snoozes, concurrency_key, cache_key, cached_from, map_source,
        step_path, use_cache)
    SELECT id, entrypoint, payload, priority, outcome, attempts, dedupe_key,
        result_json::jsonb, final_error, trace,
        CASE WHEN attempt_error IS NULL THEN errors
             ELSE coalesce(errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                 'attempt', attempts, 'error', attempt_error, 'at', finished_at))
        END,
        worker_id, created, execute_after, coalesce(started_at, started), finished_at,
        workflow_id, step_name, step_index, schedule_name, fire_time, tags, meta, trace_context,
        snoozes, concurrency_key, cache_key_of, cached_from_of, map_source, step_path,
        use_cache
    FROM moved
    RETURNING entrypoint, status
), counted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), count_shard, 1)
    FROM saved
)
-- (a plain SELECT in WITH runs only when read: the join reads `counted`, one row)
SELECT moved.id, moved.outcome, moved.workflow_id FROM moved, counted
$$;

-- The move back from `history` to `jobs` (requeue_failed, retry_workflow_steps), written once:
-- the jobs of `ids` whose status is one of `from_statuses` leave history (and its counters) and
-- wait again under their ids, due now, with fresh attempts, their last error as last_error and
-- every earlier one still in `errors`. `pending` (lined up with `ids`; NULL: 0) is how many
-- parents each still waits for: more than 0 waits blocked. Returns the ids moved.
CREATE OR REPLACE FUNCTION {schema}.move_to_jobs(ids bigint[], from_statuses text[],
    pending integer[] DEFAULT NULL)
RETURNS TABLE (id bigint) LANGUAGE sql AS $$
WITH moved AS (
    DELETE FROM {schema}.history AS h
    USING unnest(ids, pending) AS p(job_id, parents)
    WHERE h.id = p.job_id AND h.status = ANY(from_statuses)
    RETURNING h.*, coalesce(p.parents, 0) AS parents
), requeued AS (
    INSERT INTO {schema}.jobs (id, entrypoint, payload, priority, status, execute_after,
        attempts, dedupe_key, created, last_error, errors, pending_deps, workflow_id, step_name,
        step_index, schedule_name, fire_time, tags, meta, trace_context, concurrency_key,
        map_source, step_path, use_cache)
    SELECT id, entrypoint, payload, priority,
        CASE WHEN parents = 0 THEN 'queued' ELSE 'blocked' END, now(), 0, dedupe_key, created,
        error, errors, parents, workflow_id, step_name, step_index, schedule_name, fire_time,
        tags, meta, trace_context, concurrency_key, map_source, step_path, use_cache
    FROM moved
    RETURNING id
), uncounted AS (
    SELECT {schema}.count_finished(array_agg(entrypoint), array_agg(status), 0::smallint, -1)
    FROM moved
)
-- (as in move_to_history: the join reads `uncounted`)
SELECT requeued.id FROM requeued, uncounted
$$;

-- Issue #21, item 1: workflow steps made at run time (wf.map_over). A map_over node of a run;
-- the steps whose results it expands (its sources: static steps at submit, steps of its parent
-- map as they are made); and the steps waiting on it: `direct` ones get an edge from each step
-- it makes, and every one is counted up by `weight` (how many of its own map_over parents are
-- this map or below it) per item minus one when a source expands (pgq_nb.workflow_maps).
CREATE TABLE {schema}.workflow_maps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint NOT NULL,
    step_name text NOT NULL,
    entrypoint text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    tags text[],
    meta jsonb,
    parent_map bigint
);
CREATE INDEX workflow_maps_parent_idx ON {schema}.workflow_maps (parent_map)
    WHERE parent_map IS NOT NULL;
CREATE INDEX workflow_maps_workflow_idx ON {schema}.workflow_maps (workflow_id);
CREATE TABLE {schema}.workflow_map_sources (
    source_id bigint NOT NULL,
    map_id bigint NOT NULL,
    PRIMARY KEY (source_id, map_id)
);
CREATE INDEX workflow_map_sources_map_idx ON {schema}.workflow_map_sources (map_id);
CREATE TABLE {schema}.workflow_map_deps (
    map_id bigint NOT NULL,
    child_id bigint NOT NULL,
    direct boolean NOT NULL,
    weight integer NOT NULL CHECK (weight > 0),
    PRIMARY KEY (map_id, child_id)
);
CREATE INDEX workflow_map_deps_child_idx ON {schema}.workflow_map_deps (child_id);

-- Issue #21, item 3 (per-key limits): the payload field an entrypoint's concurrency_key is read
-- from, recorded by its workers, so that a process without the handler keys its jobs too (NULL
-- with max_per_key set: a key computed by a function, only where the handler is registered);
-- and the queued jobs of each key in claim order, which the keyed claim reads key by key.
ALTER TABLE {schema}.entrypoints ADD COLUMN key_field text;
CREATE INDEX jobs_key_queued_idx ON {schema}.jobs (entrypoint, concurrency_key, priority DESC, id)
    WHERE status = 'queued' AND concurrency_key IS NOT NULL;
