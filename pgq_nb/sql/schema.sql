-- The whole pgq_nb schema at its latest version. `{schema}` is replaced by the validated,
-- quoted schema name before this text reaches Postgres. A fresh install runs this file; an
-- existing install runs migrations/NNNN_*.sql instead, and tests/test_schema_migrations.py
-- proves both paths end in the same catalog.

CREATE SCHEMA IF NOT EXISTS {schema};

-- One row: the schema version this database is at (the number of the newest migration),
-- written by the installer.
CREATE TABLE {schema}.schema_version (
    version integer NOT NULL,
    installed timestamptz NOT NULL DEFAULT now(),
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one)
);

-- Worker processes, so that a job held by a dead worker can be found (stale heartbeat).
CREATE TABLE {schema}.workers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    entrypoints text[] NOT NULL DEFAULT '{}',
    concurrency integer NOT NULL,
    started timestamptz NOT NULL DEFAULT now(),
    heartbeat timestamptz NOT NULL DEFAULT now()
);

-- Every entrypoint some Queue has registered a handler for, with the settings that must hold
-- across workers: a notebook that only enqueues checks names here, and the reclaim of a
-- crashed worker's jobs reads max_attempts here.
CREATE TABLE {schema}.entrypoints (
    name text PRIMARY KEY,
    max_attempts integer NOT NULL DEFAULT 1,
    registered timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);

-- Durable workflows (DAGs of jobs).
CREATE TABLE {schema}.workflows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    steps integer NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    finished timestamptz
);

CREATE INDEX workflows_created_idx ON {schema}.workflows (created);

-- The live, claimable set only. A finished job leaves this table for `history`, so it stays
-- small however long history grows.
CREATE TABLE {schema}.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entrypoint text NOT NULL,
    payload bytea,
    priority integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'blocked', 'picked')),
    execute_after timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    dedupe_key text,
    worker_id bigint,
    created timestamptz NOT NULL DEFAULT now(),
    started timestamptz,
    -- the latest failure, and every earlier one as [{attempt, error, at}, ...]
    last_error text,
    errors jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    -- workflow step: its run, name, position in a map, and parents not yet succeeded
    workflow_id bigint,
    step_name text,
    step_index integer,
    pending_deps integer NOT NULL DEFAULT 0,
    -- scheduled tick: the schedule and the tick it runs
    schedule_name text,
    fire_time timestamptz
);

-- Exactly the claim query's shape: only queued rows, in claim order.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (priority DESC, id) WHERE status = 'queued';
-- Jobs a worker holds, for heartbeat reclaim and graceful shutdown.
CREATE INDEX jobs_picked_idx ON {schema}.jobs (worker_id) WHERE status = 'picked';
-- At most one queued or running job per dedupe_key.
CREATE UNIQUE INDEX jobs_dedupe_key_idx ON {schema}.jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_workflow_idx ON {schema}.jobs (workflow_id) WHERE workflow_id IS NOT NULL;

-- The hot table churns: vacuum it early and often so claims never walk dead tuples.
ALTER TABLE {schema}.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    fillfactor = 90
);

-- Workflow edges: child runs once every parent has succeeded.
CREATE TABLE {schema}.job_deps (
    parent_id bigint NOT NULL,
    child_id bigint NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);

CREATE INDEX job_deps_child_idx ON {schema}.job_deps (child_id);

-- Every finished job, exactly once.
CREATE TABLE {schema}.history (
    id bigint PRIMARY KEY,
    entrypoint text NOT NULL,
    payload bytea,
    priority integer NOT NULL,
    status text NOT NULL
        CHECK (status IN ('succeeded', 'failed', 'cancelled', 'upstream_failed')),
    attempts integer NOT NULL,
    dedupe_key text,
    result jsonb,
    error text,
    traceback text,
    errors jsonb,
    worker_id bigint,
    created timestamptz NOT NULL,
    execute_after timestamptz,
    started timestamptz,
    finished timestamptz NOT NULL DEFAULT now(),
    workflow_id bigint,
    step_name text,
    step_index integer,
    schedule_name text,
    fire_time timestamptz
);

CREATE INDEX history_finished_idx ON {schema}.history (finished);
CREATE INDEX history_entrypoint_finished_idx ON {schema}.history (entrypoint, finished);
CREATE INDEX history_failed_idx ON {schema}.history (entrypoint, finished) WHERE status = 'failed';
CREATE INDEX history_workflow_idx ON {schema}.history (workflow_id)
    WHERE workflow_id IS NOT NULL;

-- Finished jobs per entrypoint and status, kept by the statements that finish jobs, so views
-- never count over history. Sharded by worker so concurrent completions do not queue on one row;
-- readers sum the shards.
CREATE TABLE {schema}.finished_counts (
    entrypoint text NOT NULL,
    status text NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (entrypoint, status, shard)
);

-- Cron schedules, stored so that any worker can fire them and views can list them.
CREATE TABLE {schema}.schedules (
    name text PRIMARY KEY,
    expression text NOT NULL,
    tz text NOT NULL,
    catch_up text NOT NULL CHECK (catch_up IN ('latest', 'all', 'skip')),
    enabled boolean NOT NULL DEFAULT true,
    next_run timestamptz NOT NULL,
    last_run timestamptz,
    last_job_id bigint,
    created timestamptz NOT NULL DEFAULT now(),
    last_registered timestamptz NOT NULL DEFAULT now()
);

-- One row per fired tick: the primary key makes a second fire of the same tick impossible.
CREATE TABLE {schema}.schedule_ticks (
    schedule_name text NOT NULL,
    fire_time timestamptz NOT NULL,
    job_id bigint NOT NULL,
    fired timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_name, fire_time)
);

-- Wake listening workers once per statement that adds jobs (never once per row).
CREATE FUNCTION {schema}.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify AFTER INSERT ON {schema}.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_jobs();
