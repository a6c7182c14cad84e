"""The ``pgq-nb`` commands that look after a queue: the embedded server, the schema, status,
failures, cancelling, pausing and schedules. (``cli.py`` has the parser, workers and the demo.)"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from typing import Any

from pgq_nb import db, runtime, schema_install
from pgq_nb.config import Settings
from pgq_nb.errors import SchemaError
from pgq_nb.facade import Queue, connect, resolve_dsn
from pgq_nb.models import STATUSES


def queue_for(args: argparse.Namespace, *, install: bool = True) -> Queue:
    return connect(args.dsn, schema=args.schema, install=install)


def text_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Collection[int] = ()
) -> str:
    """A plain-text table (the CLI's and ``pgq-nb demo``'s): a header, a rule, the rows; the
    columns numbered in ``right`` right-aligned, the others left-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


# -- db ------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> int:
    from pgq_nb.embedded import EmbeddedServer

    server = EmbeddedServer()
    if args.db_command == "start":
        server.ensure_running()
        print(f"embedded Postgres running in {server.home} (pid {server.status().pid})")
    elif args.db_command == "stop":
        stopped = server.stop()
        print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
    elif args.db_command == "status":
        status = server.status()
        state = "running" if status.running else "stopped"
        if not status.initialised:
            state = "not initialised (`pgq-nb db start` creates it)"
        print(f"embedded Postgres: {state}")
        print(f"  home:     {server.home}")
        print(f"  data dir: {status.data_dir}")
        if status.version is not None:
            print(f"  version:  {status.version}")
        if status.running:
            print(f"  pid:      {status.pid}")
            print(f"  port:     {status.port} (127.0.0.1)")
            print(f"  socket:   {status.socket_dir}")
        return 0 if status.running else 3
    elif args.db_command == "dsn":
        server.ensure_running()
        print(server.dsn(tcp=args.tcp))
    return 0


# -- schema --------------------------------------------------------------------------------


def _admin_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(dsn=args.dsn, schema=args.schema)


def cmd_install(args: argparse.Namespace) -> int:
    settings = _admin_settings(args)

    async def run() -> int:
        return await schema_install.install(
            await db.get_pool(await resolve_dsn(settings)), settings.schema
        )

    version = runtime.run_sync(run())
    print(f"pgq_nb schema {settings.schema!r} installed at version {version}")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    settings = _admin_settings(args)
    schema = settings.schema

    async def run() -> int:
        pool = await db.get_pool(await resolve_dsn(settings))
        async with pool.acquire() as conn:
            installed = await schema_install.schema_version(conn, schema) is not None
        if not installed:
            raise SchemaError(
                f"pgq_nb is not installed in schema {schema!r}, so there is nothing to upgrade; "
                "run `pgq-nb install` (or check --schema / PGQ_NB_SCHEMA)"
            )
        return await schema_install.install(pool, schema)

    version = runtime.run_sync(run())
    print(f"pgq_nb schema {schema!r} is at version {version}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    settings = _admin_settings(args)
    schema = settings.schema

    async def run() -> bool:
        pool = await db.get_pool(await resolve_dsn(settings))
        # the same checks as the drop, so that a schema pgq_nb would refuse is refused here too
        return await (schema_install.uninstall if args.yes else schema_install.can_uninstall)(
            pool, schema
        )

    # an old install in public: its tables go, the schema stays
    what = (
        f"pgq_nb's tables in schema {schema!r}"
        if schema in schema_install.RESERVED_SCHEMAS
        else f"pgq_nb schema {schema!r}"
    )
    if not runtime.run_sync(run()):
        print(f"nothing to uninstall: schema {schema!r} does not exist")
    elif not args.yes:
        print(
            f"this drops the {what} with every job, result and schedule in it; run again with "
            "--yes to confirm"
        )
        return 2
    else:
        print(f"{what} dropped")
    return 0


# -- status --------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    q = queue_for(args, install=False)
    counts = q.counts()
    order = list(STATUSES)
    by_ep: dict[str, dict[str, int]] = {}
    for entrypoint, status, n in counts:
        by_ep.setdefault(entrypoint, {})[status] = n
    if by_ep:
        rows = [[ep, *(by_ep[ep].get(s, 0) for s in order)] for ep in sorted(by_ep)]
        print(text_table(["entrypoint", *order], rows))
    else:
        print("no jobs yet")
    workers = q.worker_list()
    print()
    if workers:
        rows = [
            [
                w["id"],
                w["host"],
                w["pid"],
                w["concurrency"],
                ",".join(w["entrypoints"]),
                w["heartbeat"].strftime("%H:%M:%S"),
            ]
            for w in workers
        ]
        print(
            text_table(["worker", "host", "pid", "concurrency", "entrypoints", "heartbeat"], rows)
        )
    else:
        print("no workers alive")
    limits = q.flow()
    if limits:
        print()
        rows = [
            [
                f["entrypoint"],
                f["max_running"] or "",
                f["rate_per_s"] or "",
                "yes" if f["paused"] else "",
                f["running"],
                f["waiting"],
            ]
            for f in limits
        ]
        print(
            text_table(
                ["entrypoint", "max_running", "rate/s", "paused", "running", "waiting"], rows
            )
        )
    return 0


# -- failures and flow control --------------------------------------------------------------


def cmd_failed(args: argparse.Namespace) -> int:
    q = queue_for(args, install=False)
    tags = getattr(args, "tags", None)
    jobs = q.failed_jobs(args.entrypoint, args.limit, tags=tags)
    if not jobs:
        print("no failed jobs" + (f" tagged {', '.join(tags)}" if tags else ""))
        return 0
    total = sum(
        n
        for entrypoint, status, n in q.counts()
        if status == "failed" and args.entrypoint in (None, entrypoint)
    )
    if tags:  # the counters have no labels: say only that the list may go on
        total = len(jobs) + 1 if len(jobs) == args.limit else len(jobs)
    rows = [
        [
            j.id,
            j.entrypoint,
            j.attempts,
            j.finished.strftime("%Y-%m-%d %H:%M:%S") if j.finished else "",
            (j.error or "").splitlines()[0][:80] if j.error else "",
        ]
        for j in jobs
    ]
    print(text_table(["job", "entrypoint", "attempts", "finished (UTC)", "error"], rows))
    if total > len(jobs):  # never cut the list silently
        of = "more" if tags else f"{total:,}"
        print(f"\nthe newest {len(jobs):,} of {of} failed jobs; --limit N shows more")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    if not args.ids and not args.entrypoint and not args.all:
        print("name the jobs to requeue: job ids, --entrypoint NAME, or --all")
        return 2
    n = queue_for(args, install=False).requeue_failed(args.ids or None, args.entrypoint)
    print(f"requeued {n} failed job{'s' if n != 1 else ''}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    outcome = queue_for(args, install=False).cancel(args.ids)
    for job_id, what in outcome.items():
        print(f"job {job_id}: {what}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    q = queue_for(args, install=False)
    if args.command == "pause":
        q.pause(args.entrypoint)
        print(f"{args.entrypoint!r} paused: no worker claims it until `pgq-nb resume`")
    else:
        q.resume(args.entrypoint)
        print(f"{args.entrypoint!r} resumed")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    listed = queue_for(args, install=False).schedule_list()
    if not listed:
        print(
            "no schedules yet: `pgq-nb schedules add NAME CRON --entrypoint E` adds one (an "
            "@q.schedule one is stored when a worker that has it starts)"
        )
        return 0

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""

    rows = [
        [
            s["name"],
            s["entrypoint"],
            s["expression"],
            s["tz"],
            when(s["next_run"]),
            when(s["last_run"]),
            s["last_status"] or "",
            "yes" if s["enabled"] else "paused",
            "yes" if s["handler_registered"] else "none running",
        ]
        for s in listed
    ]
    print(
        text_table(
            [
                "schedule",
                "entrypoint",
                "expression",
                "tz",
                "next run (UTC)",
                "last run (UTC)",
                "last status",
                "enabled",
                "worker",
            ],
            rows,
        )
    )
    return 0
