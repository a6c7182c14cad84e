-- The dtypes of the DataFrames jobs were enqueued from (payload_dtypes), for q.results().

-- name: record_payload_dtypes
-- Record the dtypes of one q.enqueue_df batch: its ids as ranges [$2[i], $3[i]) (the runs of
-- the ids it drew) and the dtype description of its payload columns.
-- params: $1 entrypoint, $2 range starts bigint[], $3 range ends bigint[] (exclusive),
--   $4 dtypes as JSON text (text, so that a caller's connection needs no jsonb codec)
INSERT INTO {schema}.payload_dtypes (entrypoint, job_ids, dtypes)
SELECT $1, range_agg(int8range(s, e)), $4::text::jsonb
FROM unnest($2::bigint[], $3::bigint[]) AS r(s, e);

-- name: record_dtypes_of_ids
-- Record the dtypes of a wf.map over a DataFrame: its steps' ids (any order), as ranges.
-- params: $1 entrypoint, $2 ids bigint[], $3 dtypes as JSON text
INSERT INTO {schema}.payload_dtypes (entrypoint, job_ids, dtypes)
SELECT $1, range_agg(int8range(i, i + 1)), $3::text::jsonb
FROM unnest($2::bigint[]) AS i;

-- name: payload_dtypes_for
-- The batches of an entrypoint whose ids meet [$2, $3], each with its id ranges as two arrays
-- (starts, exclusive ends) and its dtypes (through payload_dtypes_ids_idx).
-- params: $1 entrypoint, $2 lowest id bigint, $3 highest id bigint
SELECT d.id, d.dtypes,
    ARRAY(SELECT lower(r) FROM unnest(d.job_ids) AS r) AS starts,
    ARRAY(SELECT upper(r) FROM unnest(d.job_ids) AS r) AS ends
FROM {schema}.payload_dtypes AS d
WHERE d.entrypoint = $1 AND upper(d.job_ids) > $2 AND lower(d.job_ids) <= $3;

-- name: purge_payload_dtypes
-- Retention (q.purge_history), the fast path: forget the batches whose every id is below the
-- lowest id left in jobs and history (ids only grow and a requeued job keeps its id, so none of
-- them can be asked for again). A batch not yet committed is invisible here and stays.
-- params: none
DELETE FROM {schema}.payload_dtypes
WHERE upper(job_ids) <= coalesce(
    least((SELECT min(id) FROM {schema}.jobs), (SELECT min(id) FROM {schema}.history)),
    9223372036854775807);

-- name: purge_unreferenced_dtypes
-- Retention (q.purge_history), the rest: of the next $2 batches after batch id $1 (in id order),
-- forget those none of whose ids is left in jobs or history, so that one long-waiting job (a
-- future execute_after, a paused entrypoint) does not keep every later batch. Each range of a
-- batch is looked up as an id range of the two primary keys (`id >= lower AND id < upper`: a
-- btree range probe; `id <@ multirange` would scan), so a statement costs at most 2 probes per
-- range of $2 batches and never scans history. A batch not yet committed is invisible and stays;
-- one committed has its jobs committed with it (one transaction).
-- Returns the last batch id looked at (NULL: none left; call again with it until then).
-- params: $1 after this batch id bigint, $2 how many batches to look at
WITH chunk AS (
    SELECT id, job_ids FROM {schema}.payload_dtypes WHERE id > $1 ORDER BY id LIMIT $2
), unused AS (
    SELECT c.id FROM chunk AS c
    WHERE NOT EXISTS (
        SELECT FROM unnest(c.job_ids) AS r
        WHERE EXISTS (
                SELECT FROM {schema}.jobs AS j WHERE j.id >= lower(r) AND j.id < upper(r))
            OR EXISTS (
                SELECT FROM {schema}.history AS h WHERE h.id >= lower(r) AND h.id < upper(r)))
), gone AS (
    DELETE FROM {schema}.payload_dtypes
    WHERE id = ANY (ARRAY(SELECT id FROM unused))
)
SELECT max(id) AS last FROM chunk;
