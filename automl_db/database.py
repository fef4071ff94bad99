"""The database objects services hold: a psycopg_pool pool and transactions acting for a user.

    db = Database()                      # DATABASE_URL, else the embedded server as automl_app
    with db.transaction(user_id=uid) as conn:
        job = queries.submit_job(conn, user_id=uid, ...)

A transaction commits when the block ends and rolls back on an exception. Its first round trip is
`BEGIN` together with its settings, all local to it: `automl.user_id` (whom row-level security
lets it act for; '' for nobody), the statement timeout, and the formats values are read in (ISO
dates, UTC). Its last commits; when the block ran anything but the generated queries, it first
resets whatever a statement may have left in the session (`SET`, `set_config(..., false)`, `SET
ROLE`, cursors WITH HOLD, `LISTEN`, prepared statements made with SQL `PREPARE`: see
automl_db.session), so nothing crosses to the next use of the pooled connection (a rolled-back
transaction resets after its `ROLLBACK`). A connection whose end failed is dropped, not reused.
Settings that live inside transactions also hold behind a transaction pooler such as PgBouncer. The
connection belongs to the block: keep no reference to it past the block's end.

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
import functools
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, Connection, generators, pq, sql
from psycopg.adapt import AdaptersMap
from psycopg.rows import tuple_row

from automl_db.config import Settings
from automl_db.errors import (
    AutomlDbError,
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    InvalidInput,
    PoolTimeout,
    ReplicaBehind,
    Retryable,
    TransactionFailed,
    translate,
)
from automl_db.replicas import POSITION_AFTER_COMMIT, REPLAYED, Position, Receipt, Replica, candidates
from automl_db.session import RESET, AsyncTrackedConnection, TrackedConnection
from automl_db.urls import describe, resolve_role_url

T = TypeVar("T")
AnyConnection = Connection[Any] | AsyncConnection[Any]

#: How a block ends: a session it touched is reset first (automl_db.session), one it did not is not.
COMMIT, ROLLBACK = RESET + b"; commit", b"rollback; " + RESET
CLEAN_END = {COMMIT: b"commit", ROLLBACK: b"rollback"}
_HELD = "a streaming cursor or a pipeline was still open at the end of the block: rolled back"
_DONE = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


def _restore(conn: TrackedConnection[Any] | AsyncTrackedConnection[Any], settings: Settings) -> None:
    """What a block may have changed on the connection object itself, back as the pool made it: the
    next block's generated queries must not run through a dumper or loader this one registered."""
    conn.row_factory = tuple_row
    conn.watch()
    conn.prepare_threshold = settings.prepare_threshold
    # psycopg keeps no public way to list or reset these; a fresh map copies the global one lazily
    for handlers in ("_notice_handlers", "_notify_handlers", "_notifies_backlog"):
        with suppress(AttributeError):
            getattr(conn, handlers).clear()
    with suppress(AttributeError):
        conn._adapters = AdaptersMap(psycopg.adapters)


def _connect_kwargs(settings: Settings) -> dict[str, Any]:
    return {"connect_timeout": max(1, round(settings.connect_timeout)), "autocommit": True,
            "prepare_threshold": settings.prepare_threshold}


def _begin(settings: Settings, user_id: UUID | None, read_only: bool = False, replayed: bool = False) -> bytes:
    """BEGIN and the transaction's own settings, as one simple-protocol round trip (several
    statements cannot be prepared: every execute of them says prepare=False). Dates are read as
    ISO and in UTC whatever the role's or database's settings say: psycopg parses no other style.
    `replayed`: the server's replay position comes back in the same round trip, as the last column."""
    if user_id is not None and not isinstance(user_id, UUID):
        raise InvalidInput(f"transaction(): user_id must be a UUID, not {type(user_id).__name__}",
                           parameter="user_id")
    if not isinstance(read_only, bool):
        raise InvalidInput("transaction(): read_only must be a bool", parameter="read_only")
    head, tail = _begin_parts(settings.statement_timeout_ms, read_only, replayed)
    # UUID's own formatting (not a subclass's __str__): hex digits and dashes, nothing to quote
    return head + (UUID.__str__(user_id).encode() if user_id else b"") + tail


@functools.cache
def _begin_parts(statement_timeout_ms: int, read_only: bool, replayed: bool) -> tuple[bytes, bytes]:
    """_begin's statement before and after the acting user's id, composed once per kind of block."""
    statement = sql.SQL("begin{}; select set_config('automl.user_id', '{}', true),"
                        " set_config('datestyle', 'ISO', true), set_config('timezone', 'UTC', true),"
                        " set_config('intervalstyle', 'postgres', true)").format(
        sql.SQL(" read only") if read_only else sql.SQL(""), sql.SQL("\x00"))
    if statement_timeout_ms:
        statement += sql.SQL(", set_config('statement_timeout', {}, true)").format(
            sql.Literal(str(statement_timeout_ms)))
    if read_only:
        # For the session, until the reset that ends the block: a COMMIT inside a read-only block
        # leaves autocommit statements that are read-only too, rather than writes on a primary.
        statement += sql.SQL(", set_config('default_transaction_read_only', 'on', false)")
    if replayed:
        statement += sql.SQL(", ") + sql.SQL(REPLAYED)
    head, tail = statement.as_bytes(None).split(b"\x00")
    return head, tail


def _position(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> Position:
    """The last column of the first result with rows: a position that several statements sent in one
    round trip (BEGIN ...; select ...) put there."""
    while cursor.pgresult is not None and cursor.pgresult.status != pq.ExecStatus.TUPLES_OK and cursor.nextset():
        pass
    if cursor.pgresult is None:
        raise AssertionError("no position in the reply")
    return _position_in(cursor.pgresult)


def _position_in(result: pq.abc.PGresult) -> Position:
    """The position in the last column of a one-row result."""
    if result.status != pq.ExecStatus.TUPLES_OK or result.ntuples != 1:
        raise AssertionError("no position in the reply")
    return Position.parse(bytes(result.get_value(0, result.nfields - 1) or b"0/0").decode())


def _exec(conn: Connection[Any], statement: bytes) -> pq.abc.PGresult:
    """One simple-protocol round trip without a cursor, as psycopg's own commit() makes it (its wait
    loop, so an interrupt cancels the statement): a BEGIN and an untouched block's COMMIT need none
    of a cursor's work, about 60 µs of client time per transaction. The last statement's result."""
    with conn.lock:
        conn.pgconn.send_query(statement)
        results: list[pq.abc.PGresult] = conn.wait(generators.execute(conn.pgconn))
    for result in results:
        if result.status not in _DONE:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    return results[-1]


def _poll_delays(deadline: float) -> Iterator[float]:
    """Pauses between checks of a replica's replay: 1 ms doubling to 25 ms, none past the deadline."""
    delay = 0.001
    while (left := deadline - time.monotonic()) > 0:
        yield min(delay, left)
        delay = min(delay * 2, 0.025)


def _behind(after: Position, replayed: Position, wait: float) -> ReplicaBehind:
    return ReplicaBehind(f"the replica has replayed the primary's WAL up to {replayed}, not yet {after}, after"
                         f" waiting {wait:g}s", position=after, replayed=replayed)


def _lost(conn: AnyConnection, exc: psycopg.Error) -> bool:
    """Whether the error means the connection is gone (not a refusal by the server)."""
    return conn.broken or conn.closed or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)


def _ending(conn: AnyConnection, commit: bool) -> tuple[bytes | None, Exception | None]:
    """How the transaction ends: COMMIT; ROLLBACK when asked, or when a statement in it failed (a
    COMMIT would silently roll back, and the caller believe it committed); nothing when the
    connection is gone (lost: the server rolled back) or the block ended the transaction or closed
    the connection itself (refused: what it did is not what a block promises). The error is the
    one to raise when the block itself raised none."""
    if conn.broken:
        lost = Retryable("the connection was lost before the transaction ended: nothing committed")
        return None, lost if commit else None
    if conn.closed:
        closed = TransactionFailed("the block closed its connection: the transaction was rolled back")
        return None, closed if commit else None
    if not conn.autocommit:
        # psycopg would wrap the reset in a transaction of its own, which the pool then rolls back
        switched = TransactionFailed("the block ended its transaction and turned autocommit off: anything it ran"
                                     " since is rolled back, and the connection is not reused")
        return None, switched if commit else None
    status = conn.info.transaction_status
    if status == pq.TransactionStatus.IDLE:
        itself = TransactionFailed("the block committed or rolled back itself; its later statements ran outside"
                                   " any transaction")
        return None, itself if commit else None
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


def _single_values(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> list[bytes | None]:
    """The one value of each result with rows, in order (already received: read without a round trip)."""
    values = []
    while True:
        result = cur.pgresult
        if result and result.status == pq.ExecStatus.TUPLES_OK and result.ntuples == 1:
            values.append(result.get_value(0, result.nfields - 1))
        if not cur.nextset():
            return values


def _ended(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], receipt: Receipt | None, touched: bool) -> bool:
    """Read the end's reply: fill the receipt with the commit's position (the last value) when it
    asked for one, and say whether the reset (when the block touched the session) found SQL-level
    prepared statements (the first)."""
    values = _single_values(cur)
    if receipt is not None:
        receipt.position = Position.parse(bytes(values[-1] or b"0/0").decode())
    return touched and bool(values) and values[0] == b"t"


def _where(pool: psycopg_pool.ConnectionPool[Any] | psycopg_pool.AsyncConnectionPool[Any]) -> str:
    return describe(pool.conninfo) if isinstance(pool.conninfo, str) else pool.name


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


Pool = psycopg_pool.ConnectionPool[TrackedConnection[Any]]
AsyncPool = psycopg_pool.AsyncConnectionPool[AsyncTrackedConnection[Any]]


def _checked_urls(url: str | None, settings: Settings, role: str | None,
                  replicas: Sequence[str] | None) -> tuple[str, tuple[str, ...], str | None]:
    """The primary's URL, the replicas', and the runtime role their logins must act as (None: the
    caller chose the URLs, and they are its responsibility)."""
    primary, checked_role = _checked_url(url, settings, role)
    if replicas is not None:
        return primary, tuple(replicas), checked_role
    return primary, settings.replica_urls, checked_role


def _ending_statement(end: bytes | None, receipt: Receipt | None, touched: bool) -> bytes:
    """The end's round trip: `end` (COMMIT, ROLLBACK) without its reset when the block left the session
    untouched, then the commit's position when a receipt asks for it; only the reset when the block
    ended its transaction itself."""
    if end is None:
        return RESET
    statement = end if touched else CLEAN_END[end]
    if end is COMMIT and receipt is not None:
        statement += b"; " + POSITION_AFTER_COMMIT
    return statement


class Database:
    """Synchronous access through a connection pool (20 kept, 10 more on demand, by default), and one
    pool of the same size per replica."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, role: str | None = None,
                 replicas: Sequence[str] | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.url, replica_urls, checked_role = _checked_urls(url, self.settings, role, replicas)
        kwargs = _connect_kwargs(self.settings)
        for target in (self.url, *replica_urls):
            try:  # fail now, with the server's own words, rather than at the first transaction
                with psycopg.connect(target, **kwargs) as probe:
                    if checked_role and (self.settings.database_url or target != self.url):
                        # a login the deployment chose: check it
                        _refuse_login(target, checked_role, probe.execute(WHO, [checked_role]).fetchone())
            except psycopg.Error as exc:
                raise _unavailable(target, exc) from exc
        self.pool = self._pool(self.url, "automl_db")
        self.replicas = [Replica(u, self._pool(u, f"automl_db_replica_{i}")) for i, u in enumerate(replica_urls)]
        self._turns = itertools.count()
        for pool in (self.pool, *(r.pool for r in self.replicas)):
            pool.open()

    def _pool(self, url: str, name: str) -> Pool:
        return psycopg_pool.ConnectionPool(
            url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, kwargs=_connect_kwargs(self.settings),
            reset=lambda conn: _restore(conn, self.settings), name=name, open=False,
            connection_class=TrackedConnection)

    def close(self) -> None:
        for replica in self.replicas:
            replica.pool.close()
        self.pool.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, user_id: UUID | None, read_only: bool, pool: Pool | None = None, timeout: float | None = None,
               replayed: bool = False) -> tuple[TrackedConnection[Any], Position | None]:
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
            except psycopg_pool.PoolClosed as exc:
                raise DatabaseUnavailable("the database's pool is closed") from exc
            try:
                result = _exec(conn, begin)
                conn.session_touched = read_only  # a read-only block sets default_transaction_read_only
                return conn, _position_in(result) if replayed else None
            except psycopg.Error as exc:
                pool.putconn(conn)  # a broken connection is discarded by the pool
                if not _lost(conn, exc):
                    raise translate(exc) from exc
            except BaseException:  # interrupted (KeyboardInterrupt...): the connection goes back all the same
                pool.putconn(conn)
                raise
        raise DatabaseUnavailable(f"no connection to {_where(pool)} survived BEGIN")

    def _finish(self, conn: TrackedConnection[Any], commit: bool, pool: Pool | None = None,
                receipt: Receipt | None = None) -> None:
        pool = pool or self.pool
        end, error = _ending(conn, commit)
        try:
            if conn.lock.locked() or conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
                conn.close()  # a stream() still holds the connection, or a pipeline is open: it can only be dropped
                error = TransactionFailed(_HELD)
            elif not conn.autocommit:
                conn.close()
            elif end is not None or not conn.closed:
                touched = end is None or conn.session_touched
                statement = _ending_statement(end, receipt, touched)
                if end is COMMIT and not touched:
                    result = _exec(conn, statement)
                    if receipt is not None:
                        receipt.position = _position_in(result)
                # psycopg must see a ROLLBACK: it then forgets its prepared statements, whose cached
                # plans may be what failed ("cached plan must not change result type")
                elif _ended(conn.execute(statement, prepare=False), receipt if end is COMMIT else None, touched):
                    conn.execute(b"deallocate all", prepare=False)
        except psycopg.Error as exc:
            if end is not None:
                error = _ending_failed(conn, end, exc, error)
            conn.close()  # what the session still holds is unknown: it is not handed on
        except BaseException:  # interrupted while it ended: the same
            conn.close()
            raise
        finally:
            pool.putconn(conn)  # a broken or closed connection is discarded by the pool
        if error is not None:
            raise error

    @contextmanager
    def _block(self, conn: TrackedConnection[Any], pool: Pool,
               receipt: Receipt | None = None) -> Iterator[TrackedConnection[Any]]:
        try:
            yield conn
        except psycopg.Error as exc:
            self._finish(conn, commit=False, pool=pool)
            raise translate(exc) from exc
        except BaseException:
            self._finish(conn, commit=False, pool=pool)
            raise
        self._finish(conn, commit=True, pool=pool, receipt=receipt)

    @contextmanager
    def transaction(self, user_id: UUID | None = None, *, read_only: bool = False,
                    receipt: Receipt | None = None) -> Iterator[Connection[Any]]:
        """A connection in a transaction on the primary, acting for user_id when given. `receipt`: once
        committed, its position is set, for a later `read(after=...)` (read-your-writes)."""
        conn, _ = self._start(user_id, read_only)
        with self._block(conn, self.pool, receipt) as block:
            yield block

    @contextmanager
    def read(self, user_id: UUID | None = None, *, after: Position | None = None,
             fallback: bool = True) -> Iterator[Connection[Any]]:
        """A connection in a read-only transaction on a replica (round robin), or on the primary when no
        replica is configured. `after`: a position a write handed back; the replica must have replayed
        it, and the read waits up to `replica_wait_timeout` for that. A replica still behind by then, or
        that gives no connection within it, leaves the read to the primary, or, with fallback=False, to
        ReplicaBehind (or the replica's Retryable error)."""
        conn, pool = self._start_read(user_id, after, fallback)
        with self._block(conn, pool) as block:
            yield block

    def _start_read(self, user_id: UUID | None, after: Position | None,
                    fallback: bool) -> tuple[TrackedConnection[Any], Pool]:
        wait = self.settings.replica_wait_timeout
        deadline = time.monotonic() + wait
        error: AutomlDbError | None = None
        for replica in candidates(self.replicas, next(self._turns), time.monotonic(), include_down=not fallback):
            try:
                conn, replayed = self._start(user_id, True, replica.pool, max(deadline - time.monotonic(), 0.001),
                                             replayed=after is not None)
                if after is None or replayed is None:
                    return conn, replica.pool
                try:
                    replayed = self._catch_up(conn, user_id, after, replayed, deadline)
                except BaseException:  # lost, or interrupted while it waited: the pool resets or drops it
                    replica.pool.putconn(conn)
                    raise
                if after.reached_by(replayed):
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

    def _catch_up(self, conn: TrackedConnection[Any], user_id: UUID | None, after: Position, replayed: Position,
                  deadline: float) -> Position:
        """Check the replica's replay until it reaches `after` or the deadline passes; return the last
        position seen, `conn` in a transaction begun after that check (a new one per check, so that
        even a repeatable-read snapshot follows the replay). Nothing ran in it yet: nothing to reset."""
        again = b"rollback; " + _begin(self.settings, user_id, True, replayed=True)
        for delay in _poll_delays(deadline):
            if after.reached_by(replayed):
                break
            time.sleep(delay)
            try:
                replayed = _position(conn.execute(again, prepare=False))
            except psycopg.Error as exc:
                raise translate(exc) from exc
        return replayed

    def run(self, work: Callable[[Connection[Any]], T], *, user_id: UUID | None = None, idempotent: bool = False,
            attempts: int = 3, receipt: Receipt | None = None) -> T:
        """`work(conn)` in a transaction, run again (up to `attempts` times, with jittered backoff) when
        it was refused as Retryable (nothing committed: deadlock, serialization failure, lost
        connection, busy pool) and, only when `idempotent`, when the commit's outcome is unknown.
        `receipt` gets the position of the attempt that committed."""
        if attempts < 1:
            raise InvalidInput("run(): attempts must be at least 1", parameter="attempts")
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

    def _pool(self, url: str, name: str) -> AsyncPool:
        async def restore(conn: AsyncTrackedConnection[Any]) -> None:
            _restore(conn, self.settings)

        return psycopg_pool.AsyncConnectionPool(
            url, min_size=self.settings.pool_min_size, max_size=self.settings.pool_max_size,
            timeout=self.settings.pool_timeout, kwargs=_connect_kwargs(self.settings),
            reset=restore, name=name, open=False, connection_class=AsyncTrackedConnection)

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None, role: str | None = None,
                      replicas: Sequence[str] | None = None) -> "AsyncDatabase":
        settings = settings or Settings.from_env()
        url, replica_urls, checked_role = _checked_urls(url, settings, role, replicas)
        for target in (url, *replica_urls):
            try:
                async with await psycopg.AsyncConnection.connect(target, **_connect_kwargs(settings)) as probe:
                    if checked_role and (settings.database_url or target != url):
                        _refuse_login(target, checked_role, await (await probe.execute(WHO, [checked_role])).fetchone())
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

    async def _start(self, user_id: UUID | None, read_only: bool, pool: AsyncPool | None = None,
                     timeout: float | None = None,
                     replayed: bool = False) -> tuple[AsyncTrackedConnection[Any], Position | None]:
        pool = pool or self.pool
        begin = _begin(self.settings, user_id, read_only, replayed)
        for _ in range(self.settings.pool_max_size + 1):
            try:
                conn = await pool.getconn(timeout)
            except psycopg_pool.PoolTimeout as exc:
                raise PoolTimeout(f"no free connection to {_where(pool)} within"
                                  f" {timeout or self.settings.pool_timeout:g}s") from exc
            except psycopg_pool.PoolClosed as exc:
                raise DatabaseUnavailable("the database's pool is closed") from exc
            try:
                cursor = await conn.execute(begin, prepare=False)
                conn.session_touched = read_only  # a read-only block sets default_transaction_read_only
                return conn, _position(cursor) if replayed else None
            except psycopg.Error as exc:
                await pool.putconn(conn)
                if not _lost(conn, exc):
                    raise translate(exc) from exc
            except BaseException:  # cancelled while BEGIN ran: the connection goes back all the same
                await pool.putconn(conn)
                raise
        raise DatabaseUnavailable(f"no connection to {_where(pool)} survived BEGIN")

    async def _finish(self, conn: AsyncTrackedConnection[Any], commit: bool, pool: AsyncPool | None = None,
                      receipt: Receipt | None = None) -> None:
        pool = pool or self.pool
        end, error = _ending(conn, commit)
        try:
            if conn.lock.locked() or conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
                await conn.close()  # a stream() still holds the connection, or a pipeline is open
                error = TransactionFailed(_HELD)
            elif not conn.autocommit:
                await conn.close()
            elif end is not None or not conn.closed:
                touched = end is None or conn.session_touched
                cursor = await conn.execute(_ending_statement(end, receipt, touched), prepare=False)
                if _ended(cursor, receipt if end is COMMIT else None, touched):
                    await conn.execute(b"deallocate all", prepare=False)
        except psycopg.Error as exc:
            if end is not None:
                error = _ending_failed(conn, end, exc, error)
            await conn.close()  # what the session still holds is unknown: it is not handed on
        except BaseException:  # cancelled while it ended: the same
            await conn.close()
            raise
        finally:
            await pool.putconn(conn)
        if error is not None:
            raise error

    @asynccontextmanager
    async def _block(self, conn: AsyncTrackedConnection[Any], pool: AsyncPool,
                     receipt: Receipt | None = None) -> AsyncIterator[AsyncTrackedConnection[Any]]:
        try:
            yield conn
        except psycopg.Error as exc:
            await self._finish(conn, commit=False, pool=pool)
            raise translate(exc) from exc
        except BaseException:
            await self._finish(conn, commit=False, pool=pool)
            raise
        await self._finish(conn, commit=True, pool=pool, receipt=receipt)

    @asynccontextmanager
    async def transaction(self, user_id: UUID | None = None, *, read_only: bool = False,
                          receipt: Receipt | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction on the primary, acting for user_id when given (see Database)."""
        conn, _ = await self._start(user_id, read_only)
        async with self._block(conn, self.pool, receipt) as block:
            yield block

    @asynccontextmanager
    async def read(self, user_id: UUID | None = None, *, after: Position | None = None,
                   fallback: bool = True) -> AsyncIterator[AsyncConnection[Any]]:
        """A read-only transaction on a replica, or on the primary (see Database.read)."""
        conn, pool = await self._start_read(user_id, after, fallback)
        async with self._block(conn, pool) as block:
            yield block

    async def _start_read(self, user_id: UUID | None, after: Position | None,
                          fallback: bool) -> tuple[AsyncTrackedConnection[Any], AsyncPool]:
        wait = self.settings.replica_wait_timeout
        deadline = time.monotonic() + wait
        error: AutomlDbError | None = None
        for replica in candidates(self.replicas, next(self._turns), time.monotonic(), include_down=not fallback):
            try:
                conn, replayed = await self._start(user_id, True, replica.pool,
                                                   max(deadline - time.monotonic(), 0.001), replayed=after is not None)
                if after is None or replayed is None:
                    return conn, replica.pool
                try:
                    replayed = await self._catch_up(conn, user_id, after, replayed, deadline)
                except BaseException:  # lost, or cancelled while it waited: the pool resets or drops it
                    await replica.pool.putconn(conn)
                    raise
                if after.reached_by(replayed):
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

    async def _catch_up(self, conn: AsyncTrackedConnection[Any], user_id: UUID | None, after: Position,
                        replayed: Position, deadline: float) -> Position:
        again = b"rollback; " + _begin(self.settings, user_id, True, replayed=True)
        for delay in _poll_delays(deadline):
            if after.reached_by(replayed):
                break
            await asyncio.sleep(delay)
            try:
                replayed = _position(await conn.execute(again, prepare=False))
            except psycopg.Error as exc:
                raise translate(exc) from exc
        return replayed

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]], *, user_id: UUID | None = None,
                  idempotent: bool = False, attempts: int = 3, receipt: Receipt | None = None) -> T:
        """The async twin of Database.run."""
        if attempts < 1:
            raise InvalidInput("run(): attempts must be at least 1", parameter="attempts")
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(user_id, receipt=receipt) as conn:
                    return await work(conn)
            except (Retryable, CommitOutcomeUnknown) as exc:
                if attempt == attempts or (isinstance(exc, CommitOutcomeUnknown) and not idempotent):
                    raise
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")
