"""Store the notebooks with the outputs of a fresh run: ``python -m tests.store_notebook_outputs``.

Starts a throw-away Postgres (as the tests do; nothing of yours is touched), runs each notebook
in notebooks/ top to bottom in a fresh kernel against it, and writes it back with its outputs
and its widgets' state, minus what changes between identical runs (timings, the interpreter's
version, random widget ids). Name notebooks to refresh only those
(``python -m tests.store_notebook_outputs 02_scheduled_reports``). tests/test_notebooks.py checks
that the stored outputs match a fresh run's.
"""

from __future__ import annotations

import argparse
import sys

from tests import notebook_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.store_notebook_outputs")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(notebook_runs.NAMES)}"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(notebook_runs.NAMES))
    if unknown:
        parser.error(f"no notebook {', '.join(unknown)}; the notebooks are {notebook_runs.NAMES}")
    names = [n for n in notebook_runs.NAMES if not args.names or n in args.names]

    from pgq_nb.embedded import start_child_for_tests, temporary_home

    with temporary_home() as home:
        dsn, server = start_child_for_tests(home)
        try:
            for name in names:
                nb, seconds = notebook_runs.execute(name, dsn)
                notebook_runs.write(name, nb, home)
                print(f"{notebook_runs.path(name)}: stored ({seconds:.1f} s)", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
