"""The SQL text of pgq_nb: the schema, numbered migrations and named queries.

Queries live in ``queries/*.sql`` (one file per concept), each introduced by
``-- name: NAME``; names are unique across the files. The schema name is the
one identifier that varies; it is validated by :func:`validate_schema_name` and quoted before
it is put into any SQL text. Values are always bind parameters.

The objects pgq_nb owns (what ``uninstall`` may drop) are read off the schema and migration
files by :func:`owned_objects`, so that no second list of them exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pgq_nb.errors import ConfigurationError

SCHEMA_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"\{include:(_\w+)\}")
_MIGRATION_FILE = re.compile(r"^(\d{4})_\w+\.sql$")


def validate_schema_name(name: str) -> str:
    """Return ``name`` if it is a safe schema name, else raise ConfigurationError."""
    if not isinstance(name, str) or not SCHEMA_NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid schema name {name!r}: use 1 to 50 characters of lower-case letters, "
            "digits and underscores, starting with a letter or underscore (for example 'pgq_nb')"
        )
    return name


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _render(text: str, schema: str) -> str:
    schema = validate_schema_name(schema)
    return text.replace("{schema}", f'"{schema}"').replace("{channel}", channel_name(schema))


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which workers of ``schema`` are woken."""
    return f"{validate_schema_name(schema)}_jobs"


@dataclass(frozen=True)
class Migration:
    """One numbered step from version ``version - 1`` to ``version``."""

    version: int
    name: str
    sql: str


@cache
def _raw_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = resources.files(__package__).joinpath("queries")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME_LINE.split(entry.read_text(encoding="utf-8"))
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice (in {entry.name})")
            lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
            queries[name] = "\n".join(lines).strip().rstrip(";")
    return _included(queries)


def _included(raw: dict[str, str]) -> dict[str, str]:
    """The queries with each ``{include:_part}`` replaced by the text of the part of that name:
    a piece that is no statement on its own (its name starts with ``_``; it is not a query),
    shared by statements that must not repeat it (finish_jobs and finish_and_claim). Parts may
    include parts; a cycle, an unknown part or any other ``{include:`` is an error."""
    parts = {name: text for name, text in raw.items() if name.startswith("_")}

    def expand(text: str, seen: tuple[str, ...]) -> str:
        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in parts:
                raise RuntimeError(f"a query includes {name!r}, which no query file defines")
            if name in seen:
                raise RuntimeError(f"query parts include each other: {' -> '.join(seen)}")
            # a newline after it: a part's last line may be a comment
            return expand(parts[name], (*seen, name)) + "\n"

        out = _INCLUDE.sub(fill, text)
        if "{include:" in out:
            raise RuntimeError(f"a query includes something that is no part: {out!r:.200}")
        return out

    return {name: expand(text, (name,)) for name, text in raw.items() if name not in parts}


@cache
def queries(schema: str) -> dict[str, str]:
    """Every named query with ``schema`` filled in."""
    return {name: _render(sql, schema) for name, sql in _raw_queries().items()}


def schema_sql(schema: str) -> str:
    """The full, latest schema."""
    return _render(_read("schema.sql"), schema)


@cache
def _raw_migrations() -> tuple[tuple[int, str, str], ...]:
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"pgq_nb migrations are not numbered 1..N without gaps: {versions}")
    return tuple(found)


def migrations(schema: str) -> list[Migration]:
    """Every migration, in order; migration N takes the schema to version N."""
    return [Migration(v, name, _render(sql, schema)) for v, name, sql in _raw_migrations()]


def latest_version() -> int:
    """The schema version this code expects."""
    return len(_raw_migrations())


#: The marker pgq_nb writes as the comment of a schema it installed (schema.sql, migration 2).
SCHEMA_MARKER = "pgq_nb"

# Comments, quoted strings and dollar-quoted bodies: nothing in them creates an object.
_NOT_CODE = re.compile(r"--[^\n]*|/\*.*?\*/|\$(\w*)\$.*?\$\1\$|'(?:[^']|'')*'", re.DOTALL)
_CREATE = re.compile(r"\bCREATE\b", re.IGNORECASE)
_CREATES = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:UNIQUE|UNLOGGED|CONSTRAINT|MATERIALIZED|FOREIGN)\s+)*"
    r"(?P<kind>\w+)\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<schema>\{schema\}\.)?(?P<name>\w+)?",
    re.IGNORECASE,
)
_RENAMES = re.compile(
    r"\bALTER\s+(?:MATERIALIZED\s+|FOREIGN\s+)?(?P<kind>\w+)\s+(?:IF\s+EXISTS\s+)?"
    r"\{schema\}\.\w+(?:\s*\([^)]*\))?\s+RENAME\s+TO\s+(?P<name>\w+)",
    re.IGNORECASE,
)
#: Statement kinds that make an object standing on its own in the schema, by the name space
#: its name lives in (relations and types share one; routines another).
_OBJECT_KINDS = {
    "table": "relation",
    "view": "relation",
    "sequence": "relation",
    "type": "relation",
    "domain": "relation",
    "function": "routine",
    "procedure": "routine",
    "aggregate": "routine",
}
#: Statement kinds that make a part of another object (dropped with it), or the schema itself.
_PART_KINDS = {"schema", "index", "trigger", "rule", "policy", "statistics"}


def objects_created_by(text: str, source: str = "SQL") -> set[tuple[str, str]]:
    """The ``(name space, name)`` of every object that ``text`` creates (or renames to) in
    ``{schema}``: tables, views, sequences and types are ``relation``, functions, procedures
    and aggregates ``routine``; indexes, triggers and the like are parts of those.

    Raises RuntimeError on a CREATE it cannot read, so that a migration cannot add an object
    that the uninstall ownership check does not know about.
    """
    code = _NOT_CODE.sub(" ", text)
    found: set[tuple[str, str]] = set()
    for start in _CREATE.finditer(code):
        match = _CREATES.match(code, start.start())
        kind = match.group("kind").lower() if match else ""
        if kind in _PART_KINDS:
            continue
        if match is None or kind not in _OBJECT_KINDS or not match["schema"] or not match["name"]:
            statement = " ".join(code[start.start() :].split()[:6])
            raise RuntimeError(
                f"{source}: cannot tell which object `{statement} ...` creates; write it as "
                "CREATE <TABLE|VIEW|SEQUENCE|TYPE|DOMAIN|FUNCTION|PROCEDURE|AGGREGATE> "
                "{schema}.name, or teach pgq_nb.sql.objects_created_by (the uninstall ownership "
                "check) about it"
            )
        found.add((_OBJECT_KINDS[kind], match["name"]))
    for match in _RENAMES.finditer(code):
        space = _OBJECT_KINDS.get(match["kind"].lower())
        if space is not None:
            found.add((space, match["name"]))
    return found


@cache
def owned_objects() -> frozenset[tuple[str, str]]:
    """Every object any version of pgq_nb's schema has: what the latest schema creates, and
    what every migration creates, as ``(name space, name)`` pairs (see
    :func:`objects_created_by`). Only these may be dropped by uninstall."""
    owned = objects_created_by(_read("schema.sql"), "schema.sql")
    for _, name, text in _raw_migrations():
        owned |= objects_created_by(text, name)
    return frozenset(owned)
