"""Benchmarks of pgq_nb, side by side with PgQueuer: ``python -m benchmarks --quick``.

One module per scenario (``scenario_*.py``); ``cli.py`` runs them and prints the table;
``pgqueuer_env.py`` imports PgQueuer lazily (``pip install -e '.[bench]'``).
"""
