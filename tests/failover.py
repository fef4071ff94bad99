"""A failover under a ledger load, as tests/test_replication.py asserts it and bench/replication.py
times it: writers post ledger entries through a Database on the pair's multi-host URL, the primary
is killed with SIGKILL (its whole process group) and the standby promoted at once, and the writers
carry on until the promoted node has acknowledged entries for a while. Every acknowledged entry is
then looked for on the promoted node.
"""

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import CommitOutcomeUnknown, Retryable
from tests.cluster import Pair

#: A pool like a small service's; connect_timeout bounds each attempt on a host that does not answer.
SETTINGS = Settings(pool_min_size=2, pool_max_size=4, pool_timeout=5, connect_timeout=2)
WRITERS = 3


@dataclass
class Failover:
    """What the writers saw, and what the promoted node holds."""

    #: Seconds from the SIGKILL until pg_ctl promote returned.
    promoted_after: float
    #: Seconds from the SIGKILL until the first entry the promoted node acknowledged.
    writes_after: float
    #: Acknowledged entries: (description, server port) by the old primary and by the promoted node.
    before: list[tuple[str, int]] = field(default_factory=list)
    after: list[tuple[str, int]] = field(default_factory=list)
    #: Errors the writers got, by type name: Retryable and CommitOutcomeUnknown are expected.
    interrupted: Counter[str] = field(default_factory=Counter)
    unexpected: list[BaseException] = field(default_factory=list)
    #: Acknowledged entries the promoted node does not hold.
    lost: list[str] = field(default_factory=list)
    #: check_integrity() on the promoted node.
    broken: list[tuple[object, ...]] = field(default_factory=list)


def accounts(pair: Pair, n: int) -> list[uuid.UUID]:
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        return [row[0] for row in conn.execute(
            "insert into users (email) select 'failover' || n || '-' || gen_random_uuid() || '@example.com'"
            " from generate_series(1, %s) n returning id", [n]).fetchall()]


def run(pair: Pair, *, warm_up: float = 1.0, settle: float = 1.0, timeout: float = 120.0) -> Failover:
    """Write for `warm_up` seconds, kill the primary, promote the standby, write until the promoted
    node has acknowledged entries for `settle` seconds (or `timeout` passed), then audit."""
    users = accounts(pair, WRITERS)
    stop = threading.Event()
    lock = threading.Lock()
    acked: list[tuple[str, int, float]] = []
    interrupted: Counter[str] = Counter()
    unexpected: list[BaseException] = []

    with Database(pair.multi_host_url(), settings=SETTINGS) as db:
        def write(k: int) -> None:
            i = 0
            while not stop.is_set():
                label = f"failover w{k}-{i}"
                i += 1
                try:
                    with db.transaction() as conn:
                        row = conn.execute("insert into credit_transactions (user_id, type, amount, description)"
                                           " values (%s, 'adjustment', 1, %s) returning inet_server_port()",
                                           [users[k], label]).fetchone()
                except (Retryable, CommitOutcomeUnknown) as exc:
                    with lock:
                        interrupted[type(exc).__name__] += 1
                    continue
                except Exception as exc:
                    with lock:
                        unexpected.append(exc)
                    time.sleep(0.05)
                    continue
                with lock:
                    acked.append((label, int(row[0]) if row else 0, time.monotonic()))

        writers = [threading.Thread(target=write, args=(k,), name=f"writer-{k}") for k in range(WRITERS)]
        for writer in writers:
            writer.start()
        try:
            time.sleep(warm_up)
            killed = time.monotonic()
            pair.primary.kill()
            pair.standby.promote()
            promoted = time.monotonic()
            deadline = killed + timeout
            while time.monotonic() < deadline:
                with lock:
                    first = next((at for _, port, at in acked if at > killed and port == pair.standby.port), None)
                if first is not None and time.monotonic() - first >= settle:
                    break
                time.sleep(0.02)
        finally:
            stop.set()
            for writer in writers:
                writer.join()

    # An entry acknowledged just after the kill may have committed on the old primary just before it.
    result = Failover(
        promoted_after=promoted - killed,
        writes_after=min((at for _, port, at in acked if port == pair.standby.port), default=float("inf")) - killed,
        before=[(label, port) for label, port, _ in acked if port != pair.standby.port],
        after=[(label, port) for label, port, _ in acked if port == pair.standby.port],
        interrupted=interrupted,
        unexpected=unexpected,
    )
    with psycopg.connect(pair.standby.url(), autocommit=True) as conn:
        labels = [label for label, _, _ in acked]
        found = {row[0] for row in conn.execute("select description from credit_transactions"
                                                " where description = any(%s)", [labels])}
        result.lost = [label for label in labels if label not in found]
        result.broken = conn.execute("select * from check_integrity()").fetchall()
    return result
