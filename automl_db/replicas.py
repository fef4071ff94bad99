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

#: Sent between COMMIT and the session reset when a Receipt asks for the commit's position: the
#: primary's timeline (as in its WAL file names) and its WAL insert position.
POSITION_AFTER_COMMIT = (b"select substr(pg_walfile_name(l), 1, 8) || ':' || l::text"
                         b" from pg_current_wal_insert_lsn() l; ")

#: How far a server has got, on which timeline: a standby's replay position, or a primary's own WAL
#: (after a failover the replica URL may name the promoted node, whose replay position no longer
#: moves). A standby's timeline is the one of its last restartpoint or of its minimum recovery point,
#: whichever is later: never one it is not on, though it may lag its replay for a while after it
#: follows a new timeline (reads then wait for it, or run on the primary).
REPLAYED = ("(case when pg_is_in_recovery()"
            " then lpad(to_hex(greatest((select timeline_id from pg_control_checkpoint()),"
            " (select min_recovery_end_timeline from pg_control_recovery()))), 8, '0')"
            " || ':' || coalesce(pg_last_wal_replay_lsn(), '0/0')::text"
            " else substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8) || ':'"
            " || pg_current_wal_insert_lsn()::text end)")

_POSITION = re.compile(r"(?:([0-9A-Fa-f]{1,8}):)?([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


@dataclass(frozen=True)
class Position:
    """A point in the primary's write-ahead log on one timeline. Every transaction that committed
    before a write handed out its position lies at or before it. A failover starts a new timeline
    whose WAL forks from the old one, so a position is reached only by a server on its timeline:
    a standby left behind on the old one (it replayed past the fork and cannot follow) may hold a
    larger LSN without holding the write. Timeline 0: unknown (a position written as a bare LSN),
    reached by any server past its LSN."""

    lsn: int
    timeline: int = 0

    @classmethod
    def parse(cls, text: str) -> "Position":
        """From `str()`'s notation (`00000002:16/B374D848`, the timeline as in WAL file names), or a
        bare LSN in PostgreSQL's (`16/B374D848`); ValueError otherwise."""
        match = _POSITION.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a WAL position: {text!r}")
        timeline = int(match.group(1), 16) if match.group(1) else 0
        return cls(int(match.group(2), 16) << 32 | int(match.group(3), 16), timeline)

    def reached_by(self, server: "Position") -> bool:
        """Whether a server at `server` (its replay position and timeline) holds this position."""
        return server.lsn >= self.lsn and (self.timeline == 0 or server.timeline == self.timeline)

    @property
    def pg_lsn(self) -> str:
        """The LSN alone, in PostgreSQL's notation (a `pg_lsn` literal)."""
        return f"{self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}"

    def __str__(self) -> str:
        return f"{self.timeline:08X}:{self.pg_lsn}" if self.timeline else self.pg_lsn


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
