"""Job queue: jobs claimed and completed per second by automl_db against its floor, a pg-boss-style
reference and a same-schema copy, with pgbench, for batches of 1, 10 and 100 jobs, and for single
jobs beside a large history of finished ones.

automl_db: the typed API's own claim statement (`queries.CLAIM_JOBS`, the statement of the
claim_jobs() function run directly, `returning j.*`), then `update jobs set status = 'completed'
where id = ...`, as automl_worker (the role its workers log in as). Every queue is
topped up before each round and checked after each run, so none runs dry; figures count jobs,
measured as completed rows before and after each run, not pgbench transactions.
"""

import time
from functools import partial
from typing import cast

import psycopg

from automl_db import queries
from automl_db.urls import with_user
from bench import floors, pgbench, pgboss_style, same_schema
from bench.report import Goal, Row, Table
from bench.rounds import interleaved
from bench.sides import SCHEMA, WORKER, Conn, Queue, uid

PROJECT = Queue(
    label="automl_db",
    table="jobs",
    # One owner and one snapshot for every benchmark job.
    setup=f"insert into users (id, email) values ({uid('0')}, 'queue@example.com') on conflict do nothing;"
          f" insert into workflow_snapshots (id, user_id, snapshot_data)"
          f" values ({uid('0')}, {uid('0')}, '{{\"nodes\": [], \"edges\": []}}') on conflict do nothing;",
    enqueue=f"insert into jobs (user_id, workflow_snapshot_id, status, priority)"
            f" select {uid('0')}, {uid('0')}, 'queued', g %% 10 from generate_series(1, %(count)s::int) g",
    clear="delete from jobs where status in ('queued', 'completed')",
    counts="select count(*) filter (where status = 'queued'), count(*) filter (where status = 'completed') from jobs",
    claim=queries.CLAIM_JOBS.strip().replace("%(worker_id)s", f"'{WORKER}'").replace("%(how_many)s", "{n}"),
    complete="update jobs set status = 'completed' where {match}",
    role="automl_worker",
)

BATCHES = (1, 10, 100)
GOALS = (Goal("floor", 0.8), Goal("pg-boss-style", 1.0))


def _counts(conn: Conn, side: Queue) -> tuple[int, int]:
    """(claimable, completed) jobs of `side`."""
    return cast(tuple[int, int], conn.execute(side.counts).fetchone())


def top_up(conn: Conn, side: Queue, depth: int) -> None:
    """Enqueue jobs until `side` holds `depth` claimable ones."""
    queued, _ = _counts(conn, side)
    if queued < depth:
        conn.execute(side.enqueue, {"count": depth - queued})


class Bench:
    """The sides of the queue benchmark on one database, and the queue depth that keeps them fed."""

    def __init__(self, url: str, depth: int) -> None:
        self.url = url
        self.base_depth = self.depth = depth
        self.sides: list[Queue] = []
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
            for side in (PROJECT, floors.QUEUE, pgboss_style.QUEUE, same_schema.QUEUE):
                if side.requires:
                    try:
                        conn.execute(side.requires)
                    except psycopg.Error as exc:
                        print(f"  {side.label}: left out, the schema changed ({exc.diag.message_primary})")
                        continue
                conn.execute(side.setup)
                self.sides.append(side)

    def refill(self) -> None:
        """Top every queue up to the same depth, then vacuum, so each round starts alike."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            for side in self.sides:
                top_up(conn, side, self.depth)
                conn.execute(f"vacuum analyze {side.table}")

    def reset(self, finished: int) -> None:
        """Start a case from empty queues and `finished` completed jobs, built through each side's own
        claim and completion."""
        self.depth = self.base_depth  # each batch size deepens the queues only as far as it needs
        with psycopg.connect(self.url, autocommit=True) as conn:
            for side in self.sides:
                conn.execute(side.clear)
                if finished:
                    side.finish(conn, finished)
                conn.execute(f"vacuum analyze {side.table}")
            conn.execute("checkpoint")

    def cycles(self, side: Queue, n: int, seconds: int) -> float:
        """Jobs claimed and completed per second in one pgbench run. A run whose queue ran dry (its
        claim found nothing, which fails the script) is discarded and repeated on a deeper queue."""
        url = with_user(self.url, side.role) if side.role else self.url
        with psycopg.connect(self.url, autocommit=True) as conn:
            for _ in range(4):
                _, before = _counts(conn, side)
                start = time.perf_counter()
                try:
                    result = pgbench.run(url, side.cycle(n), seconds=seconds)
                except pgbench.Failed:
                    queued, after = _counts(conn, side)
                    if queued > 0:
                        raise
                    print(f"    {side.label} ran dry after {after - before:,} jobs: again, on a deeper queue")
                    # Three runs' worth at the rate it ran dry at (pgbench's start-up counted in: a lower bound).
                    rate = (after - before) / (time.perf_counter() - start)
                    self.depth = max(self.depth, int(3 * rate * seconds))
                    top_up(conn, side, self.depth)
                    conn.execute(f"vacuum analyze {side.table}")
                    continue
                queued, after = _counts(conn, side)
                # The next refill leaves at least three runs' worth of jobs for every side.
                self.depth = max(self.depth, 3 * (after - before))
                return (after - before) / result.seconds
        raise RuntimeError(f"{side.label}: the queue keeps running dry at n = {n}")

    def case(self, case: str, n: int, seconds: int, rounds: int) -> Row:
        samples = interleaved({side.label: partial(self.cycles, side, n, seconds) for side in self.sides}, rounds,
                              before_round=self.refill)
        print(f"  {case}: " + ", ".join(f"{label} {s.median:,.0f}/s ({s.spread()})" for label, s in samples.items()),
              flush=True)
        project = samples.pop(PROJECT.label).median
        return Row(case, project, {label: s.median for label, s in samples.items()}, GOALS, "jobs/s")


def run(url: str, *, seconds: int, rounds: int, depth: int, finished: int) -> Table:
    bench = Bench(url, depth)
    rows = []
    for n in BATCHES:
        bench.reset(0)
        rows.append(bench.case(f"n = {n}, no finished jobs", n, seconds, rounds))
    bench.reset(finished)
    rows.append(bench.case(f"n = 1, {finished:,} finished jobs", 1, seconds, rounds))
    return Table(
        key="queue",
        title="Job queue: claim + complete",
        about=(
            "automl_db: the typed API's claim (`queries.CLAIM_JOBS`: `update jobs j set status = 'running',"
            " worker_id = ... from (select id ... for update skip locked limit n) picked ... returning j.*`, the"
            " statement of claim_jobs() run directly) then `update jobs set status = 'completed'"
            " where id = ...` (status machine, stamps and row-level security included), as automl_worker. For"
            " n > 1 the claim aggregates the ids (`select array_agg(id) ...`) and the completion takes them all"
            " (`where id = any (:ids::uuid[])`). Floor: a bare `with picked as (select id ... for update skip"
            " locked limit n) update ... set status = 'running', worker_id, started_at returning id` and an"
            " UPDATE to completed, on a minimal table with only the partial claim index. pg-boss-style: a table"
            " shaped like pg-boss's job table with its claim (`with next as (select id ... where state <"
            " 'active' order by priority desc, created_on, id limit n for update skip locked) update ... set"
            " state = 'active', started_on = now(), retry_count = retry_count + 1`) and completion (`set state ="
            " 'completed', completed_on = now(), output = ...`), its claim index in claim order. Same schema:"
            " the floor's statements on a copy of `jobs` (`LIKE ... INCLUDING ALL`), setting what the triggers"
            " set. Figures are jobs per second (claimed and completed), counted in the tables. Every queue is"
            f" topped up to the same depth, at least {depth:,} jobs, before each round; a run that empties its"
            " queue is discarded and run again on a deeper one. Each case starts from empty queues; the"
            f" finished-jobs case adds {finished:,} jobs each side enqueued, claimed and completed itself."
        ),
        project="automl_db",
        baselines=("floor", "same schema", "pg-boss-style"),
        setting=f"pgbench -M prepared, {pgbench.CLIENTS} clients, {seconds} s per run,"
                f" median of {rounds} interleaved rounds",
        rows=rows,
        notes=[f"{rows[-1].case} / no finished jobs, n = 1 (automl_db): **{rows[-1].project / rows[0].project:.2f}**."],
    )
