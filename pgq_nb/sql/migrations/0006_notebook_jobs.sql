-- Migration 6: notebooks as jobs (issue #18, item 4). A notebook's content is stored when it is
-- enqueued, once per content (keyed by its sha256), so that any worker runs exactly the version
-- that was enqueued; each run keeps its executed notebook, its HTML and its recorded values.

-- One row per distinct notebook content (outputs stripped): the job's payload names it by hash.
CREATE TABLE {schema}.notebooks (
    sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    path text NOT NULL,
    content text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);

-- The last attempt of each notebook job: the executed notebook (ipynb JSON, partial when a cell
-- failed or the run timed out), its rendered HTML, what pgq_nb.record() recorded, and how it
-- ended. Large, so kept here by job id rather than in the job's jsonb result (which holds a small
-- summary). q.purge_history() deletes the rows of jobs that are no longer kept.
CREATE TABLE {schema}.notebook_outputs (
    job_id bigint PRIMARY KEY,
    sha256 text NOT NULL,
    path text NOT NULL,
    name text NOT NULL,
    attempt integer NOT NULL,
    ok boolean NOT NULL,
    error text,
    parameters jsonb NOT NULL,
    recorded jsonb NOT NULL,
    cells integer NOT NULL,
    cells_run integer NOT NULL,
    started timestamptz NOT NULL,
    duration_s double precision NOT NULL,
    executed text NOT NULL,
    html text
);

CREATE INDEX notebook_outputs_name_idx ON {schema}.notebook_outputs (name, job_id);
