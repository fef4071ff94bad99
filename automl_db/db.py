"""The database objects services hold: a psycopg_pool pool and transactions acting for a user.

    db = Database()                      # DATABASE_URL, else the embedded server as automl_app
    with db.transaction(user_id=uid) as conn:
        job = queries.submit_job(conn, user_id=uid, ...)

A transaction commits when the block ends and rolls back on an exception. Its first round trip is
`BEGIN` together with its settings, all local to it: `automl.user_id` (whom row-level security
lets it act for; '' for nobody) and the statement timeout. Its last is `COMMIT` (or `ROLLBACK`)
together with a reset of whatever a statement changed for the session (`SET`, `set_config(...,
false)`, `SET ROLE`), so nothing crosses to the next use of the pooled connection. Settings that
live inside transactions also hold behind a transaction pooler such as PgBouncer.

A connection the server closed since its last use (restart, killed backend) fails at `BEGIN`, before
anything ran: it is replaced and the transaction starts on another, so no pre-ping round trip is
needed. `Database()` connects once before returning, so a wrong URL fails at once with
PostgreSQL's own message (DatabaseUnavailable). A connection lost during `COMMIT` raises
CommitOutcomeUnknown, never Retryable: the transaction may have committed. `run()` retries a unit
of work only when that is safe.
"""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, Connection, pq, sql
from psycopg.types.datetime import TimestamptzLoader

from automl_db.config import Settings
from automl_db.database import describe, resolve_role_url
from automl_db.errors import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    PoolTimeout,
    Retryable,
    TransactionFailed,
    translate,
)

T = TypeVar("T")

#: Sent after COMMIT or ROLLBACK, in the same round trip: the session as it was when it connected.
RESET = b"reset session authorization; reset all; reset role"
COMMIT, ROLLBACK = b"commit; ", b"rollback; "


class _Timestamptz(TimestamptzLoader):
    """Reads 'infinity', '-infinity' and years past 9999, which Python's datetime cannot hold, as
    datetime.max / datetime.min (UTC) instead of failing the whole row."""

    def load(self, data: Any) -> datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            return (datetime.min if bytes(data).startswith(b"-") or bytes(data).endswith(b"BC")
                    else datetime.max).replace(tzinfo=UTC)


def _configure(conn: Connection[Any]) -> None:
    conn.adapters.register_loader("timestamptz", _Timestamptz)


async def _configure_async(conn: AsyncConnection[Any]) -> None:
    conn.adapters.register_loader("timestamptz", _Timestamptz)


def _connect_kwargs(settings: Settings) -> dict[str, Any]:
    return {"connect_timeout": max(1, round(settings.connect_timeout)), "autocommit": True,
            "prepare_threshold": settings.prepare_threshold}


def _begin(settings: Settings, user_id: UUID | None, read_only: bool = False) -> bytes:
    """BEGIN and the transaction's own settings, as one simple-protocol round trip (several
    statements cannot be prepared: every execute of them says prepare=False)."""
    statement = sql.SQL("begin{}; select set_config('automl.user_id', {}, true)").format(
        sql.SQL(" read only") if read_only else sql.SQL(""), sql.Literal(str(user_id) if user_id else ""))
    if settings.statement_timeout_ms:
        statement += sql.SQL(", set_config('statement_timeout', {}, true)").format(
            sql.Literal(str(settings.statement_timeout_ms)))
    return statement.as_bytes(None)


def _lost(conn: Connection[Any] | AsyncConnection[Any], exc: psycopg.Error) -> bool:
    """Whether the error means the connection is gone (not a refusal by the server)."""
    return conn.broken or conn.closed or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)


def _ending(conn: Connection[Any] | AsyncConnection[Any], commit: bool) -> tuple[bytes, Exception | None]:
    """How the transaction ends: COMMIT, or ROLLBACK when asked or when a statement in it failed (a
    COMMIT would silently roll back, and the caller believe it committed)."""
    if commit and conn.info.transaction_status == pq.TransactionStatus.INERROR:
        return ROLLBACK, TransactionFailed("a statement in this transaction failed, so it was rolled back")
    return (COMMIT if commit else ROLLBACK), None


def _ending_failed(conn: Connection[Any] | AsyncConnection[Any], end: bytes, exc: psycopg.Error,
                   error: Exception | None) -> Exception | None:
    """The error to raise when COMMIT or ROLLBACK itself failed."""
    if end is ROLLBACK:
        return error  # the transaction is over either way
    if _lost(conn, exc):
        unknown = CommitOutcomeUnknown("the connection was lost while committing: the transaction may or may "
                                       "not have committed")
        unknown.__cause__ = exc
        return unknown
    refused = translate(exc)  # refused at COMMIT (a deferred rule, a serialization failure): rolled back
    refused.__cause__ = exc
    return refused


def _unavailable(url: str, exc: psycopg.Error) -> DatabaseUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailable(f"cannot reach PostgreSQL at {describe(url)}: {first}")


class Database:
    """Synchronous access through a connection pool (20 kept, 10 more on demand, by default)."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, role: str = "automl_app") -> None:
        self.settings = settings or Settings.from_env()
        self.url = url or resolve_role_url(self.settings, role)
        kwargs = _connect_kwargs(self.settings)
        try:  # fail now, with the server's own words, rather than at the first transaction
            psycopg.connect(self.url, **kwargs).close()
        except psycopg.Error as exc:
            raise _unavailable(self.url, exc) from exc
        self.pool: psycopg_pool.ConnectionPool[Connection[Any]] = psycopg_pool.ConnectionPool(
            self.url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, kwargs=kwargs, configure=_configure, name="automl_db", open=False)
        self.pool.open()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, user_id: UUID | None, read_only: bool) -> Connection[Any]:
        begin = _begin(self.settings, user_id, read_only)
        for _ in range(self.settings.pool_max_size + 1):
            try:
                conn = self.pool.getconn()
            except psycopg_pool.PoolTimeout as exc:
                raise PoolTimeout(f"no free connection within {self.settings.pool_timeout}s") from exc
            try:
                conn.execute(begin, prepare=False)
                return conn
            except psycopg.Error as exc:
                self.pool.putconn(conn)  # a broken connection is discarded by the pool
                if not _lost(conn, exc):
                    raise translate(exc) from exc
        raise DatabaseUnavailable(f"no connection to {describe(self.url)} survived BEGIN")

    def _finish(self, conn: Connection[Any], commit: bool) -> None:
        end, error = _ending(conn, commit)
        try:
            conn.execute(end + RESET, prepare=False)
        except psycopg.Error as exc:
            error = _ending_failed(conn, end, exc, error)
            if not _lost(conn, exc):
                with suppress(psycopg.Error):  # a refused COMMIT ended the transaction; reset the session still
                    conn.execute(RESET, prepare=False)
        finally:
            self.pool.putconn(conn)  # a broken connection is discarded by the pool
        if error is not None:
            raise error

    @contextmanager
    def transaction(self, user_id: UUID | None = None, *, read_only: bool = False) -> Iterator[Connection[Any]]:
        """A connection in a transaction, acting for user_id when given."""
        conn = self._start(user_id, read_only)
        try:
            yield conn
        except psycopg.Error as exc:
            self._finish(conn, commit=False)
            raise translate(exc) from exc
        except BaseException:
            self._finish(conn, commit=False)
            raise
        self._finish(conn, commit=True)

    def run(self, work: Callable[[Connection[Any]], T], *, user_id: UUID | None = None, idempotent: bool = False,
            attempts: int = 3) -> T:
        """`work(conn)` in a transaction, run again (up to `attempts` times, with jittered backoff) when
        it was refused as Retryable (nothing committed: deadlock, serialization failure, lost
        connection, busy pool) and, only when `idempotent`, when the commit's outcome is unknown."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction(user_id) as conn:
                    return work(conn)
            except (Retryable, CommitOutcomeUnknown) as exc:
                if attempt == attempts or (isinstance(exc, CommitOutcomeUnknown) and not idempotent):
                    raise
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")


class AsyncDatabase:
    """Asynchronous access through a connection pool; open it with `await AsyncDatabase.connect()`."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        self.url = url
        self.pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] = psycopg_pool.AsyncConnectionPool(
            url, min_size=settings.pool_min_size, max_size=settings.pool_max_size, timeout=settings.pool_timeout,
            kwargs=_connect_kwargs(settings), configure=_configure_async, name="automl_db_async", open=False)

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None,
                      role: str = "automl_app") -> "AsyncDatabase":
        settings = settings or Settings.from_env()
        url = url or resolve_role_url(settings, role)
        try:
            await (await psycopg.AsyncConnection.connect(url, **_connect_kwargs(settings))).close()
        except psycopg.Error as exc:
            raise _unavailable(url, exc) from exc
        db = cls(url, settings)
        await db.pool.open()
        return db

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self, user_id: UUID | None, read_only: bool) -> AsyncConnection[Any]:
        begin = _begin(self.settings, user_id, read_only)
        for _ in range(self.settings.pool_max_size + 1):
            try:
                conn = await self.pool.getconn()
            except psycopg_pool.PoolTimeout as exc:
                raise PoolTimeout(f"no free connection within {self.settings.pool_timeout}s") from exc
            try:
                await conn.execute(begin, prepare=False)
                return conn
            except psycopg.Error as exc:
                await self.pool.putconn(conn)
                if not _lost(conn, exc):
                    raise translate(exc) from exc
        raise DatabaseUnavailable(f"no connection to {describe(self.url)} survived BEGIN")

    async def _finish(self, conn: AsyncConnection[Any], commit: bool) -> None:
        end, error = _ending(conn, commit)
        try:
            await conn.execute(end + RESET, prepare=False)
        except psycopg.Error as exc:
            error = _ending_failed(conn, end, exc, error)
            if not _lost(conn, exc):
                with suppress(psycopg.Error):
                    await conn.execute(RESET, prepare=False)
        finally:
            await self.pool.putconn(conn)
        if error is not None:
            raise error

    @asynccontextmanager
    async def transaction(self, user_id: UUID | None = None, *,
                          read_only: bool = False) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction, acting for user_id when given."""
        conn = await self._start(user_id, read_only)
        try:
            yield conn
        except psycopg.Error as exc:
            await self._finish(conn, commit=False)
            raise translate(exc) from exc
        except BaseException:
            await self._finish(conn, commit=False)
            raise
        await self._finish(conn, commit=True)

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]], *, user_id: UUID | None = None,
                  idempotent: bool = False, attempts: int = 3) -> T:
        """The async twin of Database.run."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(user_id) as conn:
                    return await work(conn)
            except (Retryable, CommitOutcomeUnknown) as exc:
                if attempt == attempts or (isinstance(exc, CommitOutcomeUnknown) and not idempotent):
                    raise
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")
