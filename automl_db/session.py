"""What a transaction may leave in the pooled session, and the reset that clears it.

A block's statements run on a pooled connection that the next block reuses, so a statement that
changes the session (`SET`, `set_config(..., false)`, `SET ROLE`, `LISTEN`, `PREPARE`, a cursor
WITH HOLD) must not outlive its block. Resetting costs six statements more in the block's last
round trip; most blocks run only the generated queries, none of which touches the session. So the pool's
connections note what they exchange with the server: anything but a generated query run by the
cursor class the pool sets (a statement of the block's own, a COPY, another cursor class, a
server-side cursor, a savepoint, a commit) marks the session as touched, and only a touched session
is reset when its block ends. What bypasses psycopg altogether (libpq itself, via `conn.pgconn`) is
not seen: that is the one way left to leak session state.
"""

import asyncio
import functools
import importlib
import pkgutil
import threading
from typing import Any, Self, TypeVar

from psycopg import AsyncConnection, AsyncCursor, Connection, Cursor
from psycopg.abc import Params, PQGen
from psycopg.rows import Row

RV = TypeVar("RV")

#: The session as it was when it connected, in the round trip that ends a touched block. Before a
#: COMMIT, inside the transaction: the COMMIT then runs under the default settings, not a 1 ms
#: statement_timeout the block left, and a reset that fails (cancelled) leaves nothing committed, so
#: an error there is never mistaken for a refused commit. After a ROLLBACK, since an aborted
#: transaction runs nothing else. The select says whether SQL-level prepared statements were left
#: (psycopg's own are protocol-level): then a DEALLOCATE ALL follows, which psycopg notices and
#: clears its cache for. (The function behind the pg_prepared_statements view: the view's rewrite
#: costs as much again as the call, on every reset.)
RESET = (b"reset session authorization; reset all; reset role; close all; unlisten *;"
         b" select exists (select from pg_catalog.pg_prepared_statement() where from_sql)")


@functools.cache
def generated() -> frozenset[str]:
    """The SQL of every generated query (automl_db.queries), as the runtime sends it: none of them
    changes the session. Imported late: the query modules import this package."""
    from automl_db import queries
    from automl_db.runtime import script_text

    statements: set[str] = set()
    for module in pkgutil.iter_modules(queries.__path__):
        for name, value in vars(importlib.import_module(f"{queries.__name__}.{module.name}")).items():
            if name.isupper() and isinstance(value, str):
                statements.update((value, script_text(value)))
    return frozenset(statements)


class TrackedCursor(Cursor[Row]):
    """A client-side cursor that vouches for the generated queries: while it runs one, its connection
    does not count the round trips as touching the session."""

    def execute(self, query: Any, params: Params | None = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> Self:
        conn = self._conn
        if query.__class__ is not str or query not in generated() or not isinstance(conn, TrackedConnection):
            return super().execute(query, params, prepare=prepare, binary=binary)
        conn.vouched = threading.get_ident()
        try:
            return super().execute(query, params, prepare=prepare, binary=binary)
        finally:
            conn.vouched = None


class TrackedConnection(Connection[Row]):
    """The pool's connections. Every exchange with the server that psycopg makes goes through
    `wait()`: one that no TrackedCursor vouched for (a statement of the block's own, a COPY, a cursor
    of another class, a server-side cursor, a savepoint...) marks the session as touched. The
    block's start (after its BEGIN) clears the mark."""

    session_touched = True
    #: The thread running a generated query (by identity, not a flag: a thread sharing the connection
    #: against the rules cannot slip a statement of its own through another's vouching).
    vouched: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made_prepared_max = self.prepared_max
        self.watch()

    def watch(self) -> None:
        """(Back to) the cursor class that vouches for the generated queries, and psycopg's cache of
        prepared statements as it was made."""
        self.cursor_factory = TrackedCursor
        self.prepared_max = self.made_prepared_max

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        if self.vouched != threading.get_ident():
            self.session_touched = True
        return super().wait(gen, *args, **kwargs)


class AsyncTrackedCursor(AsyncCursor[Row]):
    """TrackedCursor for asyncio."""

    async def execute(self, query: Any, params: Params | None = None, *, prepare: bool | None = None,
                      binary: bool | None = None) -> Self:
        conn = self._conn
        if query.__class__ is not str or query not in generated() or not isinstance(conn, AsyncTrackedConnection):
            return await super().execute(query, params, prepare=prepare, binary=binary)
        conn.vouched = asyncio.current_task()
        try:
            return await super().execute(query, params, prepare=prepare, binary=binary)
        finally:
            conn.vouched = None


class AsyncTrackedConnection(AsyncConnection[Row]):
    """TrackedConnection for asyncio."""

    session_touched = True
    #: The task running a generated query (see TrackedConnection.vouched).
    vouched: asyncio.Task[Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made_prepared_max = self.prepared_max
        self.watch()

    def watch(self) -> None:
        """(Back to) the cursor class that vouches for the generated queries, and psycopg's cache of
        prepared statements as it was made."""
        self.cursor_factory = AsyncTrackedCursor
        self.prepared_max = self.made_prepared_max

    async def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        if self.vouched is None or self.vouched is not asyncio.current_task():
            self.session_touched = True
        return await super().wait(gen, *args, **kwargs)
