-- Migration 8: retention policies (issue #20, item 1). q.retention() writes them; every worker
-- applies them in the background, a batch of at most 1,000 history rows per short transaction,
-- one worker at a time (pgq_nb.retention). `entrypoint` '' is the default policy: it holds for
-- every entrypoint without one of its own. A NULL period keeps those jobs for ever.
CREATE TABLE {schema}.retention_policies (
    entrypoint text PRIMARY KEY,
    succeeded interval CHECK (succeeded >= interval '0'),
    failed interval CHECK (failed >= interval '0'),
    cancelled interval CHECK (cancelled >= interval '0'),
    keep_last integer CHECK (keep_last > 0),
    updated timestamptz NOT NULL DEFAULT now()
);
