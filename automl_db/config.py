"""Settings, read from the environment (``DATABASE_URL``, ``AUTOML_DB_*``) or given explicitly."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from automl_db.paths import PROJECT_ROOT


def _default_data_dir() -> Path:
    return (PROJECT_ROOT or Path.cwd()) / ".pgdata"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where the database is. ``database_url`` wins; without it an embedded server is used."""

    database_url: str | None = None
    embedded_data_dir: Path = field(default_factory=_default_data_dir)
    embedded_pg_version: int = 18
    connect_timeout: float = 10.0
    #: The seed's pool: 20 connections kept, 10 more on demand (SQLAlchemy pool_size=20, max_overflow=10).
    pool_min_size: int = 20
    pool_max_size: int = 30
    #: Seconds a caller waits for a free connection before PoolTimeout.
    pool_timeout: float = 30.0
    #: Server-side limit for one statement, in milliseconds (0: none). Set inside each transaction,
    #: so it also holds behind a transaction pooler.
    statement_timeout_ms: int = 0
    #: Executions of a statement before psycopg prepares it on the server; None: never (behind a
    #: transaction pooler that does not track prepared statements, such as PgBouncer before 1.21).
    prepare_threshold: int | None = 5
    #: Hot standbys that serve `Database.read()` (libpq URLs, each may list several hosts); none: reads
    #: run on the primary (`database_url`, which may list several hosts with target_session_attrs=read-write).
    replica_urls: tuple[str, ...] = ()
    #: Seconds a read waits for a replica (a connection from its pool, and the replay of the position it
    #: was given) before it runs on the primary instead, or raises when it may not fall back.
    replica_wait_timeout: float = 1.0
    #: Seconds a replica that could not be reached is left out of the reads before they try it again.
    replica_retry_after: float = 5.0

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        defaults = cls()
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            embedded_data_dir=Path(env["AUTOML_DB_DATA_DIR"]) if env.get("AUTOML_DB_DATA_DIR")
            else defaults.embedded_data_dir,
            embedded_pg_version=int(env.get("AUTOML_DB_PG_VERSION", defaults.embedded_pg_version)),
            connect_timeout=float(env.get("AUTOML_DB_CONNECT_TIMEOUT", defaults.connect_timeout)),
            pool_min_size=int(env.get("AUTOML_DB_POOL_MIN_SIZE", defaults.pool_min_size)),
            pool_max_size=int(env.get("AUTOML_DB_POOL_MAX_SIZE", defaults.pool_max_size)),
            pool_timeout=float(env.get("AUTOML_DB_POOL_TIMEOUT", defaults.pool_timeout)),
            statement_timeout_ms=int(env.get("AUTOML_DB_STATEMENT_TIMEOUT_MS", defaults.statement_timeout_ms)),
            prepare_threshold=_threshold(env.get("AUTOML_DB_PREPARE_THRESHOLD"), defaults.prepare_threshold),
            replica_urls=split_urls(env.get("AUTOML_DB_REPLICA_URLS", "")),
            replica_wait_timeout=float(env.get("AUTOML_DB_REPLICA_WAIT_TIMEOUT", defaults.replica_wait_timeout)),
            replica_retry_after=float(env.get("AUTOML_DB_REPLICA_RETRY_AFTER", defaults.replica_retry_after)),
        )


def _threshold(value: str | None, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    return None if value.strip().lower() == "none" else int(value)


def split_urls(value: str) -> tuple[str, ...]:
    """Comma-separated libpq URLs. A comma is a separator only before a new `postgres[ql]://`: one URL's
    own host list (`postgresql://a:5432,b:5432/db`) stays whole."""
    return tuple(url.strip() for url in re.split(r",(?=\s*postgres(?:ql)?://)", value) if url.strip())
