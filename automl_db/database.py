"""Resolving the database URL and naming databases on the same server."""

from urllib.parse import urlsplit, urlunsplit

import psycopg

from automl_db import embedded
from automl_db.config import Settings
from automl_db.errors import DatabaseUnavailable


def resolve_url(settings: Settings | None = None) -> str:
    """DATABASE_URL when set, else the embedded server's URL (starting it if needed)."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    return embedded.start(settings.embedded_data_dir, settings.embedded_pg_version)


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def yoyo_url(url: str) -> str:
    """yoyo needs the psycopg 3 scheme; plain postgresql:// would make it load psycopg2."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def connect(url: str, *, autocommit: bool = False, timeout: float = 10.0) -> psycopg.Connection[tuple[object, ...]]:
    """A plain connection, with an unreachable server reported as DatabaseUnavailable in one line."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, round(timeout)))
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {describe(url)}: {first}") from exc


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))
