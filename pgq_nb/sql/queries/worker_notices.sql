-- Named queries of what a notebook's worker tells its user (pgq_nb.worker_notices).

-- name: unserved_jobs
-- Queued jobs nobody can run now, by entrypoint: of entrypoints without a handler in this
-- process ($1), not paused, and served by no live worker (heartbeat within $3 seconds); due
-- within $2 seconds (NULL: whenever). Every enqueued name is in entrypoints (enqueue refuses
-- others), so with no such entrypoint the one-time filter skips the scan of jobs altogether.
-- params: $1 entrypoints with a handler here text[], $2 horizon in seconds (float, NULL = any),
--   $3 heartbeat timeout in seconds (float)
WITH candidates AS (
    SELECT e.name FROM {schema}.entrypoints AS e
    WHERE e.name <> ALL($1::text[])
      AND NOT e.paused
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.workers AS w
          WHERE e.name = ANY(w.entrypoints)
            AND w.heartbeat >= now() - make_interval(secs => $3::float8))
)
SELECT j.entrypoint, count(*) AS jobs
FROM {schema}.jobs AS j
WHERE EXISTS (SELECT 1 FROM candidates)
  AND j.status = 'queued'
  AND j.entrypoint IN (SELECT name FROM candidates)
  AND ($2::float8 IS NULL OR j.execute_after <= now() + make_interval(secs => $2::float8))
GROUP BY j.entrypoint
ORDER BY j.entrypoint;

-- name: paused_jobs
-- Queued jobs of paused entrypoints among these ($1), due within $2 seconds (NULL: whenever),
-- by entrypoint: what run_until_idle() leaves waiting when it stops.
-- params: $1 entrypoints text[], $2 horizon in seconds (float, NULL = any)
SELECT j.entrypoint, count(*) AS jobs
FROM {schema}.jobs AS j
JOIN {schema}.entrypoints AS e ON e.name = j.entrypoint AND e.paused
WHERE j.status = 'queued'
  AND j.entrypoint = ANY($1::text[])
  AND ($2::float8 IS NULL OR j.execute_after <= now() + make_interval(secs => $2::float8))
GROUP BY j.entrypoint
ORDER BY j.entrypoint;
