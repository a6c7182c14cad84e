-- Migration 4: the dtypes of the columns a q.enqueue_df batch was made from (issue #16, item 8),
-- so that q.results() in any kernel gives the payload columns back with them. Jobs are
-- unchanged: a batch's row names its jobs by id ranges.

-- One row per q.enqueue_df call (or wf.map over a DataFrame): the entrypoint, the ids it drew
-- (as ranges: one range unless a concurrent call interleaved) and, per payload column, a small
-- JSON description of its dtype (pgq_nb.notebook.dtypes). Read by q.results() for the ids it
-- returns; rows whose every id is below the oldest job left are deleted by q.purge_history().
CREATE TABLE {schema}.payload_dtypes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entrypoint text NOT NULL,
    job_ids int8multirange NOT NULL,
    dtypes jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payload_dtypes_ids_idx ON {schema}.payload_dtypes (entrypoint, upper(job_ids));
