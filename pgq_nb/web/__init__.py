"""``pgq-nb web``: the dashboard in a browser, outside any kernel (the optional extra
``pgq_nb[web]``: Starlette on uvicorn).

- ``config``: the options, the secret (``PGQ_NB_WEB_TOKEN`` or a private ``--token-file``) and
  the rule that only a loopback address may go without one;
- ``auth``: signed session cookies, the login, CSRF tokens, the Host check;
- ``data``: what the pages read, through the queue and named queries (``sql/queries/web.sql``),
  every read bounded (counters, indexed ranges, LIMITs) and timed (5 s);
- ``html`` and ``pages``: the pages as escaped HTML strings, no template engine;
- ``app``: the Starlette routes (actions are POSTs, absent in ``--read-only`` mode);
- ``health``: ``/healthz`` on a connection of its own, 2 s at most;
- ``throttle``: the login's brake on guessing;
- ``server`` and ``protocol``: uvicorn, for ``pgq-nb web``, with bounded connections and a
  deadline for each request's head.

The core never imports this package (an import-linter contract); the CLI imports it inside
``pgq-nb web``.
"""
