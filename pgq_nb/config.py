"""Settings, from arguments first and environment variables second.

PGQ_NB_DSN                 Postgres to use instead of the embedded server (default: embedded)
PGQ_NB_SCHEMA              schema holding pgq_nb's tables (default: pgq_nb)
PGQ_NB_HOME                the embedded server's home: data, secrets, log (default: per user;
                           as root /var/lib/pgq_nb)
PGQ_NB_MAX_CONNECTIONS     the embedded server's max_connections, read at each start (200)
PGQ_NB_HEARTBEAT_INTERVAL  seconds between a worker's heartbeats (default: 5)
PGQ_NB_HEARTBEAT_TIMEOUT   seconds without a heartbeat before a worker's jobs are reclaimed (30)
PGQ_NB_POLL_INTERVAL       seconds between polls when no NOTIFY arrives (default: 1)
PGQ_NB_RETENTION_INTERVAL  seconds between a worker's retention turns (default: 60; read by
                           pgq_nb.retention)
"""

from __future__ import annotations

import dataclasses
import os

from pgq_nb import sql
from pgq_nb.errors import ConfigurationError


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be a positive number of seconds")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a Queue needs to know besides its handlers."""

    dsn: str | None = None
    schema: str = "pgq_nb"
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        sql.validate_schema_name(self.schema)
        for field in ("heartbeat_interval", "heartbeat_timeout", "poll_interval"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{field} must be a positive number of seconds")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                "heartbeat_timeout must be longer than heartbeat_interval (several times longer "
                "is safest), or live workers would lose their jobs"
            )

    @classmethod
    def from_env(
        cls,
        *,
        dsn: str | None = None,
        schema: str | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        poll_interval: float | None = None,
    ) -> Settings:
        """Arguments win; unset ones come from PGQ_NB_* variables, then defaults."""
        return cls(
            dsn=dsn or os.environ.get("PGQ_NB_DSN") or None,
            schema=schema if schema is not None else os.environ.get("PGQ_NB_SCHEMA", "pgq_nb"),
            heartbeat_interval=heartbeat_interval or _float_env("PGQ_NB_HEARTBEAT_INTERVAL", 5.0),
            heartbeat_timeout=heartbeat_timeout or _float_env("PGQ_NB_HEARTBEAT_TIMEOUT", 30.0),
            poll_interval=poll_interval or _float_env("PGQ_NB_POLL_INTERVAL", 1.0),
        )
