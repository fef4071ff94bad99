"""The typed API against raw psycopg running the same SQL, on the same pool, in the same run.

Typed: `with db.transaction() as conn: queries.get_user(conn, id=...)` (a validated pydantic row,
errors translated). Raw: `with pool.connection() as conn, conn.transaction(): conn.execute(SQL,
params).fetchone()` (a tuple). Both sides share one psycopg_pool and one transaction per call.
"""

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.db import Database

THREADS = 4
ROUNDS = 3


@dataclass(frozen=True)
class Figure:
    case: str
    typed: float
    raw: float
    unit: str


def _throughput(call: Callable[[int], Any], seconds: float) -> float:
    """Calls per second of `call(i)` from THREADS threads for `seconds`."""
    stop = time.perf_counter() + seconds
    counts = [0] * THREADS

    def work(t: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            call(t * 1_000_000 + i)
            i += 1
        counts[t] = i

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def _latency(call: Callable[[], Any], repeat: int) -> float:
    """Median seconds of one call (single thread)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(url: str, seconds: float) -> list[Figure]:
    settings = Settings(pool_min_size=THREADS, pool_max_size=THREADS, pool_timeout=30)
    with Database(url, settings=settings) as db:
        with db.transaction() as conn:
            users = []
            for n in range(200):
                user = q.sign_up(conn, email=f"api{n}.{uuid.uuid4().hex[:6]}@example.com", full_name=f"User {n}")
                assert user is not None
                users.append(user.id)
            owner = users[0]
            q.adjust_credits(conn, user_id=owner, amount=1_000_000_000)
            conn.execute("insert into workflow_snapshots (user_id, snapshot_data)"
                         " values (%s, '{\"nodes\": [], \"edges\": []}')", [owner])
            snapshot = conn.execute("select id from workflow_snapshots where user_id = %s", [owner]).fetchone()
            assert snapshot is not None
            conn.execute("insert into jobs (user_id, workflow_snapshot_id, priority, celery_task_id, results)"
                         " select %s, %s, g %% 10, 'task-' || g, jsonb_build_object('score', g)"
                         " from generate_series(1, 1000) g", [owner, snapshot[0]])

        def typed_get(i: int) -> None:
            with db.transaction() as conn:
                q.get_user(conn, id=users[i % len(users)])

        def raw_get(i: int) -> None:
            with db.pool.connection() as conn, conn.transaction():
                conn.execute(q.GET_USER, {"id": users[i % len(users)]}).fetchone()

        def typed_post(i: int) -> None:
            with db.transaction() as conn:
                q.adjust_credits(conn, user_id=users[i % len(users)], amount=1, description="bench")

        def raw_post(i: int) -> None:
            with db.pool.connection() as conn, conn.transaction():
                conn.execute(q.ADJUST_CREDITS, {"user_id": users[i % len(users)], "amount": 1,
                                                "description": "bench"}).fetchone()

        def typed_list() -> None:
            with db.transaction() as conn:
                rows = q.list_jobs(conn, user_id=owner, page_size=1000)
            assert len(rows) == 1000

        def raw_list() -> None:
            with db.pool.connection() as conn, conn.transaction():
                rows = conn.execute(q.LIST_JOBS, {"user_id": owner, "before_created_at": None,
                                                  "before_id": None, "page_size": 1000}).fetchall()
            assert len(rows) == 1000

        figures = []
        for case, typed, raw in [("get_user (read one row)", typed_get, raw_get),
                                 ("adjust_credits (ledger insert)", typed_post, raw_post)]:
            typed_runs, raw_runs = [], []
            for _ in range(ROUNDS):  # interleaved, so drift hits both sides alike
                raw_runs.append(_throughput(raw, seconds))
                typed_runs.append(_throughput(typed, seconds))
            figure = Figure(case, statistics.median(typed_runs), statistics.median(raw_runs), "calls/s")
            print(f"  {case}: typed {figure.typed:,.0f}/s, raw {figure.raw:,.0f}/s", flush=True)
            figures.append(figure)
        for _ in range(20):  # warm both paths (prepared statements, pydantic validators)
            typed_list()
            raw_list()
        typed_ms = [_latency(typed_list, 50) * 1000 for _ in range(ROUNDS)]
        raw_ms = [_latency(raw_list, 50) * 1000 for _ in range(ROUNDS)]
        figure = Figure("list_jobs, 1,000 rows", statistics.median(typed_ms), statistics.median(raw_ms), "ms")
        print(f"  {figure.case}: typed {figure.typed:.2f} ms, raw {figure.raw:.2f} ms", flush=True)
        figures.append(figure)
    return figures

