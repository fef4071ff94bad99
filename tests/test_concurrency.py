"""Real threads behind a barrier, and real killed backends: the rules hold under both."""

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from tests.helpers import give_credits, make_dataset, make_snapshot, make_user, value

Conn = psycopg.Connection[DictRow]


def run_threads(count: int, work: Callable[[int, Conn], Any], db_url: str) -> list[Any]:
    """Run work(i, connection) in `count` threads released together by a barrier; return their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
                barrier.wait(timeout=30)
                results[i] = work(i, conn)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def outcome(conn: Conn, query: str, params: Any) -> str:
    """'ok', or the SQLSTATE that refused the statement."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    return "ok"


def test_concurrent_spends_grant_exactly_what_the_balance_covers(conn: Conn, db_url: str) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)

    def spend(_: int, c: Conn) -> str:
        return outcome(c, "insert into credit_transactions (user_id, type, amount) values (%s, 'adjustment', -7)",
                       [user])

    results = Counter(run_threads(24, spend, conn.info.dsn))
    assert results == {"ok": 14, "AM001": 10}  # 14 * 7 = 98 <= 100 < 105
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 2
    numbers = [r["entry_number"] for r in conn.execute(
        "select entry_number from credit_transactions where user_id = %s order by 1", [user])]
    assert numbers == list(range(1, 16))


def test_many_writers_on_one_user_and_across_users(conn: Conn, db_url: str) -> None:
    users = [make_user(conn) for _ in range(4)]

    def write(i: int, c: Conn) -> Counter[uuid.UUID]:
        rng = random.Random(i)
        granted: Counter[uuid.UUID] = Counter()
        for _ in range(60):
            user = users[0] if rng.random() < 0.5 else rng.choice(users)  # one hot account
            amount = rng.choice([25, 10, -5, -15])
            if outcome(c, "insert into credit_transactions (user_id, type, amount) values (%s, 'adjustment', %s)",
                       [user, amount]) == "ok":
                granted[user] += amount
        return granted

    totals: Counter[uuid.UUID] = Counter()
    for granted in run_threads(8, write, db_url):
        totals.update(granted)
    for user in users:
        assert value(conn, "select credit_balance from users where id = %s", [user]) == totals[user]
    assert conn.execute("select * from check_integrity()").fetchall() == []


def test_concurrent_uploads_to_one_dataset_are_numbered_without_gaps(conn: Conn, db_url: str) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)

    def upload(i: int, c: Conn) -> int:
        row = c.execute("insert into dataset_versions (dataset_id, original_size_bytes) values (%s, %s)"
                        " returning version_number", [dataset, 1000 + i]).fetchone()
        assert row is not None
        return int(row["version_number"])

    numbers = run_threads(16, upload, db_url)
    assert sorted(numbers) == list(range(1, 17))
    assert value(conn, "select storage_used_bytes from users where id = %s", [user]) == sum(1000 + i for i in range(16))


def test_concurrent_uploads_cannot_slip_past_the_storage_quota(conn: Conn, db_url: str) -> None:
    conn.execute("update tier_limits set max_storage_bytes = 10000 where tier = 'free'")
    user = make_user(conn)
    datasets = [make_dataset(conn, user, f"d{i}") for i in range(4)]

    def upload(i: int, c: Conn) -> str:
        return outcome(c, "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 3000)",
                       [datasets[i % 4]])

    results = Counter(run_threads(12, upload, db_url))
    assert results == {"ok": 3, "AM002": 9}
    assert value(conn, "select storage_used_bytes from users where id = %s", [user]) == 9000


def test_concurrent_claims_never_hand_one_job_to_two_workers(conn: Conn, db_url: str) -> None:
    user = make_user(conn)
    snapshot = make_snapshot(conn, user)
    conn.execute("insert into jobs (user_id, workflow_snapshot_id, status, priority)"
                 " select %s, %s, 'queued', g %% 7 from generate_series(1, 300) g", [user, snapshot])

    def work(i: int, c: Conn) -> list[uuid.UUID]:
        mine: list[uuid.UUID] = []
        while True:
            rows = c.execute("select id from claim_jobs(%s, 2)", [f"w{i}"]).fetchall()
            if not rows:
                return mine
            for row in rows:
                mine.append(row["id"])
                c.execute("update jobs set status = 'completed' where id = %s", [row["id"]])

    claimed = [job for jobs in run_threads(8, work, db_url) for job in jobs]
    assert len(claimed) == 300
    assert len(set(claimed)) == 300
    assert value(conn, "select count(*) from jobs where status = 'completed' and attempt = 1") == 300


def test_killed_backends_leave_every_invariant_intact(conn: Conn, db_url: str) -> None:
    """Writers post ledger entries, queue, run and fail jobs in multi-statement transactions while
    another thread terminates random writer backends. Whatever was cut, nothing is half-written."""
    users = [make_user(conn) for _ in range(3)]
    for user in users:
        give_credits(conn, user, 10_000)
    snapshots = {user: make_snapshot(conn, user) for user in users}
    pids: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    kills = Counter[str]()

    def writer(i: int) -> None:
        rng = random.Random(i)
        done = 0
        while done < 40:
            pid = -1
            try:
                with psycopg.connect(db_url, row_factory=dict_row) as c:
                    pid = c.info.backend_pid
                    with lock:
                        pids.add(pid)
                    while done < 40:
                        user = rng.choice(users)
                        with c.transaction():
                            job = c.execute("insert into jobs (user_id, workflow_snapshot_id, credit_cost, status)"
                                            " values (%s, %s, %s, 'queued') returning id",
                                            [user, snapshots[user], rng.randint(1, 20)]).fetchone()
                            assert job is not None
                            c.execute("insert into job_nodes (job_id, node_id) values (%s, 'a'), (%s, 'b')",
                                      [job["id"], job["id"]])
                            c.execute("update jobs set status = 'running' where id = %s", [job["id"]])
                            time.sleep(rng.random() / 200)  # widen the window for a kill mid-transaction
                            end = rng.choice(["completed", "failed", "cancelled"])
                            c.execute("update jobs set status = %s where id = %s", [end, job["id"]])
                            c.execute("insert into credit_transactions (user_id, type, amount)"
                                      " values (%s, 'adjustment', %s)", [user, rng.choice([3, -2])])
                        done += 1
            except psycopg.OperationalError:
                kills["writer saw its backend die"] += 1
            finally:
                with lock:
                    pids.discard(pid)

    def killer() -> None:
        rng = random.Random(99)
        with psycopg.connect(db_url, autocommit=True) as c:
            while not stop.is_set() and kills["terminated"] < 25:
                time.sleep(rng.uniform(0.005, 0.03))
                with lock:
                    victims = list(pids)
                if victims:
                    row = c.execute("select pg_terminate_backend(%s)", [rng.choice(victims)]).fetchone()
                    if row and row[0]:
                        kills["terminated"] += 1

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    assassin = threading.Thread(target=killer)
    for t in [*writers, assassin]:
        t.start()
    for t in writers:
        t.join(timeout=300)
    stop.set()
    assassin.join(timeout=30)
    assert not any(t.is_alive() for t in writers)
    assert kills["terminated"] >= 5, kills
    assert conn.execute("select * from check_integrity()").fetchall() == []
    half_done = value(conn, "select count(*) from jobs j where status <> 'pending' and"
                            " (select count(*) from job_nodes n where n.job_id = j.id) <> 2")
    assert half_done == 0
    assert value(conn, "select count(*) from jobs where status in ('queued', 'running')") == 0
    assert value(conn, "select count(*) from jobs") >= 6 * 40
