"""``pgq-nb web``: the dashboard on uvicorn, in this process's main thread and its own event
loop (the pgq_nb loop thread keeps the pool; the pages' reads are bridged to it)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pgq_nb.errors import ConfigurationError
from pgq_nb.web.config import WebConfig, build_config

if TYPE_CHECKING:
    from pgq_nb.queue import AsyncQueue

#: Connections and requests served at once; beyond, a new request gets 503 at once.
LIMIT_CONCURRENCY = 200
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 5


def config_from_args(args: argparse.Namespace) -> WebConfig:
    """The checked configuration of ``pgq-nb web``'s options and the environment."""
    return build_config(
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        hide_payloads=args.hide_payloads,
        token_file=Path(args.token_file) if args.token_file else None,
        environ=os.environ,
    )


def serve(aio: AsyncQueue, config: WebConfig, *, log_level: str = "info") -> None:
    """Serve until SIGINT or SIGTERM (uvicorn's graceful shutdown)."""
    try:
        import uvicorn
    except ImportError:  # starlette came, uvicorn did not
        raise ConfigurationError("pgq-nb web needs uvicorn: pip install 'pgq_nb[web]'") from None
    from pgq_nb.web.app import create_app
    from pgq_nb.web.protocol import HeaderTimeoutProtocol

    app = create_app(aio, config)
    mode = ", read-only" if config.read_only else ""
    mode += ", payloads hidden" if config.hide_payloads else ""
    login = "token required" if config.token else "no login (loopback only)"
    print(
        f"pgq-nb web on http://{_url_host(config.host)}:{config.port}/ ({login}{mode})", flush=True
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level.lower(),
        access_log=False,
        server_header=False,
        # bounded: past LIMIT_CONCURRENCY open connections new requests get a quick 503, an
        # idle connection closes after KEEP_ALIVE_S, a slow request head after
        # HEADER_TIMEOUT_S (protocol.py); a reverse proxy in front is still the guard beyond
        # a LAN
        http=HeaderTimeoutProtocol,
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
