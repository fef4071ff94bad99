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

With replicas configured (`AUTOML_DB_REPLICA_URLS`), `read()` runs a read-only transaction on a hot
standby, and on the primary when none is configured or none can serve it; given the position a
write handed back (a Receipt), it waits for the replica to have replayed it (read-your-writes, see
automl_db.replicas).
"""

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
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
    AutomlDbError,
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    PoolTimeout,
    ReplicaBehind,
    Retryable,
    TransactionFailed,
    translate,
)
from automl_db.replicas import POSITION_AFTER_COMMIT, REPLAYED, Position, Receipt, Replica, candidates

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


def _begin(settings: Settings, user_id: UUID | None, read_only: bool = False, replayed: bool = False) -> bytes:
    """BEGIN and the transaction's own settings, as one simple-protocol round trip (several
    statements cannot be prepared: every execute of them says prepare=False). `replayed`: the
    server's replay position comes back in the same round trip, as the last column."""
    statement = sql.SQL("begin{}; select set_config('automl.user_id', {}, true)").format(
        sql.SQL(" read only") if read_only else sql.SQL(""), sql.Literal(str(user_id) if user_id else ""))
    if settings.statement_timeout_ms:
        statement += sql.SQL(", set_config('statement_timeout', {}, true)").format(
            sql.Literal(str(settings.statement_timeout_ms)))
    if replayed:
        statement += sql.SQL(", ") + sql.SQL(REPLAYED)
    return statement.as_bytes(None)


def _position(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> Position:
    """The last column of the first result with rows: a position that several statements sent in one
    round trip (BEGIN ...; select ...) put there."""
    while cursor.pgresult is not None and cursor.pgresult.status != pq.ExecStatus.TUPLES_OK and cursor.nextset():
        pass
    if cursor.pgresult is None or cursor.pgresult.status != pq.ExecStatus.TUPLES_OK or cursor.pgresult.ntuples != 1:
        raise AssertionError("no position in the reply")
    value = cursor.pgresult.get_value(0, cursor.pgresult.nfields - 1)
    return Position.parse(bytes(value or b"0/0").decode())


def _poll_delays(deadline: float) -> Iterator[float]:
    """Pauses between checks of a replica's replay: 1 ms doubling to 25 ms, none past the deadline."""
    delay = 0.001
    while (left := deadline - time.monotonic()) > 0:
        yield min(delay, left)
        delay = min(delay * 2, 0.025)


def _behind(after: Position, replayed: Position, wait: float) -> ReplicaBehind:
    return ReplicaBehind(f"the replica has replayed the primary's WAL up to {replayed}, not yet {after}, after"
                         f" waiting {wait:g}s", position=after, replayed=replayed)


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


def _where(pool: psycopg_pool.ConnectionPool[Any] | psycopg_pool.AsyncConnectionPool[Any]) -> str:
    return describe(pool.conninfo) if isinstance(pool.conninfo, str) else pool.name


def _unavailable(url: str, exc: psycopg.Error) -> DatabaseUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailable(f"cannot reach PostgreSQL at {describe(url)}: {first}")


class Database:
    """Synchronous access through a connection pool (20 kept, 10 more on demand, by default), and one
    pool of the same size per replica."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, role: str = "automl_app",
                 replicas: Sequence[str] | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.url = url or resolve_role_url(self.settings, role)
        replica_urls = tuple(self.settings.replica_urls if replicas is None else replicas)
        kwargs = _connect_kwargs(self.settings)
        for target in (self.url, *replica_urls):
            try:  # fail now, with the server's own words, rather than at the first transaction
                psycopg.connect(target, **kwargs).close()
            except psycopg.Error as exc:
                raise _unavailable(target, exc) from exc
        self.pool = self._pool(self.url, "automl_db")
        self.replicas = [Replica(u, self._pool(u, f"automl_db_replica_{i}")) for i, u in enumerate(replica_urls)]
        self._turns = itertools.count()
        for pool in (self.pool, *(r.pool for r in self.replicas)):
            pool.open()

    def _pool(self, url: str, name: str) -> psycopg_pool.ConnectionPool[Connection[Any]]:
        return psycopg_pool.ConnectionPool(
            url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, kwargs=_connect_kwargs(self.settings), configure=_configure,
            name=name, open=False)

    def close(self) -> None:
        for replica in self.replicas:
            replica.pool.close()
        self.pool.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, user_id: UUID | None, read_only: bool, pool: psycopg_pool.ConnectionPool[Connection[Any]] | None
               = None, timeout: float | None = None, replayed: bool = False) -> tuple[Connection[Any], Position | None]:
        """A connection of `pool` (the primary's by default) in a new transaction, and the server's replay
        position when asked for."""
        pool = pool or self.pool
        begin = _begin(self.settings, user_id, read_only, replayed)
        for _ in range(self.settings.pool_max_size + 1):
            try:
                conn = pool.getconn(timeout)
            except psycopg_pool.PoolTimeout as exc:
                raise PoolTimeout(f"no free connection to {_where(pool)} within"
                                  f" {timeout or self.settings.pool_timeout:g}s") from exc
            try:
                cursor = conn.execute(begin, prepare=False)
                return conn, _position(cursor) if replayed else None
            except psycopg.Error as exc:
                pool.putconn(conn)  # a broken connection is discarded by the pool
                if not _lost(conn, exc):
                    raise translate(exc) from exc
        raise DatabaseUnavailable(f"no connection to {_where(pool)} survived BEGIN")

    def _finish(self, conn: Connection[Any], commit: bool, pool: psycopg_pool.ConnectionPool[Connection[Any]] | None
                = None, receipt: Receipt | None = None) -> None:
        pool = pool or self.pool
        end, error = _ending(conn, commit)
        locate = receipt is not None and end is COMMIT
        try:
            cursor = conn.execute(end + (POSITION_AFTER_COMMIT if locate else b"") + RESET, prepare=False)
            if receipt is not None and locate:
                receipt.position = _position(cursor)
        except psycopg.Error as exc:
            error = _ending_failed(conn, end, exc, error)
            if not _lost(conn, exc):
                with suppress(psycopg.Error):  # a refused COMMIT ended the transaction; reset the session still
                    conn.execute(RESET, prepare=False)
        finally:
            pool.putconn(conn)  # a broken connection is discarded by the pool
        if error is not None:
            raise error

    @contextmanager
    def transaction(self, user_id: UUID | None = None, *, read_only: bool = False,
                    receipt: Receipt | None = None) -> Iterator[Connection[Any]]:
        """A connection in a transaction on the primary, acting for user_id when given. `receipt`: once
        committed, its position is set, for a later `read(after=...)` (read-your-writes)."""
        conn, _ = self._start(user_id, read_only)
        try:
            yield conn
        except psycopg.Error as exc:
            self._finish(conn, commit=False)
            raise translate(exc) from exc
        except BaseException:
            self._finish(conn, commit=False)
            raise
        self._finish(conn, commit=True, receipt=receipt)

    @contextmanager
    def read(self, user_id: UUID | None = None, *, after: Position | None = None,
             fallback: bool = True) -> Iterator[Connection[Any]]:
        """A connection in a read-only transaction on a replica (round robin), or on the primary when no
        replica is configured. `after`: a position a write handed back; the replica must have replayed
        it, and the read waits up to `replica_wait_timeout` for that. A replica still behind by then, or
        that gives no connection within it, leaves the read to the primary, or, with fallback=False, to
        ReplicaBehind (or the replica's Retryable error)."""
        conn, pool = self._start_read(user_id, after, fallback)
        try:
            yield conn
        except psycopg.Error as exc:
            self._finish(conn, commit=False, pool=pool)
            raise translate(exc) from exc
        except BaseException:
            self._finish(conn, commit=False, pool=pool)
            raise
        self._finish(conn, commit=True, pool=pool)

    def _start_read(self, user_id: UUID | None, after: Position | None,
                    fallback: bool) -> tuple[Connection[Any], psycopg_pool.ConnectionPool[Connection[Any]]]:
        wait = self.settings.replica_wait_timeout
        deadline = time.monotonic() + wait
        error: AutomlDbError | None = None
        for replica in candidates(self.replicas, next(self._turns), time.monotonic(), include_down=not fallback):
            try:
                conn, replayed = self._start(user_id, True, replica.pool, max(deadline - time.monotonic(), 0.001),
                                             replayed=after is not None)
                if after is None or replayed is None:
                    return conn, replica.pool
                replayed = self._catch_up(conn, replica.pool, user_id, after, replayed, deadline)
                if replayed >= after:
                    return conn, replica.pool
                self._finish(conn, commit=False, pool=replica.pool)
                error = _behind(after, replayed, wait)
                break  # this replica had the whole bound
            except (Retryable, DatabaseUnavailable) as exc:
                # unreachable, or its pool exhausted: leave it out for a while and try the next one
                replica.down_until = time.monotonic() + self.settings.replica_retry_after
                error = exc
                if time.monotonic() >= deadline:
                    break
        if error is None or fallback:
            conn, _ = self._start(user_id, True)
            return conn, self.pool
        raise error

    def _catch_up(self, conn: Connection[Any], pool: psycopg_pool.ConnectionPool[Connection[Any]],
                  user_id: UUID | None, after: Position, replayed: Position, deadline: float) -> Position:
        """Check the replica's replay until it reaches `after` or the deadline passes; return the last
        position seen, `conn` in a transaction begun after that check (a new one per check, so that
        even a repeatable-read snapshot follows the replay)."""
        again = ROLLBACK + _begin(self.settings, user_id, True, replayed=True)
        for delay in _poll_delays(deadline):
            if replayed >= after:
                break
            time.sleep(delay)
            try:
                replayed = _position(conn.execute(again, prepare=False))
            except psycopg.Error as exc:
                pool.putconn(conn)
                raise translate(exc) from exc
        return replayed

    def run(self, work: Callable[[Connection[Any]], T], *, user_id: UUID | None = None, idempotent: bool = False,
            attempts: int = 3, receipt: Receipt | None = None) -> T:
        """`work(conn)` in a transaction, run again (up to `attempts` times, with jittered backoff) when
        it was refused as Retryable (nothing committed: deadlock, serialization failure, lost
        connection, busy pool) and, only when `idempotent`, when the commit's outcome is unknown.
        `receipt` gets the position of the attempt that committed."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction(user_id, receipt=receipt) as conn:
                    return work(conn)
            except (Retryable, CommitOutcomeUnknown) as exc:
                if attempt == attempts or (isinstance(exc, CommitOutcomeUnknown) and not idempotent):
                    raise
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")


class AsyncDatabase:
    """Asynchronous access through a connection pool (and one per replica); open it with
    `await AsyncDatabase.connect()`."""

    def __init__(self, url: str, settings: Settings, replicas: Sequence[str] = ()) -> None:
        self.settings = settings
        self.url = url
        self.pool = self._pool(url, "automl_db_async")
        self.replicas = [Replica(u, self._pool(u, f"automl_db_async_replica_{i}")) for i, u in enumerate(replicas)]
        self._turns = itertools.count()

    def _pool(self, url: str, name: str) -> psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]]:
        return psycopg_pool.AsyncConnectionPool(
            url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, kwargs=_connect_kwargs(self.settings), configure=_configure_async,
            name=name, open=False)

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None, role: str = "automl_app",
                      replicas: Sequence[str] | None = None) -> "AsyncDatabase":
        settings = settings or Settings.from_env()
        url = url or resolve_role_url(settings, role)
        replica_urls = tuple(settings.replica_urls if replicas is None else replicas)
        for target in (url, *replica_urls):
            try:
                await (await psycopg.AsyncConnection.connect(target, **_connect_kwargs(settings))).close()
            except psycopg.Error as exc:
                raise _unavailable(target, exc) from exc
        db = cls(url, settings, replica_urls)
        for pool in (db.pool, *(r.pool for r in db.replicas)):
            await pool.open()
        return db

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.pool.close()
        await self.pool.close()

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self, user_id: UUID | None, read_only: bool,
                     pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] | None = None,
                     timeout: float | None = None,
                     replayed: bool = False) -> tuple[AsyncConnection[Any], Position | None]:
        pool = pool or self.pool
        begin = _begin(self.settings, user_id, read_only, replayed)
        for _ in range(self.settings.pool_max_size + 1):
            try:
                conn = await pool.getconn(timeout)
            except psycopg_pool.PoolTimeout as exc:
                raise PoolTimeout(f"no free connection to {_where(pool)} within"
                                  f" {timeout or self.settings.pool_timeout:g}s") from exc
            try:
                cursor = await conn.execute(begin, prepare=False)
                return conn, _position(cursor) if replayed else None
            except psycopg.Error as exc:
                await pool.putconn(conn)
                if not _lost(conn, exc):
                    raise translate(exc) from exc
        raise DatabaseUnavailable(f"no connection to {_where(pool)} survived BEGIN")

    async def _finish(self, conn: AsyncConnection[Any], commit: bool,
                      pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] | None = None,
                      receipt: Receipt | None = None) -> None:
        pool = pool or self.pool
        end, error = _ending(conn, commit)
        locate = receipt is not None and end is COMMIT
        try:
            cursor = await conn.execute(end + (POSITION_AFTER_COMMIT if locate else b"") + RESET, prepare=False)
            if receipt is not None and locate:
                receipt.position = _position(cursor)
        except psycopg.Error as exc:
            error = _ending_failed(conn, end, exc, error)
            if not _lost(conn, exc):
                with suppress(psycopg.Error):
                    await conn.execute(RESET, prepare=False)
        finally:
            await pool.putconn(conn)
        if error is not None:
            raise error

    @asynccontextmanager
    async def transaction(self, user_id: UUID | None = None, *, read_only: bool = False,
                          receipt: Receipt | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction on the primary, acting for user_id when given (see Database)."""
        conn, _ = await self._start(user_id, read_only)
        try:
            yield conn
        except psycopg.Error as exc:
            await self._finish(conn, commit=False)
            raise translate(exc) from exc
        except BaseException:
            await self._finish(conn, commit=False)
            raise
        await self._finish(conn, commit=True, receipt=receipt)

    @asynccontextmanager
    async def read(self, user_id: UUID | None = None, *, after: Position | None = None,
                   fallback: bool = True) -> AsyncIterator[AsyncConnection[Any]]:
        """A read-only transaction on a replica, or on the primary (see Database.read)."""
        conn, pool = await self._start_read(user_id, after, fallback)
        try:
            yield conn
        except psycopg.Error as exc:
            await self._finish(conn, commit=False, pool=pool)
            raise translate(exc) from exc
        except BaseException:
            await self._finish(conn, commit=False, pool=pool)
            raise
        await self._finish(conn, commit=True, pool=pool)

    async def _start_read(self, user_id: UUID | None, after: Position | None, fallback: bool
                          ) -> tuple[AsyncConnection[Any], psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]]]:
        wait = self.settings.replica_wait_timeout
        deadline = time.monotonic() + wait
        error: AutomlDbError | None = None
        for replica in candidates(self.replicas, next(self._turns), time.monotonic(), include_down=not fallback):
            try:
                conn, replayed = await self._start(user_id, True, replica.pool,
                                                   max(deadline - time.monotonic(), 0.001), replayed=after is not None)
                if after is None or replayed is None:
                    return conn, replica.pool
                replayed = await self._catch_up(conn, replica.pool, user_id, after, replayed, deadline)
                if replayed >= after:
                    return conn, replica.pool
                await self._finish(conn, commit=False, pool=replica.pool)
                error = _behind(after, replayed, wait)
                break
            except (Retryable, DatabaseUnavailable) as exc:
                replica.down_until = time.monotonic() + self.settings.replica_retry_after
                error = exc
                if time.monotonic() >= deadline:
                    break
        if error is None or fallback:
            conn, _ = await self._start(user_id, True)
            return conn, self.pool
        raise error

    async def _catch_up(self, conn: AsyncConnection[Any], pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]],
                        user_id: UUID | None, after: Position, replayed: Position, deadline: float) -> Position:
        again = ROLLBACK + _begin(self.settings, user_id, True, replayed=True)
        for delay in _poll_delays(deadline):
            if replayed >= after:
                break
            await asyncio.sleep(delay)
            try:
                replayed = _position(await conn.execute(again, prepare=False))
            except psycopg.Error as exc:
                await pool.putconn(conn)
                raise translate(exc) from exc
        return replayed

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]], *, user_id: UUID | None = None,
                  idempotent: bool = False, attempts: int = 3, receipt: Receipt | None = None) -> T:
        """The async twin of Database.run."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(user_id, receipt=receipt) as conn:
                    return await work(conn)
            except (Retryable, CommitOutcomeUnknown) as exc:
                if attempt == attempts or (isinstance(exc, CommitOutcomeUnknown) and not idempotent):
                    raise
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")
