"""The ``pgq-nb purge`` command (issue #20, item 1): retention by hand, once. With
``--older-than 30d`` it deletes every finished job older than that (``q.purge_history``);
without it, it applies the stored retention policies once (what workers do every minute)."""

from __future__ import annotations

import argparse
from typing import Any

from pgq_nb import retention, runtime
from pgq_nb.cli_admin import queue_for
from pgq_nb.retention import parse_period


def add_parsers(sub: Any) -> None:
    purge = sub.add_parser("purge", help="delete old finished jobs now (retention, once)")
    purge.add_argument(
        "--older-than",
        metavar="PERIOD",
        help="every job that finished longer ago than this ('30d', '12h'); "
        "default: apply the stored retention policies (q.retention()) once",
    )
    purge.set_defaults(func=cmd_purge)


def cmd_purge(args: argparse.Namespace) -> int:
    older_than = None if args.older_than is None else parse_period("--older-than", args.older_than)
    q = queue_for(args, install=False)
    if older_than is not None:
        n = q.purge_history(older_than)
        print(f"purged {n:,} job{'s' if n != 1 else ''} finished more than {args.older_than} ago")
        return 0
    if not q.retention_list():
        print("no retention policy is set (q.retention(...)); nothing purged")
        return 0
    deleted = runtime.run_sync(retention.apply_once(q.aio.store))
    if deleted is None:
        print("a worker is applying the retention policies right now; nothing more to do")
    else:
        print(f"purged {deleted:,} job{'s' if deleted != 1 else ''} by the retention policies")
    return 0
