-- Migration 2: mark the schema as pgq_nb's with the comment that schema.sql writes on a fresh
-- install. A schema installed before this has only its schema_version table to say so.
-- `public` is never pgq_nb's own (a fresh install there is refused; an old one may exist): it
-- keeps its comment, and uninstall drops pgq_nb's objects from it but not the schema.
DO $$
BEGIN
    IF '{schema}' <> '"public"' THEN
        COMMENT ON SCHEMA {schema} IS 'pgq_nb: job queue schema, created and owned by pgq_nb; '
            '`pgq-nb uninstall` drops it';
    END IF;
END
$$;
