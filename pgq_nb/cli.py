"""The ``pgq-nb`` command: the embedded server, the schema, workers and a status view."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pgq_nb import cli_retention, cli_schedules, cli_signals, executors, runtime
from pgq_nb.cli_admin import (
    cmd_cancel,
    cmd_db,
    cmd_failed,
    cmd_install,
    cmd_pause,
    cmd_requeue,
    cmd_status,
    cmd_uninstall,
    cmd_upgrade,
    queue_for,
)
from pgq_nb.errors import ConfigurationError, PgqError
from pgq_nb.facade import Queue
from pgq_nb.queue import AsyncQueue
from pgq_nb.worker import Worker

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({})))


class _KeyValueFormatter(logging.Formatter):
    """Plain log lines with the structured ``extra`` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        extras.pop("message", None)
        extras.pop("asctime", None)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("pgq_nb")
    root.addHandler(handler)
    root.setLevel(level.upper())


# -- worker --------------------------------------------------------------------------------


def load_queue(target: str) -> AsyncQueue:
    """Import ``MODULE:ATTR`` and return the queue it names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"{target!r} is not MODULE:ATTR; name the module and the Queue object in it, "
            "for example `pgq-nb worker mypipeline:q`"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"cannot import module {module_name!r} ({exc}); run from the directory that holds "
            "it or put it on PYTHONPATH"
        ) from None
    obj = getattr(module, attr, None)
    if isinstance(obj, Queue):
        return obj.aio
    if isinstance(obj, AsyncQueue):
        return obj
    raise ConfigurationError(
        f"{target} is {type(obj).__name__}, not a pgq_nb Queue; point at the object that "
        "pgq_nb.connect() returned"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    # The module's own connect() reads these, so --dsn and --schema reach it.
    if args.dsn:
        os.environ["PGQ_NB_DSN"] = args.dsn
    if args.schema:
        os.environ["PGQ_NB_SCHEMA"] = args.schema
    if args.metrics_host is not None and args.metrics_port is None:
        raise ConfigurationError(
            "--metrics-host needs --metrics-port: give the port to serve /metrics and /healthz on"
        )
    if args.metrics_port is not None:
        # prometheus_client only now, and before the user's module; pgq_nb.metrics first:
        # without the package it raises a ConfigurationError naming the extra
        from pgq_nb import metrics, metrics_http  # noqa: F401
    queue = load_queue(args.target)
    if args.notebooks:  # opt in: whoever can enqueue can then run code here
        queue.serve_notebooks(timeout=args.notebook_timeout)
    entrypoints = args.entrypoints.split(",") if args.entrypoints else None
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "entrypoints": entrypoints,
        "batch_size": args.batch_size,
        "grace_period": args.grace_period,
        "process_exits": True,
        "processes": args.processes,
    }
    if args.dask is not None:  # dask.distributed only now (pip install 'pgq_nb[dask]')
        options["dask"] = executors.dask_client(args.dask)
    loop = runtime.loop()
    worker: Worker
    server = None
    if args.metrics_port is None:
        worker = Worker(queue, **options)
    else:
        worker = metrics_http.metered_worker(queue, **options)
        server = metrics_http.MetricsServer(worker)
        host = args.metrics_host or "127.0.0.1"
        asyncio.run_coroutine_threadsafe(server.start(host, args.metrics_port), loop).result()
    future = asyncio.run_coroutine_threadsafe(worker.run(), loop)
    stats, at_once = cli_signals.run_until_stopped(worker, future, loop)
    if server is not None:
        loop.call_soon_threadsafe(server.close)
    summary = (
        f"{stats.succeeded} succeeded, {stats.failed} failed, {stats.interrupted} went back to "
        "the queue"
    )
    if at_once:
        print(f"worker stopped at once: {summary}")
        # def handlers still in their threads end with the process (their jobs were returned
        # due a few seconds later); the interpreter's exit would wait for them
        cli_signals.exit_now(1)
    print(f"worker stopped: {summary}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # pandas lives in the notebook layer; load the demo only when asked for
    from pgq_nb.notebook import demo

    summary = demo.run_demo(args.dsn, schema=args.schema or "pgq_nb_demo")
    return 0 if summary.ok else 1


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; give a number 1-65535")
    return port


class _SecretRefused(argparse.Action):
    """``pgq-nb web --token X``: refused without echoing X (every local user sees a command
    line in ``ps``)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parser.error(
            "secrets are never taken on the command line (every user on this machine can read "
            "it): set PGQ_NB_WEB_TOKEN or --token-file PATH"
        )


def cmd_web(args: argparse.Namespace) -> int:
    # Starlette and uvicorn are the optional extra pgq_nb[web]; load them only when asked for
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            f"pgq-nb web needs {' and '.join(missing)}, which pgq_nb installs only with its web "
            "extra: pip install 'pgq_nb[web]'"
        )
    from pgq_nb.web import server

    config = server.config_from_args(args)  # refuses a bad host or secret before connecting
    queue = queue_for(args)
    server.serve(queue.aio, config, log_level=args.log_level or "info")
    return 0


# -- main ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgq-nb",
        description="Durable Postgres job queue for notebook pipelines.",
        epilog="Run `pgq-nb COMMAND --help` for the options of a command.",
    )
    parser.set_defaults(show_help=parser.print_help)
    parser.add_argument("--dsn", help="Postgres DSN (default: PGQ_NB_DSN, else embedded server)")
    parser.add_argument("--schema", help="schema name (default: PGQ_NB_SCHEMA, else pgq_nb)")
    parser.add_argument(
        "--log-level", help="logging level (default: INFO for `worker`, WARNING otherwise)"
    )
    # Not required: with no command, main() prints this help (argparse's error would not list
    # the commands); likewise for `pgq-nb db`.
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    db = sub.add_parser("db", help="manage the embedded Postgres server")
    db.set_defaults(show_help=db.print_help)
    db_sub = db.add_subparsers(dest="db_command", title="commands", metavar="COMMAND")
    db_sub.add_parser("start", help="start it (initialising it on first use)")
    db_sub.add_parser("stop", help="stop it")
    db_sub.add_parser("status", help="say whether it runs, where, on which port")
    dsn = db_sub.add_parser("dsn", help="print its DSN (contains the password)")
    dsn.add_argument("--tcp", action="store_true", help="the 127.0.0.1 DSN, not the socket one")
    db.set_defaults(func=cmd_db)

    sub.add_parser("install", help="install the schema (idempotent)").set_defaults(func=cmd_install)
    sub.add_parser("upgrade", help="apply pending schema migrations").set_defaults(func=cmd_upgrade)
    uninstall = sub.add_parser("uninstall", help="drop the schema and all its data")
    uninstall.add_argument("--yes", action="store_true", help="confirm")
    uninstall.set_defaults(func=cmd_uninstall)
    sub.add_parser("status", help="jobs per entrypoint and status; workers alive").set_defaults(
        func=cmd_status
    )
    failed = sub.add_parser("failed", help="list jobs that failed for good, newest first")
    failed.add_argument("--entrypoint", help="only this entrypoint")
    failed.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    failed.add_argument(
        "--tag",
        action="append",
        dest="tags",
        metavar="TAG",
        help="only jobs carrying this tag (repeat: carrying all of them)",
    )
    failed.set_defaults(func=cmd_failed)
    requeue = sub.add_parser("requeue", help="put failed jobs back in the queue")
    requeue.add_argument("ids", nargs="*", type=int, help="job ids (default: see --all)")
    requeue.add_argument("--entrypoint", help="every failed job of this entrypoint")
    requeue.add_argument("--all", action="store_true", help="every failed job")
    requeue.set_defaults(func=cmd_requeue)
    cli_schedules.add_parsers(sub)
    cli_retention.add_parsers(sub)
    cancel = sub.add_parser("cancel", help="cancel jobs (queued at once, running ones asked)")
    cancel.add_argument("ids", nargs="+", type=int, help="job ids")
    cancel.set_defaults(func=cmd_cancel)
    for verb, text in (
        ("pause", "stop every worker claiming an entrypoint"),
        ("resume", "let workers claim a paused entrypoint again"),
    ):
        parser_ = sub.add_parser(verb, help=text)
        parser_.add_argument("entrypoint")
        parser_.set_defaults(func=cmd_pause)

    sub.add_parser(
        "demo", help="the whole story on sample data, in schema pgq_nb_demo"
    ).set_defaults(func=cmd_demo)

    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument("target", help="MODULE:ATTR naming the Queue, e.g. mypipeline:q")
    worker.add_argument(
        "--concurrency",
        type=int,
        help="jobs at once (default 32; with --processes N, 2N)",
    )
    worker.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="run plain def handlers in N processes (pip install 'pgq_nb[processes]')",
    )
    worker.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run plain def handlers on the Dask cluster whose scheduler is at ADDRESS, "
        "e.g. tcp://scheduler:8786 (pip install 'pgq_nb[dask]')",
    )
    worker.add_argument("--entrypoints", help="comma-separated subset of entrypoints to run")
    worker.add_argument("--batch-size", type=int, help="jobs per claim (default: concurrency)")
    worker.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="seconds running jobs get to finish on SIGINT/SIGTERM (default 30)",
    )
    worker.add_argument(
        "--notebooks",
        action="store_true",
        help="also run notebook jobs (q.enqueue_notebook): runs their code here; needs "
        "pip install 'pgq_nb[notebooks]'",
    )
    worker.add_argument(
        "--notebook-timeout",
        type=float,
        help="seconds a notebook job enqueued without timeout= may run (default: no limit)",
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port (needs pgq_nb[metrics])",
    )
    worker.add_argument(
        "--metrics-host",
        metavar="ADDRESS",
        help="address to serve them on (default 127.0.0.1; any other lets whoever reaches it "
        "read entrypoint names and job counts)",
    )
    worker.set_defaults(func=cmd_worker)

    # allow_abbrev=False: `--token SECRET` must not be taken for --token-file (and echoed)
    web = sub.add_parser(
        "web", help="the dashboard in a browser (pip install 'pgq_nb[web]')", allow_abbrev=False
    )
    web.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default "
        "127.0.0.1; any other needs PGQ_NB_WEB_TOKEN or --token-file)",
    )
    web.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")
    web.add_argument(
        "--read-only", action="store_true", help="no actions: no requeue, pause, cancel or run-now"
    )
    web.add_argument("--hide-payloads", action="store_true", help="never show payloads or results")
    web.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the login secret "
        "(yours, mode 0600, not a symlink); default: PGQ_NB_WEB_TOKEN",
    )
    web.add_argument("--token", nargs="?", action=_SecretRefused, help=argparse.SUPPRESS)
    web.set_defaults(func=cmd_web)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None or (args.command == "db" and args.db_command is None):
        # the commands, one line each, on stdout; a usage error all the same (as git does), so
        # that `pgq-nb "$command"` with an empty $command does not pass for a success
        args.show_help()
        return 2
    _setup_logging(args.log_level or ("INFO" if args.command == "worker" else "WARNING"))
    try:
        code: int = args.func(args)
    except PgqError as exc:
        print(f"pgq-nb: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pgq-nb status | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
