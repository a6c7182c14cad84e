"""Write the sample data (customers.csv, orders.csv, fx_rates.csv) next to this script.

    python sample_data/make_sample_data.py            # (re)write the files
    python sample_data/make_sample_data.py --check    # exit 1 if the files differ from the seed

The tables are made by :func:`pgq_nb.notebook.demo_data.generate` of the checkout this script
is in (whichever pgq_nb is installed) from a fixed seed, so running this again gives the same
bytes; ``pgq-nb demo`` makes the same tables in memory when these files are not there (pgq_nb
installed from a wheel). See README.md here for every column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# the generator of this checkout, not of another installed copy (or none)
sys.path.insert(0, str(HERE.parent))
from pgq_nb.notebook import demo_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=demo_data.SEED, help="random seed")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    parser.add_argument(
        "--check", action="store_true", help="only compare the files with the seed's data"
    )
    args = parser.parse_args(argv)
    if args.check:
        changed = demo_data.differences(args.out, args.seed)
        for name in changed:
            print(f"{args.out / name} is missing or differs from seed {args.seed}")
        return 1 if changed else 0
    for path in demo_data.write(args.out, args.seed):
        lines = path.read_text(encoding="utf-8").count("\n") - 1
        print(f"wrote {path} ({lines:,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
