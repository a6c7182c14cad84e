-- Migration 1: the first schema (version 1). Never edit a released migration; add the
-- next number instead, and change schema.sql to match.

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

-- Every entrypoint some Queue has registered a handler for, so that a notebook that only
-- enqueues can check names against the handlers its workers register.
CREATE TABLE {schema}.entrypoints (
    name text PRIMARY KEY,
    registered timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);

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
    last_error text
);

-- Exactly the claim query's shape: only queued rows, in claim order.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (priority DESC, id) WHERE status = 'queued';
-- Jobs a worker holds, for heartbeat reclaim and graceful shutdown.
CREATE INDEX jobs_picked_idx ON {schema}.jobs (worker_id) WHERE status = 'picked';
-- At most one queued or running job per dedupe_key.
CREATE UNIQUE INDEX jobs_dedupe_key_idx ON {schema}.jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL;

-- The hot table churns: vacuum it early and often so claims never walk dead tuples.
ALTER TABLE {schema}.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    fillfactor = 90
);

-- Every finished job, exactly once.
CREATE TABLE {schema}.history (
    id bigint PRIMARY KEY,
    entrypoint text NOT NULL,
    payload bytea,
    priority integer NOT NULL,
    status text NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled', 'upstream_failed')),
    attempts integer NOT NULL,
    dedupe_key text,
    result jsonb,
    error text,
    traceback text,
    worker_id bigint,
    created timestamptz NOT NULL,
    started timestamptz,
    finished timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX history_finished_idx ON {schema}.history (finished);
CREATE INDEX history_entrypoint_finished_idx ON {schema}.history (entrypoint, finished);

-- Wake listening workers once per statement that adds jobs (never once per row).
CREATE FUNCTION {schema}.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify AFTER INSERT ON {schema}.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_jobs();
