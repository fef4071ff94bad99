"""Read replicas on PostgreSQL's own streaming replication: positions for read-your-writes, and the
order in which a read tries the replicas.

    receipt = Receipt()
    with db.transaction(user_id=uid, receipt=receipt) as conn:    # on the primary
        queries.submit_job(conn, ...)
    with db.read(user_id=uid, after=receipt.position) as conn:     # on a replica that has replayed it
        queries.list_jobs(conn, ...)

A **position** is a point in the primary's write-ahead log (a `pg_lsn`). A write transaction given a
Receipt reads `pg_current_wal_insert_lsn()` right after its COMMIT, in the same round trip: at or
past the end of its commit record, so a replica that has replayed up to it shows the write. A
read given that position checks the replica's replay position in its BEGIN round trip; when the
replica is behind, it polls (a new transaction each time, so even a repeatable-read snapshot is
taken after the replay) until the replica catches up or `replica_wait_timeout` runs out, then runs
on the primary, or raises ReplicaBehind when the caller asked not to fall back. A position is
plain text (`str(position)`, `Position.parse(text)`), so it can travel in a session or a cookie to
the next request.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")

#: Sent between COMMIT and the session reset when a Receipt asks for the commit's position.
POSITION_AFTER_COMMIT = b"select pg_current_wal_insert_lsn()::text; "

#: How far a server has got: a standby's replay position, or a primary's own WAL (after a failover
#: the replica URL may name the promoted node, whose replay position no longer moves).
REPLAYED = ("(case when pg_is_in_recovery() then coalesce(pg_last_wal_replay_lsn(), '0/0')"
            " else pg_current_wal_insert_lsn() end)::text")

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


@dataclass(frozen=True, order=True)
class Position:
    """A point in the primary's write-ahead log. Every transaction that committed before a write
    handed out its position lies at or before it."""

    lsn: int

    @classmethod
    def parse(cls, text: str) -> "Position":
        """From PostgreSQL's notation (`16/B374D848`), as `str()` writes it; ValueError otherwise."""
        match = _LSN.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a WAL position: {text!r}")
        return cls(int(match.group(1), 16) << 32 | int(match.group(2), 16))

    def __str__(self) -> str:
        return f"{self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}"


@dataclass
class Receipt:
    """Pass one to a write transaction; once it has committed, `position` says where its commit lies."""

    position: Position | None = None


@dataclass
class Replica(Generic[P]):
    """A replica's pool, and until when it is left out after it could not be reached."""

    url: str
    pool: P
    down_until: float = 0.0


def candidates(replicas: Sequence[Replica[P]], turn: int, now: float, include_down: bool) -> list[Replica[P]]:
    """The replicas a read tries, in order: round robin from `turn`, those left out for being down only
    when `include_down` (a read that may not fall back to the primary still tries them, last)."""
    if not replicas:
        return []
    start = turn % len(replicas)
    rotated = [*replicas[start:], *replicas[:start]]
    up = [r for r in rotated if r.down_until <= now]
    return (up + [r for r in rotated if r.down_until > now]) if include_down else up
