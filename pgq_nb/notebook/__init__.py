"""The notebook layer: DataFrames in and out, progress bars, the dashboard.

Only this package imports pandas, tqdm, ipywidgets and matplotlib; the core never does
(an import-linter contract and tests/test_lean_imports.py keep it so). ``pgq_nb.views``
imports ``frames`` on the first call of a DataFrame method.

- ``frames``: the views (``jobs``, ``stats``, ``history``, ``results``, ``failed``), history
  retention (``purge_history``) and ``enqueue_df``;
- ``enqueue``: ``enqueue_df``, one job per row with COPY in one transaction;
- ``encode``: DataFrame columns to JSON payloads, and the documented form of every value;
- ``columns``: the fixed dtypes of the views;
- ``progress``: tqdm bars, on by default only in a notebook;
- ``demo``: ``pgq-nb demo`` (``python -m pgq_nb.notebook.demo``), on ``demo_data``'s seeded
  tables.
"""
