"""What a transaction may leave in the pooled session, and the reset that clears it.

A block's statements run on a pooled connection that the next block reuses, so a statement that
changes the session (`SET`, `set_config(..., false)`, `SET ROLE`, `LISTEN`, `PREPARE`, a cursor
WITH HOLD) must not outlive its block. Resetting costs a sixth statement in the block's last round
trip; most blocks run only the generated queries, none of which touches the session. So the pool's
connections note what they run: a statement that is not one of the generated queries (or a named,
server-side cursor, or a cursor class swapped by the block) marks the session as touched, and only
a touched session is reset when its block ends. What bypasses psycopg's cursors (libpq itself, via
`conn.pgconn`) is not seen: that is the one way left to leak session state.
"""

import functools
import importlib
import pkgutil
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Self

from psycopg import AsyncConnection, AsyncCursor, AsyncServerCursor, Connection, Cursor, ServerCursor
from psycopg.abc import Params, Query
from psycopg.rows import Row

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


def _note(conn: "TrackedConnection | AsyncTrackedConnection", query: object) -> None:
    if query.__class__ is not str or query not in generated():
        conn.session_touched = True


class TrackedCursor(Cursor[Row]):
    """A client-side cursor that notes statements other than the generated queries."""

    def execute(self, query: Any, params: Params | None = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> Self:
        _note(self._conn, query)  # type: ignore[arg-type]
        return super().execute(query, params, prepare=prepare, binary=binary)

    def executemany(self, query: Query, params_seq: Iterable[Params], *, returning: bool = False) -> None:
        _note(self._conn, query)  # type: ignore[arg-type]
        super().executemany(query, params_seq, returning=returning)

    def stream(self, query: Query, params: Params | None = None, *, binary: bool | None = None,
               size: int = 1) -> Iterator[Row]:
        _note(self._conn, query)  # type: ignore[arg-type]
        return super().stream(query, params, binary=binary, size=size)


class TrackedServerCursor(ServerCursor[Row]):
    """A named (server-side) cursor: it may be WITH HOLD and outlive the transaction."""

    def __init__(self, connection: "Connection[Any]", name: str, **kwargs: Any) -> None:
        super().__init__(connection, name, **kwargs)
        if isinstance(connection, TrackedConnection):
            connection.session_touched = True


class TrackedConnection(Connection[Row]):
    """The pool's connections: `session_touched` says whether the current block may have changed
    the session (the block's start clears it; see the module's doc)."""

    session_touched = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch()

    def watch(self) -> None:
        """(Back to) the cursor classes that note what runs."""
        self.cursor_factory = TrackedCursor
        self.server_cursor_factory = TrackedServerCursor

    @property
    def touched(self) -> bool:
        """Whether the block must reset the session: it ran something else than generated queries, or
        swapped the cursor classes that watch for that."""
        return (self.session_touched or self.cursor_factory is not TrackedCursor
                or self.server_cursor_factory is not TrackedServerCursor)


class AsyncTrackedCursor(AsyncCursor[Row]):
    """TrackedCursor for asyncio."""

    async def execute(self, query: Any, params: Params | None = None, *, prepare: bool | None = None,
                      binary: bool | None = None) -> Self:
        _note(self._conn, query)  # type: ignore[arg-type]
        return await super().execute(query, params, prepare=prepare, binary=binary)

    async def executemany(self, query: Query, params_seq: Iterable[Params], *, returning: bool = False) -> None:
        _note(self._conn, query)  # type: ignore[arg-type]
        await super().executemany(query, params_seq, returning=returning)

    def stream(self, query: Query, params: Params | None = None, *, binary: bool | None = None,
               size: int = 1) -> AsyncIterator[Row]:
        _note(self._conn, query)  # type: ignore[arg-type]
        return super().stream(query, params, binary=binary, size=size)


class AsyncTrackedServerCursor(AsyncServerCursor[Row]):
    """TrackedServerCursor for asyncio."""

    def __init__(self, connection: "AsyncConnection[Any]", name: str, **kwargs: Any) -> None:
        super().__init__(connection, name, **kwargs)
        if isinstance(connection, AsyncTrackedConnection):
            connection.session_touched = True


class AsyncTrackedConnection(AsyncConnection[Row]):
    """TrackedConnection for asyncio."""

    session_touched = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch()

    def watch(self) -> None:
        """(Back to) the cursor classes that note what runs."""
        self.cursor_factory = AsyncTrackedCursor
        self.server_cursor_factory = AsyncTrackedServerCursor

    @property
    def touched(self) -> bool:
        """See TrackedConnection.touched."""
        return (self.session_touched or self.cursor_factory is not AsyncTrackedCursor
                or self.server_cursor_factory is not AsyncTrackedServerCursor)
