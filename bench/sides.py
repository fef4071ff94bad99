"""What every compared design (automl_db, its floor, a same-schema copy, a pg-boss-style queue)
provides to the ledger and queue benchmarks: its setup, its seeding SQL and its hot statements.

Keeping every side in the same shape lets ledger.py and queue.py treat them alike: seeded by the
same calls, measured by the same pgbench scripts built from their statements.
"""

from dataclasses import dataclass
from typing import cast

import psycopg

from automl_db.tools import migrate
from automl_db.urls import enable_local_logins

Conn = psycopg.Connection[tuple[object, ...]]

#: The worker name every claim uses.
WORKER = "bench-worker"

#: Every table but automl_db's lives in this schema, away from the project's names and audit.
SCHEMA = "create schema if not exists bench"


def prepare(url: str) -> None:
    """Migrations on the fresh database, and logins for the runtime roles."""
    migrate.apply(url)
    enable_local_logins(url)  # the queue and the worker loop log in as automl_worker, as workers do


def uid(n: str) -> str:
    """A deterministic uuid for account number n (an SQL expression), so scripts need no lookups."""
    return f"('00000000-0000-0000-0000-' || lpad(({n})::text, 12, '0'))::uuid"


@dataclass(frozen=True)
class Ledger:
    """One design of "post an entry of +1 to account :u": moves the balance and writes the entry."""

    label: str
    #: Run once: tables (empty for automl_db, which the migrations built).
    setup: str
    #: Accounts 1..%(accounts)s with a zero balance.
    accounts: str
    #: Add %(entries)s entries of +1 to every account (statements run in order, one transaction).
    history: tuple[str, ...]
    #: The pgbench statement posting one entry to account :u.
    post: str
    #: A query that fails when the design no longer matches the project's schema (same-schema copies).
    requires: str = ""


@dataclass(frozen=True)
class Queue:
    """One design of a job queue: claim up to n jobs for a worker, then mark them completed."""

    label: str
    #: The job table, vacuumed between rounds.
    table: str
    setup: str
    #: Add %(count)s claimable jobs.
    enqueue: str
    #: Delete every claimable and completed job: a case starts from an empty queue.
    clear: str
    #: One row: (claimable jobs, completed jobs).
    counts: str
    #: A statement claiming up to {n} jobs for WORKER and returning their `id`.
    claim: str
    #: An UPDATE completing the jobs matched by {match} (a predicate on `id`).
    complete: str
    #: Log in as this role instead of the administrator (the role the design's workers use).
    role: str | None = None
    requires: str = ""

    def cycle(self, n: int) -> str:
        """The pgbench script of one claim + complete cycle of n jobs. pgbench's \\gset keeps one row,
        so for n > 1 the claimed ids travel as one array."""
        if n == 1:
            return f"{self.claim.format(n=1)} \\gset\n{self.complete.format(match='id = :id')};\n"
        return (f"with claimed as ({self.claim.format(n=n)})\nselect array_agg(id) as ids from claimed \\gset\n"
                f"{self.complete.format(match='id = any (:ids::uuid[])')};\n")

    def finish(self, conn: Conn, count: int, chunk: int = 10_000) -> None:
        """Add `count` completed jobs the way the design's own workers would: enqueue, claim, complete."""
        conn.execute(self.enqueue, {"count": count})
        # Statistics of the grown table, before the first claim is planned: planned on the emptier
        # table's, a 10,000-job claim joins by nested loop over a sequential scan and runs for minutes.
        conn.execute(f"analyze {self.table}")
        done = 0
        while done < count:
            with conn.transaction():
                row = conn.execute(f"with claimed as ({self.claim.format(n=min(chunk, count - done))})"
                                   " select array_agg(id) from claimed").fetchone()
                ids = cast(list[object] | None, row[0] if row else None)
                if not ids:
                    raise RuntimeError(f"{self.label}: the queue ran dry while building history")
                conn.execute(self.complete.format(match="id = any (%(ids)s)"), {"ids": ids})
            done += len(ids)
