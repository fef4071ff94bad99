"""Settings, read from the environment (``DATABASE_URL``, ``AUTOML_DB_*``) or given explicitly."""

import os
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
        )


def _threshold(value: str | None, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    return None if value.strip().lower() == "none" else int(value)
