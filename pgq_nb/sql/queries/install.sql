-- Named queries of the installer: is a schema pgq_nb's, what does it hold, the version, and
-- uninstall. (Same conventions as core.sql.)

-- name: lock_install
-- Serialise installers and uninstallers of one schema (several workers starting at once); held
-- until the transaction ends.
-- params: $1 schema name
SELECT pg_advisory_xact_lock(hashtext('pgq_nb install ' || $1));

-- name: schema_state
-- The schema's comment (pgq_nb's marker) and whether it has a schema_version table; no row when
-- the schema does not exist.
-- params: $1 schema name
SELECT obj_description(n.oid, 'pg_namespace') AS comment,
    EXISTS (SELECT 1 FROM pg_class c
            WHERE c.relnamespace = n.oid AND c.relname = 'schema_version' AND c.relkind = 'r')
        AS versioned
FROM pg_namespace n
WHERE n.nspname = $1;

-- name: schema_objects
-- The objects in a schema that stand on their own, not the parts of one (indexes, constraints,
-- triggers, a table's own sequences and row type, array types): `space` is the name space
-- they share (relation: tables, views, sequences, types; routine: functions, procedures).
-- params: $1 schema name
SELECT c.relname AS name, 'relation' AS space,
    CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
        WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table'
        ELSE 'type' END AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT t.typname, 'relation',
    CASE t.typtype WHEN 'd' THEN 'domain' WHEN 'e' THEN 'enum type' WHEN 'r' THEN 'range type'
        ELSE 'type' END
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = $1 AND t.typrelid = 0
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'i')
UNION ALL
SELECT p.proname, 'routine',
    CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1
ORDER BY 3, 1;

-- name: read_schema_version
-- The installed schema version (the table exists: checked first).
-- params: none
SELECT version FROM {schema}.schema_version;

-- name: set_schema_version
-- Record the version the schema is at now.
-- params: $1 version
INSERT INTO {schema}.schema_version (version) VALUES ($1)
ON CONFLICT (only_one) DO UPDATE SET version = excluded.version, installed = now();

-- name: set_owned_names
-- Tell drop_schema_objects, for this transaction only, the names of pgq_nb's objects
-- (sql.owned_objects): it drops nothing else, even an object created since the check.
-- params: $1 relation names, $2 routine names (comma-separated)
SELECT set_config('pgq_nb.owned_relations', $1, true),
    set_config('pgq_nb.owned_routines', $2, true);

-- name: drop_schema_objects
-- Uninstall, step 1: drop pgq_nb's views, tables, sequences, routines, types and domains in
-- the schema (those named by set_owned_names), without CASCADE (names quoted by regclass/regprocedure). If
-- anything outside them depends on one (a view or foreign key of yours), Postgres refuses and
-- names it; indexes, triggers and constraints of these tables go with them.
-- params: none
DO $$
DECLARE
    nsp CONSTANT oid := '{schema}'::regnamespace;
    relations CONSTANT text[] := string_to_array(current_setting('pgq_nb.owned_relations'), ',');
    routines CONSTANT text[] := string_to_array(current_setting('pgq_nb.owned_routines'), ',');
    names text;
    v record;
BEGIN
    -- views, newest first: a view on another view (or materialized view) was made after it
    FOR v IN SELECT c.oid::regclass::text AS name, c.relkind FROM pg_class c
             WHERE c.relnamespace = nsp AND c.relkind IN ('v', 'm') AND c.relname = ANY (relations)
             ORDER BY c.oid DESC
    LOOP
        EXECUTE CASE v.relkind WHEN 'v' THEN 'DROP VIEW ' ELSE 'DROP MATERIALIZED VIEW ' END
            || v.name;
    END LOOP;
    SELECT string_agg(c.oid::regclass::text, ', ') INTO names FROM pg_class c
    WHERE c.relnamespace = nsp AND c.relkind IN ('r', 'p') AND c.relname = ANY (relations);
    IF names IS NOT NULL THEN EXECUTE 'DROP TABLE ' || names; END IF;
    SELECT string_agg(c.oid::regclass::text, ', ') INTO names FROM pg_class c
    WHERE c.relnamespace = nsp AND c.relkind = 'S' AND c.relname = ANY (relations);
    IF names IS NOT NULL THEN EXECUTE 'DROP SEQUENCE ' || names; END IF;
    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO names FROM pg_proc p
    WHERE p.pronamespace = nsp AND p.proname = ANY (routines);
    IF names IS NOT NULL THEN EXECUTE 'DROP ROUTINE ' || names; END IF;
    SELECT string_agg(t.oid::regtype::text, ', ') INTO names FROM pg_type t
    LEFT JOIN pg_class c ON c.oid = t.typrelid
    WHERE t.typnamespace = nsp AND t.typname = ANY (relations)
      AND (t.typtype IN ('b', 'e', 'r') OR c.relkind = 'c');
    IF names IS NOT NULL THEN EXECUTE 'DROP TYPE ' || names; END IF;
    SELECT string_agg(t.oid::regtype::text, ', ') INTO names FROM pg_type t
    WHERE t.typnamespace = nsp AND t.typname = ANY (relations) AND t.typtype = 'd';
    IF names IS NOT NULL THEN EXECUTE 'DROP DOMAIN ' || names; END IF;
END
$$;

-- name: drop_schema
-- Uninstall, step 2: drop the schema, now empty. Without CASCADE: anything still in it makes
-- Postgres refuse, naming it.
-- params: none
DROP SCHEMA {schema};
