"""Where the queue's time goes: the claim + complete cycle (n = 1) measured against its floor while
the rules of `jobs` are taken away one at a time, cumulatively, on a scratch copy of the schema of
its own (the benchmark database keeps every rule, for its audit).

Each step's ratio to the floor, and what the step gained, shows what each rule costs, so a goal the
queue misses comes with the experiment that says what stands in its way.
"""

import dataclasses
import statistics

import psycopg

from automl_db.tools import scratch
from bench import pgbench, queue, sides
from bench.report import Figures, Part

#: (what is taken away, the SQL that takes it away); None: run as the administrator instead of
#: automl_worker, which row-level security then no longer filters.
STEPS: list[tuple[str, str | None]] = [
    ("row-level security (run as the administrator)", None),
    ("the transition trigger (status machine, stamps, frozen terms)",
     "alter table jobs disable trigger jobs_check_transition"),
    ("the settlement trigger (charges and refunds; its WHEN is false on this path)",
     "alter table jobs disable trigger jobs_settle_credits_on_update"),
    ("the lock-order statement trigger (its WHEN is false: no acting user)",
     "alter table jobs disable trigger jobs_lock_acting_user"),
    ("the stall rescuer's index (jobs_running_idx)", "drop index jobs_running_idx"),
    ("the snapshot foreign key's index (jobs_snapshot_idx)", "drop index jobs_snapshot_idx"),
    ("a user's listing index (jobs_user_created_idx)", "drop index jobs_user_created_idx"),
    ("the tenant key that job_nodes, models and experiment_runs reference (jobs_id_user_key)",
     "alter table jobs drop constraint jobs_id_user_key cascade"),
    ("the foreign keys to users and workflow_snapshots",
     "alter table jobs drop constraint jobs_snapshot_fkey, drop constraint jobs_user_id_fkey"),
]


def run(*, seconds: int, rounds: int, depth: int) -> Figures:
    rows: list[list[str]] = []
    with scratch.database("bench", suffix="costs") as url:
        sides.prepare(url)
        bench = queue.Bench(url, depth)
        project = next(s for s in bench.sides if s.label == queue.PROJECT.label)
        floor = next(s for s in bench.sides if s.label == "floor")
        bench.sides = [project, floor]
        previous: float | None = None
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("set search_path = automl, public")
            for taken, change in [("nothing: every rule", ""), *STEPS]:
                if change is None:
                    project = dataclasses.replace(project, role=None)
                elif change:
                    admin.execute(change)
                ratios, rates = [], []
                for _ in range(rounds):
                    bench.refill()
                    rate = bench.cycles(project, 1, seconds)
                    rates.append(rate)
                    ratios.append(rate / bench.cycles(floor, 1, seconds))
                ratio, rate = statistics.median(ratios), statistics.median(rates)
                print(f"  taken away: {taken}: {rate:,.0f} jobs/s, {ratio:.2f} of the floor", flush=True)
                rows.append([taken, f"{rate:,.0f}", f"{ratio:.2f}",
                             "" if previous is None else f"{ratio - previous:+.2f}"])
                previous = ratio
    return Figures(
        key="costs",
        title="Where the queue's time goes",
        about=(
            "The queue's claim + complete (n = 1, as in the queue table) on a scratch copy of the schema, with"
            " the rules of `jobs` taken away one at a time, cumulatively, each step measured against the floor"
            " in interleaved rounds. What a step gains is what that rule costs the cycle. The last row is `jobs`"
            " with none of them left: its remaining gap to the floor is the wider row (20 columns against the"
            " floor's 7) and the column domains' checks."
        ),
        setting=f"pgbench -M prepared, {pgbench.CLIENTS} clients, {seconds} s per run, median of {rounds} interleaved"
                " rounds",
        parts=[Part("Claim + complete without ... (cumulative):",
                    ["taken away (cumulative)", "automl_db jobs/s", "automl_db / floor", "gain"], rows)],
    )
