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
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
