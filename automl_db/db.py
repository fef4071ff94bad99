"""The database objects services hold: a psycopg_pool pool and transactions acting for a user.

    db = Database()                      # DATABASE_URL, else the embedded server as automl_app
    with db.transaction(user_id=uid) as conn:
        job = queries.submit_job(conn, user_id=uid, ...)

Each transaction commits when the block ends and rolls back on an exception. Acting for a user
sets `automl.user_id` with set_config(..., true): local to the transaction, so it never leaks into
the next use of the pooled connection (row-level security keys on it). Every connection is
checked before it is handed out, so a backend killed or a server restarted since costs nothing but
a reconnect. psycopg errors leave as typed automl_db errors; a pool that stays busy past its
timeout raises PoolTimeout.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, Connection

from automl_db.config import Settings
from automl_db.database import resolve_role_url
from automl_db.errors import PoolTimeout, translate

SET_USER = "select set_config('automl.user_id', %s, true)"


def _connect_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"connect_timeout": max(1, round(settings.connect_timeout))}
    if settings.statement_timeout_ms:
        kwargs["options"] = f"-c statement_timeout={settings.statement_timeout_ms}"
    return kwargs


class Database:
    """Synchronous access through a connection pool."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, role: str = "automl_app") -> None:
        self.settings = settings or Settings.from_env()
        self.url = url or resolve_role_url(self.settings, role)
        self.pool: psycopg_pool.ConnectionPool[Connection[Any]] = psycopg_pool.ConnectionPool(
            self.url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, check=psycopg_pool.ConnectionPool.check_connection,
            kwargs=_connect_kwargs(self.settings), name="automl_db", open=False)
        self.pool.open()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, user_id: UUID | None = None) -> Iterator[Connection[Any]]:
        """A connection in a transaction, acting for user_id when given."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                if user_id is not None:
                    conn.execute(SET_USER, [str(user_id)])
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise PoolTimeout(f"no free connection within {self.settings.pool_timeout}s") from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc


class AsyncDatabase:
    """Asynchronous access through a connection pool; open it with `await AsyncDatabase.connect()`."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        self.url = url
        self.pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] = psycopg_pool.AsyncConnectionPool(
            url, min_size=settings.pool_min_size, max_size=settings.pool_max_size, timeout=settings.pool_timeout,
            check=psycopg_pool.AsyncConnectionPool.check_connection, kwargs=_connect_kwargs(settings),
            name="automl_db_async", open=False)

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None,
                      role: str = "automl_app") -> "AsyncDatabase":
        settings = settings or Settings.from_env()
        db = cls(url or resolve_role_url(settings, role), settings)
        await db.pool.open()
        return db

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(self, user_id: UUID | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction, acting for user_id when given."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                if user_id is not None:
                    await conn.execute(SET_USER, [str(user_id)])
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise PoolTimeout(f"no free connection within {self.settings.pool_timeout}s") from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc
