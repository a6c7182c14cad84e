"""Enqueue and drain side by side (the old pgq_nb-only script now lives in the harness).

    python -m benchmarks.core [--quick] [--dsn DSN]

is ``python -m benchmarks --only enqueue --only drain``; see :mod:`benchmarks.cli`.
"""

from __future__ import annotations

import sys

from benchmarks.cli import main as harness_main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return harness_main(["--only", "enqueue", "--only", "drain", *args])


if __name__ == "__main__":
    raise SystemExit(main())
