"""The application's role: the DSN pgq_nb hands out connects as ``pgq_nb``, not as a superuser.

A superuser of the embedded server may read any file and run any program as the server's OS
user; as root that is the one ``postgres`` user that every home shares. So the superuser's
password (``home/secret``) only serves pgq_nb's own set-up here, and applications get the
role ``pgq_nb``: LOGIN, NOSUPERUSER, NOCREATEDB, NOCREATEROLE, allowed to create schemas in the
``postgres`` database. Its password is kept in ``home/app_secret``, written only once the role
is set up: a home without that file (new, or made by an older pgq_nb) is set up at its next
start, and the pgq_nb schemas already in it (those with a ``schema_version`` table, ``public``
excepted) are handed to the role with everything in them. The server only ever sees the
password's SCRAM verifier.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import threading
from pathlib import Path

APP_ROLE = "pgq_nb"
SUPERUSER = "postgres"
DATABASE = "postgres"
_SCRAM_ITERATIONS = 4096
_CONNECT_TIMEOUT = 30.0

_SET_UP = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role};
    END IF;
END $$;
ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD '{verifier}';
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {database} TO {role};
-- The app role may create schemas; one named like the superuser would come first in the
-- superuser's default search_path ("$user", public) and could plant functions that an admin
-- session then runs as superuser. The superuser's sessions never look there.
ALTER ROLE {superuser} SET search_path = pg_catalog, public;
DO $$
DECLARE
    ns record;
    obj record;
BEGIN
    FOR ns IN
        SELECT DISTINCT n.oid, n.nspname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = 'schema_version' AND c.relkind IN ('r', 'p')
          AND n.nspname <> 'public'  -- never hand the shared schema over
    LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO {role}', ns.nspname);
        FOR obj IN
            SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                       WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                       ELSE 'TABLE' END AS kind,
                   format('%I.%I', ns.nspname, c.relname) AS name
            FROM pg_class c
            WHERE c.relnamespace = ns.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
            UNION ALL
            SELECT 'ROUTINE', p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = ns.oid AND p.prokind <> 'a'
            UNION ALL
            SELECT 'TYPE', t.oid::regtype::text FROM pg_type t
            LEFT JOIN pg_class r ON r.oid = t.typrelid
            WHERE t.typnamespace = ns.oid
              AND (t.typtype IN ('e', 'd', 'r') OR t.typtype = 'c' AND r.relkind = 'c')
        LOOP
            EXECUTE format('ALTER %s %s OWNER TO {role}', obj.kind, obj.name);
        END LOOP;
    END LOOP;
END $$;
"""


def scram_verifier(password: str, iterations: int = _SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier Postgres keeps for ``password`` (an ASCII password)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def set_up_sql(app_password: str) -> str:
    """The statements that create (or update) the role and hand it the pgq_nb schemas."""
    return _SET_UP.format(
        role=APP_ROLE,
        superuser=SUPERUSER,
        database=DATABASE,
        verifier=scram_verifier(app_password),
    )


async def _set_up(socket_dir: Path, port: int, superuser_secret: str, app_secret: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=str(socket_dir),
        port=port,
        user=SUPERUSER,
        password=superuser_secret,
        database=DATABASE,
        timeout=_CONNECT_TIMEOUT,
        server_settings={"search_path": "pg_catalog, pg_temp", "application_name": "pgq_nb"},
    )
    try:
        async with conn.transaction():
            await conn.execute(set_up_sql(app_secret))
    finally:
        await conn.close()


def set_up_app_role(socket_dir: Path, port: int, superuser_secret: str, app_secret: str) -> None:
    """Create or update the role, as the superuser, on an event loop of its own.

    A thread of its own, so that it also works where the calling thread runs an event loop
    (a notebook cell).
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_set_up(socket_dir, port, superuser_secret, app_secret))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="pgq_nb-embedded-set-up", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
