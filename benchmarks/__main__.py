"""``python -m benchmarks``: see :mod:`benchmarks.cli`."""

from benchmarks.cli import main

# guarded: a peer's worker that starts processes with "spawn" re-imports this module
if __name__ == "__main__":
    raise SystemExit(main())
