"""Resolving the database URL and naming databases on the same server."""

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from automl_db.config import Settings
from automl_db.errors import DatabaseUnavailable
from automl_db.tools import embedded

#: Roles the embedded server (and the tests) let log in without a password, for local use only.
LOCAL_LOGIN_ROLES = ("automl_app", "automl_worker", "automl_billing", "automl_readonly")


def resolve_url(settings: Settings | None = None) -> str:
    """DATABASE_URL when set, else the embedded server's URL (starting it if needed), as its superuser:
    the administrative URL that migrations, codegen and the CLI use."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    return embedded.start(settings.embedded_data_dir, settings.embedded_pg_version)


def resolve_role_url(settings: Settings | None = None, role: str = "automl_app") -> str:
    """The URL a service uses: DATABASE_URL as given (the deployment chose its login), or the
    embedded server's database logged in as `role`."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    return with_user(resolve_url(settings), role)


def with_user(url: str, user: str) -> str:
    """The same server and database, another login (no password: local trust auth)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def enable_local_logins(admin_url: str) -> None:
    """Let the schema's roles log in, on a local server only (embedded, tests): a deployment gives
    its own logins passwords instead (README, Security)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in LOCAL_LOGIN_ROLES:
            conn.execute(sql.SQL("alter role {} login").format(sql.Identifier(role)))


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
