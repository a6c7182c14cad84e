"""The ``pgq-nb schedules add|update|remove`` and ``pgq-nb backfill`` commands: schedules as
data from a shell (the same calls as ``q.add_schedule`` and ``q.backfill``). ``pgq-nb
schedules`` alone lists them (:func:`pgq_nb.cli_admin.cmd_schedules`)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from pgq_nb import runtime
from pgq_nb.cli_admin import cmd_schedules, queue_for
from pgq_nb.errors import InvalidInputError
from pgq_nb.schedule import data
from pgq_nb.schedule.api_data import KEEP
from pgq_nb.schedule.cron import CATCH_UP_POLICIES


def _payload(text: str | None, flag: str = "--payload") -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{flag} {text!r} is not JSON ({exc.msg} at character {exc.pos}); quote it for "
            f"""the shell, e.g. {flag} '{{"region": "eu"}}'"""
        ) from None


def _when(what: str, text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.utcoffset() is None:
        raise InvalidInputError(
            f"{what} {text!r} is not an ISO 8601 time with its offset; write e.g. "
            "2026-11-01T00:00Z or 2026-11-01T00:00+01:00"
        )
    return value


def cmd_schedule_add(args: argparse.Namespace) -> int:
    q = queue_for(args, install=False)
    notebook = {}  # a notebook's schedule (the runner's entrypoint with its stored content)
    if args.notebook is not None or args.parameters is not None:
        notebook = {
            "notebook": args.notebook,
            "parameters": _payload(args.parameters, "--parameters"),
        }
    first = q.add_schedule(
        args.name,
        args.cron,
        entrypoint=args.entrypoint,
        payload=_payload(args.payload),
        tz=args.tz,
        catch_up=args.catch_up,
        **notebook,
    )
    runs = f"notebook {args.notebook!r}" if notebook else repr(args.entrypoint)
    print(f"schedule {args.name!r} added: runs {runs}; first tick {first:%c %Z}")
    return 0


def cmd_schedule_update(args: argparse.Namespace) -> int:
    if args.payload is not None and args.no_payload:
        raise InvalidInputError("give --payload or --no-payload, not both")
    payload = None if args.no_payload else KEEP if args.payload is None else _payload(args.payload)
    options = (args.cron, args.entrypoint, args.tz, args.catch_up, args.parameters, args.notebook)
    if payload is KEEP and all(option is None for option in options):
        raise InvalidInputError(
            f"nothing to change in schedule {args.name!r}: give --cron, --tz, --catch-up, "
            "--entrypoint, --payload or --no-payload (--parameters, --notebook for a notebook's "
            "schedule)"
        )
    q = queue_for(args, install=False)
    next_run = q.update_schedule(
        args.name,
        cron=args.cron,
        entrypoint=args.entrypoint,
        payload=payload,
        tz=args.tz,
        catch_up=args.catch_up,
        parameters=_payload(args.parameters, "--parameters"),
        notebook=args.notebook,
    )
    print(f"schedule {args.name!r} updated; next tick {next_run:%c %Z}")
    return 0


def cmd_schedule_remove(args: argparse.Namespace) -> int:
    queue_for(args, install=False).remove_schedule(args.name)
    print(f"schedule {args.name!r} removed (its jobs and their history stay)")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    start, end = _when("START", args.start), _when("END", args.end)
    q = queue_for(args, install=False)
    done, total = 0, 0

    def started(n: int) -> None:
        nonlocal total
        total = n

    def batch(n: int) -> None:  # a line that counts up, on a terminal
        nonlocal done
        done += n
        if sys.stderr.isatty():
            print(f"\rbackfill {args.name}: {done:,} / {total:,} ticks", end="", file=sys.stderr)

    rows = runtime.run_sync(
        data.backfill(
            q.aio.pool,
            q.aio.queries,
            args.name,
            start,
            end,
            force=args.force,
            include_paused=args.include_paused,
            on_start=started,
            on_batch=batch,
        )
    )
    if total and sys.stderr.isatty():
        print(file=sys.stderr)
    enqueued = sum(1 for r in rows if r["enqueued"])
    print(
        f"backfill {args.name!r}: enqueued {enqueued:,} of {len(rows):,} ticks "
        f"({len(rows) - enqueued:,} had fired already)"
    )
    return 0


def add_parsers(sub: Any) -> None:
    """``schedules`` (with add, update, remove) and ``backfill``, on the main parser's
    subcommands."""
    schedules = sub.add_parser("schedules", help="cron schedules: list, add, update, remove")
    schedules.set_defaults(func=cmd_schedules)
    verbs = schedules.add_subparsers(dest="schedules_command", title="commands", metavar="COMMAND")
    verbs.add_parser("list", help="next and last run, status (the default)")
    add = verbs.add_parser("add", help="schedule an entrypoint with a payload, or a notebook")
    add.add_argument("name", help="the schedule's name")
    add.add_argument("cron", help="cron expression, e.g. '0 * * * *' (quote it)")
    runs = add.add_mutually_exclusive_group(required=True)
    runs.add_argument("--entrypoint", help="the entrypoint each tick runs")
    runs.add_argument(
        "--notebook", help="a notebook each tick runs (its content is stored now; see README)"
    )
    add.add_argument("--parameters", help="the notebook's parameters, as JSON")
    update = verbs.add_parser("update", help="change a schedule added with `schedules add`")
    update.add_argument("name", help="the schedule's name")
    update.add_argument("--cron", help="a new cron expression")
    update.add_argument("--entrypoint", help="a new entrypoint")
    update.add_argument("--no-payload", action="store_true", help="store no payload")
    update.add_argument(
        "--notebook", help="a notebook's schedule: run this notebook (its content is stored now)"
    )
    update.add_argument("--parameters", help="a notebook's schedule: its new parameters, as JSON")
    for parser, tz, catch_up in ((add, "UTC", "latest"), (update, None, None)):
        parser.add_argument("--payload", help="the ticks' payload, as JSON")
        parser.add_argument(
            "--tz", default=tz, help="IANA time zone" + (" (default UTC)" if tz else "")
        )
        parser.add_argument(
            "--catch-up",
            choices=CATCH_UP_POLICIES,
            default=catch_up,
            help="what fires of ticks missed while no worker ran"
            + (" (default latest)" if catch_up else ""),
        )
    add.set_defaults(func=cmd_schedule_add)
    update.set_defaults(func=cmd_schedule_update)
    remove = verbs.add_parser("remove", help="remove a schedule added with `schedules add`")
    remove.add_argument("name", help="the schedule's name")
    remove.set_defaults(func=cmd_schedule_remove)

    backfill = sub.add_parser("backfill", help="enqueue a schedule's ticks that never fired")
    backfill.add_argument("name", help="the schedule's name")
    backfill.add_argument("start", help="ISO 8601 with offset, e.g. 2026-11-01T00:00Z")
    backfill.add_argument("end", help="ISO 8601 with offset (excluded)")
    backfill.add_argument("--force", action="store_true", help="allow over 100,000 ticks")
    backfill.add_argument(
        "--include-paused",
        action="store_true",
        help="backfill a paused schedule too (it stays paused)",
    )
    backfill.set_defaults(func=cmd_backfill)
