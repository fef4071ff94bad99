"""The database objects services hold: a psycopg_pool pool and transactions acting for a user.

    db = Database()                      # DATABASE_URL, else the embedded server as automl_app
    with db.transaction(user_id=uid) as conn:
        job = queries.submit_job(conn, user_id=uid, ...)

A transaction commits when the block ends and rolls back on an exception. Its first round trip is
`BEGIN` together with its settings, all local to it: `automl.user_id` (whom row-level security
lets it act for; '' for nobody), the statement timeout, and the formats values are read in (ISO
dates, UTC). Its last resets whatever a statement left in the session (`SET`, `set_config(...,
false)`, `SET ROLE`, cursors WITH HOLD, `LISTEN`, prepared statements made with SQL `PREPARE`) and
then commits, so nothing crosses to the next use of the pooled connection (a rolled-back
transaction resets after its `ROLLBACK`). A connection whose end failed is dropped, not reused.
Settings that live inside transactions also hold behind a transaction pooler such as PgBouncer. The
connection belongs to the block: keep no reference to it past the block's end.

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
from psycopg.rows import tuple_row
from psycopg.types.datetime import TimestamptzLoader

from automl_db.config import Settings
from automl_db.database import describe, resolve_role_url
from automl_db.errors import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    InvalidInput,
    PoolTimeout,
    Retryable,
    TransactionFailed,
    translate,
)

T = TypeVar("T")
AnyConnection = Connection[Any] | AsyncConnection[Any]

#: The session as it was when it connected, in the round trip that ends the transaction. Before a
#: COMMIT, inside the transaction: the COMMIT then runs under the default settings, not a 1 ms
#: statement_timeout the block left, and a reset that fails (cancelled) leaves nothing committed, so
#: an error there is never mistaken for a refused commit. After a ROLLBACK, since an aborted
#: transaction runs nothing else. The select says whether SQL-level prepared statements were left
#: (psycopg's own are protocol-level): then a DEALLOCATE ALL follows, which psycopg notices and
#: clears its cache for.
RESET = (b"reset session authorization; reset all; reset role; close all; unlisten *;"
         b" select exists (select from pg_prepared_statements where from_sql)")
COMMIT, ROLLBACK = RESET + b"; commit", b"rollback; " + RESET


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


def _restore(conn: AnyConnection, settings: Settings) -> None:
    """What a block may have changed on the connection object itself, back as the pool made it."""
    conn.row_factory = tuple_row
    conn.prepare_threshold = settings.prepare_threshold
    for handlers in ("_notice_handlers", "_notify_handlers"):  # psycopg keeps no public way to list them
        with suppress(AttributeError):
            getattr(conn, handlers).clear()


def _connect_kwargs(settings: Settings) -> dict[str, Any]:
    return {"connect_timeout": max(1, round(settings.connect_timeout)), "autocommit": True,
            "prepare_threshold": settings.prepare_threshold}


def _begin(settings: Settings, user_id: UUID | None, read_only: bool) -> bytes:
    """BEGIN and the transaction's own settings, as one simple-protocol round trip (several
    statements cannot be prepared: every execute of them says prepare=False). Dates are read as
    ISO and in UTC whatever the role's or database's settings say: psycopg parses no other style."""
    if user_id is not None and not isinstance(user_id, UUID):
        raise InvalidInput(f"transaction(): user_id must be a UUID, not {type(user_id).__name__}",
                           parameter="user_id")
    if not isinstance(read_only, bool):
        raise InvalidInput("transaction(): read_only must be a bool", parameter="read_only")
    statement = sql.SQL("begin{}; select set_config('automl.user_id', {}, true), set_config('datestyle', 'ISO', true),"
                        " set_config('timezone', 'UTC', true), set_config('intervalstyle', 'postgres', true)").format(
        sql.SQL(" read only") if read_only else sql.SQL(""), sql.Literal(str(user_id) if user_id else ""))
    if settings.statement_timeout_ms:
        statement += sql.SQL(", set_config('statement_timeout', {}, true)").format(
            sql.Literal(str(settings.statement_timeout_ms)))
    return statement.as_bytes(None)


def _lost(conn: AnyConnection, exc: psycopg.Error) -> bool:
    """Whether the error means the connection is gone (not a refusal by the server)."""
    return conn.broken or conn.closed or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)


def _ending(conn: AnyConnection, commit: bool) -> tuple[bytes | None, Exception | None]:
    """How the transaction ends: COMMIT; ROLLBACK when asked, or when a statement in it failed (a
    COMMIT would silently roll back, and the caller believe it committed); nothing when the block
    ended it itself or closed the connection (refused: what it did is not what a block promises)."""
    status = conn.info.transaction_status
    if conn.closed:
        return None, TransactionFailed("the block closed its connection: the transaction was rolled back")
    if status == pq.TransactionStatus.IDLE:
        return None, TransactionFailed("the block committed or rolled back itself; its later statements ran"
                                       " outside any transaction") if commit else None
    if commit and status == pq.TransactionStatus.INERROR:
        return ROLLBACK, TransactionFailed("a statement in this transaction failed, so it was rolled back")
    return (COMMIT if commit else ROLLBACK), None


def _ending_failed(conn: AnyConnection, end: bytes, exc: psycopg.Error, error: Exception | None) -> Exception | None:
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


def _prepared_left(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the reset found SQL-level prepared statements (its one row, already received: read
    without a round trip)."""
    while True:
        result = cur.pgresult
        if result and result.status == pq.ExecStatus.TUPLES_OK:
            return result.get_value(0, 0) == b"t"
        if not cur.nextset():
            return False


def _checked_url(url: str | None, settings: Settings, role: str | None) -> tuple[str, str | None]:
    """The URL to connect to, and the runtime role its login must act as (None: the caller chose the URL)."""
    if url is not None:
        if not url.strip():
            raise DatabaseUnavailable("the database URL is empty")
        return url, None
    return resolve_role_url(settings, role or "automl_app"), role or "automl_app"


def _unavailable(url: str, exc: psycopg.Error) -> DatabaseUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailable(f"cannot reach PostgreSQL at {describe(url)}: {first}")


WHO = ("select r.rolsuper or r.rolbypassrls, pg_has_role(current_user, %s, 'member')"
       " from pg_roles r where r.rolname = current_user")


def _refuse_login(url: str, role: str, row: tuple[Any, ...] | None) -> None:
    """A runtime role's Database must not log in as a superuser or bypass row-level security."""
    if row is None or row[0] or not row[1]:
        raise DatabaseUnavailable(f"{describe(url)} does not log in as a member of {role} under row-level security"
                                  " (a superuser or BYPASSRLS login would see every tenant); give the service its"
                                  f" own login, e.g. create role api login in role {role}")


class Database:
    """Synchronous access through a connection pool (20 kept, 10 more on demand, by default)."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, role: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.url, checked_role = _checked_url(url, self.settings, role)
        kwargs = _connect_kwargs(self.settings)
        try:  # fail now, with the server's own words, rather than at the first transaction
            with psycopg.connect(self.url, **kwargs) as probe:
                if checked_role and self.settings.database_url:  # a login the deployment chose: check it
                    _refuse_login(self.url, checked_role, probe.execute(WHO, [checked_role]).fetchone())
        except psycopg.Error as exc:
            raise _unavailable(self.url, exc) from exc
        self.pool: psycopg_pool.ConnectionPool[Connection[Any]] = psycopg_pool.ConnectionPool(
            self.url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, kwargs=kwargs, configure=_configure,
            reset=lambda conn: _restore(conn, self.settings), name="automl_db", open=False)
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
            except psycopg_pool.PoolClosed as exc:
                raise DatabaseUnavailable("the database's pool is closed") from exc
            try:
                conn.execute(begin, prepare=False)
                return conn
            except psycopg.Error as exc:
                self.pool.putconn(conn)  # a broken connection is discarded by the pool
                if not _lost(conn, exc):
                    raise translate(exc) from exc
            except BaseException:  # interrupted (KeyboardInterrupt...): the connection goes back all the same
                self.pool.putconn(conn)
                raise
        raise DatabaseUnavailable(f"no connection to {describe(self.url)} survived BEGIN")

    def _finish(self, conn: Connection[Any], commit: bool) -> None:
        end, error = _ending(conn, commit)
        try:
            if conn.lock.locked():  # a stream() still holds the connection: it can only be dropped
                conn.close()
                error = TransactionFailed("a streaming cursor was still open at the end of the block: rolled back")
            elif end is not None or not conn.closed:
                cur = conn.execute(end or RESET, prepare=False)
                if _prepared_left(cur):
                    conn.execute(b"deallocate all", prepare=False)
        except psycopg.Error as exc:
            if end is not None:
                error = _ending_failed(conn, end, exc, error)
            conn.close()  # what the session still holds is unknown: it is not handed on
        finally:
            self.pool.putconn(conn)  # a broken or closed connection is discarded by the pool
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
        if attempts < 1:
            raise InvalidInput("run(): attempts must be at least 1", parameter="attempts")
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

        async def restore(conn: AsyncConnection[Any]) -> None:
            _restore(conn, settings)

        self.pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] = psycopg_pool.AsyncConnectionPool(
            url, min_size=settings.pool_min_size, max_size=settings.pool_max_size, timeout=settings.pool_timeout,
            kwargs=_connect_kwargs(settings), configure=_configure_async, reset=restore, name="automl_db_async",
            open=False)

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None,
                      role: str | None = None) -> "AsyncDatabase":
        settings = settings or Settings.from_env()
        url, checked_role = _checked_url(url, settings, role)
        try:
            async with await psycopg.AsyncConnection.connect(url, **_connect_kwargs(settings)) as probe:
                if checked_role and settings.database_url:
                    _refuse_login(url, checked_role, await (await probe.execute(WHO, [checked_role])).fetchone())
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
            except psycopg_pool.PoolClosed as exc:
                raise DatabaseUnavailable("the database's pool is closed") from exc
            try:
                await conn.execute(begin, prepare=False)
                return conn
            except psycopg.Error as exc:
                await self.pool.putconn(conn)
                if not _lost(conn, exc):
                    raise translate(exc) from exc
            except BaseException:  # cancelled while BEGIN ran: the connection goes back all the same
                await self.pool.putconn(conn)
                raise
        raise DatabaseUnavailable(f"no connection to {describe(self.url)} survived BEGIN")

    async def _finish(self, conn: AsyncConnection[Any], commit: bool) -> None:
        end, error = _ending(conn, commit)
        try:
            if conn.lock.locked():  # a stream() still holds the connection: it can only be dropped
                await conn.close()
                error = TransactionFailed("a streaming cursor was still open at the end of the block: rolled back")
            elif end is not None or not conn.closed:
                cur = await conn.execute(end or RESET, prepare=False)
                if _prepared_left(cur):
                    await conn.execute(b"deallocate all", prepare=False)
        except psycopg.Error as exc:
            if end is not None:
                error = _ending_failed(conn, end, exc, error)
            await conn.close()  # what the session still holds is unknown: it is not handed on
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
        if attempts < 1:
            raise InvalidInput("run(): attempts must be at least 1", parameter="attempts")
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(user_id) as conn:
                    return await work(conn)
            except (Retryable, CommitOutcomeUnknown) as exc:
                if attempt == attempts or (isinstance(exc, CommitOutcomeUnknown) and not idempotent):
                    raise
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")
