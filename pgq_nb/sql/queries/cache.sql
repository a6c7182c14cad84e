-- Named queries of cached steps (issue #21, item 4; see pgq_nb/caching.py). `{schema}` is
-- replaced by the validated, quoted schema name when the file is loaded.

-- name: cache_lookup
-- For each cache key of a claimed batch: the job whose handler really ran for the newest
-- succeeded job with that key (a hit of a hit points to its origin through cached_from), and
-- its result, when that origin finished within the key's TTL. Keys without such a job return
-- no row. One backward step of history_cache_idx per key, then the origin by primary key.
-- (Both are LATERAL subqueries the planner cannot flatten, the first for its LIMIT, the second
-- for its OFFSET 0: flattened, with statistics from a small history, the origins were joined
-- from a walk of all of history, once per batch: a 10,000-job drain took 50 s, not 3.)
-- params: $1 cache keys text[], $2 TTLs in seconds float8[] (NULL = for ever)
SELECT k.key AS cache_key, o.id AS origin, o.result::text AS result
FROM unnest($1::text[], $2::float8[]) AS k(key, ttl)
CROSS JOIN LATERAL (
    SELECT coalesce(h.cached_from, h.id) AS id
    FROM {schema}.history AS h
    WHERE h.cache_key = k.key AND h.status = 'succeeded'
    ORDER BY h.finished DESC
    LIMIT 1
) AS newest
CROSS JOIN LATERAL (
    SELECT h.id, h.result
    FROM {schema}.history AS h
    WHERE h.id = newest.id AND h.status = 'succeeded'
      AND (k.ttl IS NULL OR h.finished >= now() - make_interval(secs => k.ttl))
    OFFSET 0
) AS o;

-- name: uncache_jobs
-- Jobs just added with cache=False (same transaction, before anyone can claim them): run them
-- whatever the cache holds.
-- params: $1 ids bigint[]
UPDATE {schema}.jobs SET use_cache = false WHERE id = ANY($1::bigint[]);
