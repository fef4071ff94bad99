"""Replication: how far a hot standby trails the primary under the ledger load, what synchronous
replication costs the ledger, and how long a failover takes.

Each side runs on its own primary and standby (tests/cluster.py: the embedded server's binaries,
`pg_basebackup -R`, a replication slot, loopback ports), whatever DATABASE_URL says; both pairs live
through the lag rounds, which alternate between them. During each round pgbench posts ledger entries
(`adjustment`, as the administrator, as in the ledger benchmark but with a type any role-less
script may post) on the primary; a sampler reads pg_stat_replication every 20 ms; a prober posts one
entry at a time through Database with a Receipt and times how long the standby takes to have
replayed it (commit -> visible to a read there), and counts the reads without a position that
would have missed it.

Failover (tests/failover.py): writers post entries through a Database on the pair's multi-host URL,
the primary's whole process group gets SIGKILL, the standby is promoted at once (pg_ctl promote;
a failover manager would first need to notice), and the time until the promoted node acknowledges
the first entry is measured; then every acknowledged entry is looked for on it.
"""

import logging
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from automl_db.config import Settings
from automl_db.database import Database
from automl_db.replicas import Receipt
from bench import pgbench
from bench.report import Figures, Part
from bench.sides import uid
from tests import failover
from tests.cluster import MAJOR, Pair, pair

SAMPLE_EVERY = 0.02
POST = f"""insert into credit_transactions (user_id, type, amount, description)
values ({uid(':u')}, 'adjustment', 1, 'bench');
"""
MODES = {"asynchronous": False, "synchronous (remote flush)": True}


@dataclass
class Lag:
    """Everything one mode measured over its rounds."""

    entries_per_second: list[float] = field(default_factory=list)
    lag_bytes: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)  # pg_stat_replication.replay_lag
    visible_ms: list[float] = field(default_factory=list)  # commit -> replayed on the standby
    stale: int = 0  # probes whose first look at the standby did not show the entry yet


def _accounts(p: Pair, accounts: int) -> None:
    with psycopg.connect(p.primary.url(), autocommit=True) as conn:
        conn.execute(f"insert into users (id, email) select {uid('n')}, 'bench' || n || '@example.com'"
                     " from generate_series(1, %s::int) n", [accounts + 1])
        conn.execute("vacuum analyze")
    p.catch_up()


def _round(p: Pair, lag: Lag, accounts: int, seconds: int) -> None:
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(p.primary.url(), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), replay_lsn),"
                                   " extract(epoch from replay_lag) * 1000 from pg_stat_replication").fetchone()
                if row is not None and row[0] is not None:
                    lag.lag_bytes.append(float(row[0]))
                    if row[1] is not None:
                        lag.lag_ms.append(float(row[1]))
                time.sleep(SAMPLE_EVERY)

    def probe() -> None:
        prober = uid(str(accounts + 1))
        settings = Settings(pool_min_size=1, pool_max_size=1)
        with Database(p.primary.url(), settings=settings) as db, \
                psycopg.connect(p.standby.url(), autocommit=True) as standby:
            while not stop.is_set():
                receipt = Receipt()
                with db.transaction(receipt=receipt) as conn:
                    conn.execute(f"insert into credit_transactions (user_id, type, amount, description)"
                                 f" values ({prober}, 'adjustment', 1, 'probe')")
                committed = time.perf_counter()
                assert receipt.position is not None
                first = True
                while True:
                    row = standby.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                          [receipt.position.pg_lsn]).fetchone()
                    if row is not None and row[0]:
                        break
                    lag.stale += first
                    first = False
                lag.visible_ms.append((time.perf_counter() - committed) * 1000)

    helpers = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for helper in helpers:
        helper.start()
    try:
        result = pgbench.run(p.primary.url(), f"\\set u random(1, {accounts})\n" + POST, seconds=seconds)
    finally:
        stop.set()
        for helper in helpers:
            helper.join()
    lag.entries_per_second.append(result.tps)


def _spread(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):,.{digits}f} / {p95:,.{digits}f} / {ordered[-1]:,.{digits}f}"


def _median_range(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})" if values else "n/a"


def measure_lag(seconds: int, rounds: int, accounts: int) -> dict[str, Lag]:
    results = {mode: Lag() for mode in MODES}
    with pair() as asynchronous, pair(synchronous=True) as synchronous:
        pairs = {"asynchronous": asynchronous, "synchronous (remote flush)": synchronous}
        for p in pairs.values():
            _accounts(p, accounts)
        labels = list(MODES)
        for r in range(rounds):
            shift = r % len(labels)
            for mode in labels[shift:] + labels[:shift]:  # rotating order: drift hits both alike
                _round(pairs[mode], results[mode], accounts, seconds)
            print("  lag round " + str(r + 1) + ": " + ", ".join(
                f"{mode} {results[mode].entries_per_second[-1]:,.0f} entries/s" for mode in labels), flush=True)
        for p in pairs.values():
            p.catch_up()
            with psycopg.connect(p.standby.url(), autocommit=True) as conn:
                broken = conn.execute("select * from check_integrity()").fetchall()
            if broken:
                raise RuntimeError(f"check_integrity() on a standby after the lag rounds: {broken[:5]}")
    return results


def measure_failover(rounds: int) -> dict[str, list[failover.Failover]]:
    results: dict[str, list[failover.Failover]] = {mode: [] for mode in MODES}
    labels = list(MODES)
    for r in range(rounds):
        shift = r % len(labels)
        for mode in labels[shift:] + labels[:shift]:
            with pair(synchronous=MODES[mode]) as p:
                outcome = failover.run(p)
            if outcome.unexpected:
                raise RuntimeError(f"failover ({mode}): unexpected errors {outcome.unexpected[:3]}")
            results[mode].append(outcome)
            print(f"  failover {r + 1}, {mode}: promoted after {outcome.promoted_after:.2f} s, writes after"
                  f" {outcome.writes_after:.2f} s, {len(outcome.lost)} acknowledged entries lost", flush=True)
    return results


def run(*, seconds: int, rounds: int, accounts: int) -> Figures:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # the failover's reconnect attempts, expected
    lags = measure_lag(seconds, rounds, accounts)
    outcomes = measure_failover(rounds)
    lag_rows = [[mode, f"{statistics.median(m.entries_per_second):,.0f}", _spread(m.lag_bytes, 0),
                 _spread(m.lag_ms), _spread(m.visible_ms, 2),
                 f"{m.stale} of {len(m.visible_ms)} ({100 * m.stale / max(1, len(m.visible_ms)):.0f} %)"]
                for mode, m in lags.items()]
    failover_rows = [[mode, str(len(runs)), _median_range([o.promoted_after for o in runs]),
                      _median_range([o.writes_after for o in runs]),
                      f"{statistics.median([sum(o.interrupted.values()) for o in runs]):.0f}",
                      str(sum(len(o.before) + len(o.after) for o in runs)), str(sum(len(o.lost) for o in runs))]
                     for mode, runs in outcomes.items()]
    return Figures(
        key="replication",
        title="Replication: replica lag under the ledger load, failover time",
        about=(
            "Each mode on its own primary and hot standby (PostgreSQL's streaming replication from a"
            " `pg_basebackup -R` copy, a replication slot, `hot_standby_feedback = on`, loopback TCP), both on"
            " this machine. Lag: pgbench posts ledger entries (`adjustment`, +1, a random one of"
            f" {accounts:,} accounts) on the primary while pg_stat_replication is sampled every"
            f" {SAMPLE_EVERY * 1000:.0f} ms, and a prober posts one entry at a time through `Database` with a"
            " `Receipt` and polls the standby until `pg_last_wal_replay_lsn()` reaches the position: commit →"
            " visible there, which is what `read(after=...)` waits for. Failover: 3 writers post entries through"
            " a `Database` on the multi-host URL (`target_session_attrs=read-write`, pool of 2-4, pool timeout"
            " 5 s); the primary's process group gets SIGKILL and the standby is promoted at once; writes resume"
            " when the pool reconnects to the promoted node (psycopg_pool retries after about 1 s, then 2 s,"
            " 4 s...). A failover manager (Patroni, pg_auto_failover) first needs to notice the death, which"
            " adds its own detection time."
        ),
        setting=f"primary and standby: PostgreSQL {MAJOR} (embedded binaries), pgbench -M prepared,"
                f" {pgbench.CLIENTS} clients; lag: {rounds} x {seconds} s per mode, alternating; failover:"
                f" {rounds} per mode",
        parts=[
            Part("Replica lag while pgbench posts ledger entries (median / p95 / max over every sample of every"
                 " round):",
                 ["replication", "ledger entries/s", "replay lag, bytes", "replay_lag, ms",
                  "commit → visible on the standby, ms", "reads without a position that missed the entry"],
                 lag_rows),
            Part("Failover: SIGKILL of the primary, `pg_ctl promote` of the standby (median (min..max) seconds):",
                 ["replication", "runs", "SIGKILL → promoted", "SIGKILL → first acknowledged write",
                  "transactions interrupted", "entries acknowledged", "acknowledged entries lost"],
                 failover_rows),
        ],
        notes=["Interrupted: transactions in flight at the kill, which raised `Retryable` or"
               " `CommitOutcomeUnknown` and nothing else (any other error fails the benchmark); a pooled"
               " connection found dead at `BEGIN` is replaced without an error. With synchronous replication"
               " an acknowledged entry is on the standby's disk before the client hears of it, so none can be"
               " lost; asynchronous replication loses what the standby had not received yet."],
    )
