"""The typed client (automl_db.queries on a Database) against raw psycopg running the same SQL
constants on the same pool, in the same run.

Typed: `with db.transaction() as conn: queries.get_user(conn, id=...)` (a validated pydantic row,
errors translated). Raw: `with db.pool.connection() as conn, conn.transaction():
conn.execute(queries.GET_USER, params).fetchone()` (a tuple). Both sides issue the same statements
in the same transactions, so typed / raw is what the typed layer costs.
"""

import json
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from automl_db import queries as q
from automl_db import runtime
from automl_db.config import Settings
from automl_db.database import COMMIT, Database, _begin
from automl_db.rows import Job
from automl_db.urls import with_user
from bench import queue
from bench.report import Goal, Row, Table
from bench.rounds import Samples, interleaved
from bench.sides import WORKER

THREADS = 4
#: How a hand-written psycopg client acts for a user: its own statement inside its transaction.
SET_USER = "select set_config('automl.user_id', %s, true)"
LISTED = 1000
RAW = "raw psycopg"
#: Raw psycopg sending the typed transaction's own BEGIN (acting user, date settings) and the session
#: reset + COMMIT (issue 9's hygiene) that a block running statements of its own pays.
HYGIENE = "raw + session reset"
CALLS = (Goal(RAW, 0.9),)
LISTING = (Goal(RAW, 1.3, at_most=True),)


def _throughput(call: Callable[[int], object], threads: int, seconds: float) -> float:
    """Calls per second of `call(i)` from `threads` threads for `seconds`; i // 1,000,000 is the thread."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(t: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            call(t * 1_000_000 + i)
            i += 1
        counts[t] = i

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def _latency_ms(call: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of one call (single thread)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2] * 1000


def _row(case: str, samples: dict[str, Samples], goals: tuple[Goal, ...], unit: str) -> Row:
    print(f"  {case}: " + ", ".join(f"{label} {s.median:,.2f} {unit} ({s.spread()})" for label, s in samples.items()),
          flush=True)
    return Row(case, samples["typed"].median,
               {label: samples[label].median if label in samples else None for label in (RAW, HYGIENE)}, goals, unit)


def _seed(db: Database, depth: int) -> tuple[list[uuid.UUID], uuid.UUID]:
    """200 accounts (the first one rich, with LISTED jobs to list) and `depth` queued jobs of cost 0."""
    with db.transaction() as conn:
        users = []
        for n in range(200):
            user = q.sign_up(conn, email=f"api{n}.{uuid.uuid4().hex[:6]}@example.com", full_name=f"User {n}")
            assert user is not None
            users.append(user.id)
        owner = users[0]
        q.adjust_credits(conn, user_id=owner, amount=1_000_000_000)
        snapshot = conn.execute("insert into workflow_snapshots (user_id, snapshot_data)"
                                " values (%s, '{\"nodes\": [], \"edges\": []}') returning id", [owner]).fetchone()
        assert snapshot is not None
        conn.execute("insert into jobs (user_id, workflow_snapshot_id, priority, celery_task_id, results)"
                     " select %s, %s, g %% 10, 'task-' || g, jsonb_build_object('score', g)"
                     " from generate_series(1, %s) g", [owner, snapshot[0], LISTED])
        conn.execute(queue.PROJECT.setup)
        queue.top_up(conn, queue.PROJECT, depth)
    return users, owner


def run(url: str, *, seconds: float, rounds: int, depth: int) -> Table:
    """`url`: the benchmark database as its administrator; the worker loop logs in as automl_worker
    (local logins enabled)."""
    settings = Settings(pool_min_size=THREADS, pool_max_size=THREADS, pool_timeout=30)
    with Database(url, settings=settings) as db, \
            Database(with_user(url, "automl_worker"), settings=settings) as workers:
        users, owner = _seed(db, depth)

        def typed_get(i: int) -> None:
            with db.transaction() as conn:
                q.get_user(conn, id=users[i % len(users)])

        def raw_get(i: int) -> None:
            with db.pool.connection() as conn, conn.transaction():
                conn.execute(q.GET_USER, {"id": users[i % len(users)]}).fetchone()

        begin = _begin(db.settings, None)

        def hygienic(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> Any:
            conn.execute(begin, prepare=False)
            result = conn.execute(statement, params).fetchall()
            conn.execute(COMMIT, prepare=False)
            return result

        def reset_get(i: int) -> None:
            with db.pool.connection() as conn:
                hygienic(conn, q.GET_USER, {"id": users[i % len(users)]})

        def reset_post(i: int) -> None:
            with db.pool.connection() as conn:
                hygienic(conn, q.ADJUST_CREDITS, {"user_id": users[i % len(users)], "amount": 1,
                                                  "description": "bench"})

        def typed_post(i: int) -> None:
            with db.transaction() as conn:
                q.adjust_credits(conn, user_id=users[i % len(users)], amount=1, description="bench")

        def raw_post(i: int) -> None:
            with db.pool.connection() as conn, conn.transaction():
                conn.execute(q.ADJUST_CREDITS, {"user_id": users[i % len(users)], "amount": 1,
                                                "description": "bench"}).fetchone()

        # The worker loop: claim one job, then complete it acting for its owner. Positions of the
        # raw tuple's columns are read once, as a hand-written client would hard-code them.
        with workers.pool.connection() as conn:
            cur = conn.execute("select * from jobs limit 0")
            names = [column.name for column in cur.description or []]
        at_id, at_user = names.index("id"), names.index("user_id")

        def typed_cycle(i: int) -> None:
            worker = f"{WORKER}-{i // 1_000_000}"
            with workers.transaction() as conn:
                job = q.claim_job(conn, worker_id=worker)
            if job is None:
                raise RuntimeError("the worker loop's queue ran dry")
            with workers.transaction(user_id=job.user_id) as conn:
                q.complete_job(conn, id=job.id, worker_id=worker, results={"score": 1})

        def raw_cycle(i: int) -> None:
            worker = f"{WORKER}-{i // 1_000_000}"
            with workers.pool.connection() as conn, conn.transaction():
                job: Any = conn.execute(q.CLAIM_JOB, {"worker_id": worker}).fetchone()
            if job is None:
                raise RuntimeError("the worker loop's queue ran dry")
            with workers.pool.connection() as conn, conn.transaction():
                conn.execute(SET_USER, [str(job[at_user])])
                conn.execute(q.COMPLETE_JOB, {"id": job[at_id], "worker_id": worker,
                                              "results": Jsonb({"score": 1})}).fetchone()

        list_params = {"user_id": owner, "before_created_at": None, "before_id": None, "page_size": LISTED}

        def reset_list() -> None:
            with db.pool.connection() as conn:
                rows = hygienic(conn, q.LIST_JOBS, list_params)
            assert len(rows) == LISTED

        def typed_list() -> None:
            with db.transaction() as conn:
                rows = q.list_jobs(conn, user_id=owner, page_size=LISTED)
            assert len(rows) == LISTED

        def raw_list() -> None:
            with db.pool.connection() as conn, conn.transaction():
                rows = conn.execute(q.LIST_JOBS, list_params).fetchall()
            assert len(rows) == LISTED

        state = {"depth": depth}

        def refill() -> None:
            """Keep three rounds' worth of jobs queued: consumption is measured as the loops run."""
            with psycopg.connect(url, autocommit=True) as conn:
                queue.top_up(conn, queue.PROJECT, state["depth"])

        def cycles(call: Callable[[int], object], threads: int) -> float:
            rate = _throughput(call, threads, seconds)
            state["depth"] = max(state["depth"], int(3 * rate * seconds))
            return rate

        # Warm both paths on every pooled connection first (psycopg prepares a statement on its
        # fifth run per connection; pydantic builds validators on first use), so no round pays it.
        for call in (typed_get, raw_get, reset_get, typed_post, raw_post, reset_post, typed_cycle, raw_cycle):
            _throughput(call, THREADS, 0.2)
        rows = []
        for case, typed, raw, reset in [("get_user (read one row), 4 threads", typed_get, raw_get, reset_get),
                                        ("adjust_credits (ledger insert), 4 threads", typed_post, raw_post,
                                         reset_post)]:
            samples = interleaved({"typed": partial(_throughput, typed, THREADS, seconds),
                                   RAW: partial(_throughput, raw, THREADS, seconds),
                                   HYGIENE: partial(_throughput, reset, THREADS, seconds)}, rounds)
            rows.append(_row(case, samples, CALLS, "calls/s"))
        for threads in (1, THREADS):
            samples = interleaved({"typed": partial(cycles, typed_cycle, threads),
                                   RAW: partial(cycles, raw_cycle, threads)}, rounds, before_round=refill)
            rows.append(_row(f"worker loop (claim_job + complete_job), {threads} thread{'s' * (threads > 1)}",
                             samples, CALLS, "cycles/s"))
        for _ in range(20):
            typed_list()
            raw_list()
            reset_list()
        samples = interleaved({"typed": partial(_latency_ms, typed_list, 30), RAW: partial(_latency_ms, raw_list, 30),
                               HYGIENE: partial(_latency_ms, reset_list, 30)}, rounds)
        rows.append(_row(f"list_jobs, {LISTED:,} rows (median time), 1 thread", samples, LISTING, "ms"))
        # Where the listing's time goes, on rows already fetched: building the typed rows (and, for
        # comparison, pydantic's validation of the same rows); reading the jsonb column.
        with db.pool.connection() as conn:
            cur = conn.execute(q.LIST_JOBS, list_params)
            values = cur.fetchall()
            build = runtime._rows(Job)(cur)
            fetched = conn.cursor(row_factory=dict_row).execute(q.LIST_JOBS, list_params).fetchall()
            documents = [row[0].encode() for row in conn.execute(
                "select results::text from jobs where user_id = %s", [owner]).fetchall()][:LISTED]
        validator, json_reader = TypeAdapter(list[Job]), runtime._Json(0)
        parts = interleaved({"build": partial(_latency_ms, lambda: [build(row) for row in values], 30),
                             "validate": partial(_latency_ms, lambda: validator.validate_python(fetched), 30),
                             "from_json": partial(_latency_ms, lambda: [json_reader.load(d) for d in documents], 30),
                             "json.loads": partial(_latency_ms, lambda: [json.loads(d) for d in documents], 30)},
                            rounds)
    return Table(
        key="api",
        title="Typed client against raw psycopg",
        about=(
            "Typed: the generated functions (`automl_db.queries`: pydantic rows, typed errors) in"
            " `Database.transaction()`. Raw: psycopg on the same pool running the same SQL constants"
            " (`queries.GET_USER`, ...) and reading tuples. Single-row calls run as the administrator"
            " (`adjust_credits` is an admin entry). The worker loop runs as automl_worker: `with"
            " db.transaction() as conn: job = queries.claim_job(conn, worker_id=...)`, then `with"
            " db.transaction(user_id=job.user_id) as conn: queries.complete_job(conn, id=job.id, ...,"
            " results={...})`; the raw loop issues the same statements (the same `set_config` of the acting"
            f" user included) in the same transactions. Its queue is topped up to at least {depth:,} jobs of"
            f" cost 0 before each round. Listing: the median time of `list_jobs` returning {LISTED:,} jobs"
            " (all columns), against fetching the same rows as tuples. The typed rows are built from the"
            " values psycopg loaded, not validated again, and their JSON columns are read by pydantic-core's"
            " parser (automl_db.runtime); the raw side reads JSON with psycopg's default, `json.loads`."
            " Raw + session reset: the raw side"
            " sending, instead of BEGIN and COMMIT, the typed transaction's own BEGIN (acting user, ISO"
            " dates in UTC) and the session reset before COMMIT that a block pays when it ran statements of"
            " its own (the typed side's blocks run only generated queries, which leave the session as it"
            " was, so they commit without it: automl_db.session)."
        ),
        project="typed",
        baselines=(RAW, HYGIENE),
        setting=f"one pool of {THREADS} connections per role, {seconds:g} s per throughput run,"
                f" median of {rounds} interleaved rounds",
        rows=rows,
        notes=[f"Where the listing's {rows[-1].project:.2f} ms go, on the {LISTED:,} rows already fetched (no"
               f" database): building them as `Job` models from the values psycopg loaded takes"
               f" {parts['build'].median:.2f} ms (pydantic validating the same rows read as dicts,"
               f" `TypeAdapter(list[Job]).validate_python`, would take {parts['validate'].median:.2f} ms); reading"
               f" their `results` jsonb takes {parts['from_json'].median:.2f} ms with pydantic-core's parser, against"
               f" {parts['json.loads'].median:.2f} ms with psycopg's default `json.loads` (the raw side's)."],
    )
