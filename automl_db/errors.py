"""Typed errors of automl_db, chosen by SQLSTATE and constraint name, never by message text.

The database refuses every broken rule with a specific SQLSTATE (and, where the rule has one, a
constraint name); `translate()` turns a psycopg error into the matching exception below so a
service can `except InsufficientCredits:` instead of parsing messages. The original psycopg error
stays available as `__cause__` and `.sqlstate` / `.constraint`.
"""

import psycopg

from automl_db.replicas import Position


class AutomlDbError(Exception):
    """Base of every error automl_db raises on purpose."""


class InvalidSetting(AutomlDbError, ValueError):
    """A setting (an AUTOML_DB_* variable, DATABASE_URL, or a Settings keyword) does not parse or is
    out of range; the message names it and its value, in one line."""


class DatabaseUnavailable(AutomlDbError):
    """The database server cannot be reached or started."""


class MigrationFailed(AutomlDbError):
    """A migration did not apply; nothing of it was committed."""

    def __init__(self, migration: str, message: str) -> None:
        super().__init__(f"migration {migration} failed: {message}")
        self.migration = migration
        self.message = message


class QueryError(AutomlDbError):
    """A statement was refused by the database. Carries the SQLSTATE and the rule's name."""

    def __init__(self, message: str, *, sqlstate: str | None = None, constraint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint


class InvalidInput(QueryError):
    """The row breaks a shape or value rule (CHECK, NOT NULL, bad enum label, bad format), or an
    argument was refused before it reached the server (then `parameter` names it and nothing ran)."""

    def __init__(self, message: str, *, sqlstate: str | None = None, constraint: str | None = None,
                 parameter: str | None = None) -> None:
        super().__init__(message, sqlstate=sqlstate, constraint=constraint)
        self.parameter = parameter


class NotFound(QueryError):
    """A referenced row does not exist or belongs to another user (foreign key), or nothing matched."""


class AlreadyExists(QueryError):
    """A unique rule refused a duplicate (e-mail in any case, payment id, job charged twice...)."""


class InUse(QueryError):
    """The row cannot go while others reference it (an account that has ledger entries)."""


class InsufficientCredits(QueryError):
    """The credit balance does not cover the entry (SQLSTATE AM001)."""


class QuotaExceeded(QueryError):
    """The write would take the user past its tier's limits (SQLSTATE AM002)."""


class InvalidTransition(QueryError):
    """The status change is not allowed from the current status (SQLSTATE AM003)."""


class Immutable(QueryError):
    """The record cannot be changed: ledger entries, snapshots, owners, fixed terms (SQLSTATE AM004)."""


class DerivedColumn(InvalidInput):
    """A balance, counter or storage figure was written directly (SQLSTATE AM005)."""


class PermissionDenied(QueryError):
    """The role may not do this (SQLSTATE 42501, e.g. a row-level security WITH CHECK)."""


class Retryable(QueryError):
    """Try the whole transaction again: serialization failure, deadlock, lost connection, busy pool."""


class PoolTimeout(Retryable):
    """No connection became free within the pool's timeout."""


class DataUnreadable(AutomlDbError):
    """A row holds a value this code cannot represent (written past the bounds the database keeps
    now, or by a newer schema). The row is left as it is; the message names what failed."""


class ReplicaBehind(Retryable):
    """A read given a position (read-your-writes) found the replica still behind it after waiting its
    bound, and the caller asked not to fall back to the primary: nothing ran. `position` is what the
    read waited for, `replayed` how far the replica had got."""

    def __init__(self, message: str, *, position: Position, replayed: Position) -> None:
        super().__init__(message)
        self.position = position
        self.replayed = replayed


class ReadOnlyTransaction(QueryError):
    """A write in a read-only transaction (SQLSTATE 25006): one begun read only (`Database.read()`,
    `transaction(read_only=True)`), or any transaction on a hot standby, which refuses every write.
    Writes belong on the primary: a URL that lists several hosts needs target_session_attrs=read-write."""


class CommitOutcomeUnknown(AutomlDbError):
    """The connection was lost while the transaction committed: it may or may not have committed.
    Not Retryable: retry only what is idempotent (a purchase by its payment id, a job by its
    idempotency key); `Database.run(..., idempotent=True)` does that."""


class TransactionFailed(QueryError):
    """A statement inside the transaction failed and the error was caught, so the transaction is
    aborted: nothing of it can commit. Raised at the end of `transaction()`, which rolls back."""


_BY_SQLSTATE: dict[str, type[QueryError]] = {
    "AM001": InsufficientCredits,
    "AM002": QuotaExceeded,
    "AM003": InvalidTransition,
    "AM004": Immutable,
    "AM005": DerivedColumn,
    "23505": AlreadyExists,
    "23503": NotFound,
    "23001": InUse,
    "23514": InvalidInput,
    "23502": InvalidInput,
    "23P01": AlreadyExists,
    "42501": PermissionDenied,
    "25006": ReadOnlyTransaction,
    "40001": Retryable,
    "40P01": Retryable,
    "55P03": Retryable,  # lock_not_available
    "57014": Retryable,  # query_canceled (statement_timeout)
    "57P01": Retryable,  # admin_shutdown: the backend was terminated
    "57P02": Retryable,
    "57P03": Retryable,
    "0A000": Retryable,  # cached plan must not change result type: the schema changed under a prepared query
}


def translate(exc: psycopg.Error) -> QueryError:
    """The typed error for a psycopg error (a plain QueryError when no rule matches)."""
    sqlstate = exc.sqlstate
    constraint = exc.diag.constraint_name
    message = exc.diag.message_primary or str(exc).strip() or type(exc).__name__
    kind: type[QueryError]
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        kind = Retryable  # the connection was lost: nothing is known to have committed
    elif sqlstate is not None and sqlstate in _BY_SQLSTATE:
        kind = _BY_SQLSTATE[sqlstate]
    elif sqlstate is not None and sqlstate.startswith(("22", "23")):
        kind = InvalidInput
    elif sqlstate is not None and sqlstate.startswith("08"):
        kind = Retryable
    else:
        kind = QueryError
    return kind(message, sqlstate=sqlstate, constraint=constraint)

