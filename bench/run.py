"""`just bench`: build a fresh benchmark database by the migrations, measure every hot path against
its physical floor and its other baselines in the same run, audit the database, and write the
figures to docs/benchmarks.md.

    python -m bench.run [--seconds N] [--rounds N] [--quick] [--only ledger|queue|costs|api|replication]

--quick: small tables and short runs (a smoke test). --only: one benchmark, printed, nothing written.
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from automl_db.tools import scratch
from bench import client, costs, ledger, queue, replication, report, sides

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Sizes:
    accounts: int  # ledger accounts
    history: int  # ledger entries per account in the history case
    finished: int  # finished jobs in the history case
    depth: int  # queued jobs each queue holds at least, before every round


FULL = Sizes(accounts=1000, history=1000, finished=1_000_000, depth=200_000)
QUICK = Sizes(accounts=1000, history=10, finished=10_000, depth=50_000)


def _commit() -> str:
    """The checkout's commit, marked when it has uncommitted changes: figures belong to a state."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        # The figures' own file is rewritten by every run: it does not make the code a different state.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)docs/benchmarks.md"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} (with uncommitted changes)" if dirty else sha


def main(argv: list[str] | None = None) -> int:
    args_given = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, help="duration of each run (default 5; --quick: 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per figure (default 5; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="small tables, short runs (smoke test)")
    parser.add_argument("--only", choices=["ledger", "queue", "costs", "api", "replication"],
                        help="run one benchmark, print, write nothing")
    args = parser.parse_args(args_given)

    # A scratch database of this process (automl_bench_<pid>), dropped at the end: runs on one
    # server never collide, and a killed run's is dropped by the next test run or `automl-db reset`.
    with scratch.database("bench") as url:
        sides.prepare(url)
        return _run(args, args_given, url)


def _run(args: argparse.Namespace, args_given: list[str], url: str) -> int:
    seconds = args.seconds or (1 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 5)
    sizes = QUICK if args.quick else FULL
    with psycopg.connect(url) as conn:
        version = conn.execute("show server_version").fetchone()
    # Everything but --only, to name the command that reruns one table with the same settings.
    rest: list[str] = []
    given = iter(args_given)
    for arg in given:
        if arg == "--only":
            next(given, None)
        elif not arg.startswith("--only="):
            rest.append(arg)
    run = report.Run(
        command="just bench" + "".join(" " + shlex.quote(a) for a in args_given),
        only_command="python -m bench.run --only {key}" + "".join(" " + shlex.quote(a) for a in rest),
        server=f"PostgreSQL {version[0] if version else '?'}"
               f" ({'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'})",
        cores=os.cpu_count() or 0,
        python=platform.python_version(),
        date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        commit=_commit(),
    )

    benchmarks: dict[str, Callable[[], report.Table | report.Figures]] = {
        # The ledger first, so its empty case starts from an empty ledger; the queue resets its own state.
        "ledger": lambda: ledger.run(url, seconds=seconds, rounds=rounds, accounts=sizes.accounts,
                                     history=sizes.history),
        "queue": lambda: queue.run(url, seconds=seconds, rounds=rounds, depth=sizes.depth, finished=sizes.finished),
        # On a scratch copy of its own: it takes the rules of jobs away one by one (ten steps, so at
        # most three rounds each).
        "costs": lambda: costs.run(seconds=seconds, rounds=min(rounds, 3), depth=sizes.depth),
        "api": lambda: client.run(url, seconds=seconds, rounds=rounds, depth=sizes.depth // 10),
        # Its own primary and standby from the embedded binaries, whatever DATABASE_URL says.
        "replication": lambda: replication.run(seconds=seconds, rounds=rounds, accounts=sizes.accounts),
    }
    tables: list[report.Table | report.Figures] = []
    for key, benchmark in benchmarks.items():
        if args.only in (None, key):
            print(f"{key} ...", flush=True)
            start = time.perf_counter()
            tables.append(benchmark())
            print(f"{key}: {time.perf_counter() - start:.0f} s", flush=True)

    with psycopg.connect(url) as conn:
        broken = conn.execute("select * from check_integrity()").fetchall()
    for row in broken[:20]:
        print("  broken:", row)
    if args.only:
        print("\n".join(report.section(tables[0], run)))
        print(f"check_integrity(): {len(broken)} broken invariants")
    else:
        text = report.document(tables, run, len(broken))
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
        print(text)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
