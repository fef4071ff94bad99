"""`just bench`: build a fresh benchmark database by the migrations, run every benchmark against
its raw baseline in the same run, and write the figures to docs/benchmarks.md.

    python -m bench.run [--seconds N] [--quick]
"""

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from automl_db import migrate
from automl_db.database import resolve_url, with_database
from bench import api, integrity

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = with_database(server_url, name)
    migrate.apply(url)
    return url


def table(figures: list[integrity.Figure], unit: str, goal: str) -> list[str]:
    lines = [f"| case | automl_db {unit} | same schema, no triggers | ratio | bare tables | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {f.case} | {f.project:,.0f} | {f.same_schema:,.0f} | **{f.project / f.same_schema:.2f}** "
              f"| {f.bare:,.0f} | {f.project / f.bare:.2f} |" for f in figures]
    scale = figures[1].project / figures[0].project
    lines += ["", f"Large table / empty table (automl_db): **{scale:.2f}**. Goals: {goal}."]
    return lines


def _fmt(figure: float, unit: str) -> str:
    return f"{figure:,.2f} {unit}" if unit == "ms" else f"{figure:,.0f} {unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each pgbench run")
    parser.add_argument("--quick", action="store_true", help="small tables, short runs (smoke test)")
    parser.add_argument("--only", choices=["ledger", "queue", "api"], help="run one benchmark, print, write nothing")
    args = parser.parse_args(argv)
    seconds = 2 if args.quick else args.seconds
    history, finished, queued = (10, 10_000, 20_000) if args.quick else (1000, 1_000_000, 200_000)

    server = resolve_url()
    url = fresh_database(server, "automl_bench")
    with psycopg.connect(url) as conn:
        version = conn.execute("show server_version").fetchone()
    integrity.prepare(url)
    if args.only == "ledger":
        integrity.ledger(url, seconds, history)
    elif args.only == "queue":
        integrity.queue(url, seconds, finished, queued)
    elif args.only == "api":
        api.run(url, seconds)
    if args.only:
        return 0
    print("typed API ...", flush=True)
    api_rows = api.run(url, seconds)
    print("ledger ...", flush=True)
    ledger_rows = integrity.ledger(url, seconds, history)
    print("queue ...", flush=True)
    queue_rows = integrity.queue(url, seconds, finished, queued)
    with psycopg.connect(url) as conn:
        broken = conn.execute("select count(*) from check_integrity()").fetchone()

    where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded"
    command = "just bench" + (" --quick" if args.quick else "") + (
        f" --seconds {args.seconds}" if args.seconds != 5 and not args.quick else "")
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` (`python -m bench.run`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC:",
        f"PostgreSQL {version[0] if version else '?'} ({where}),"
        f" {os.cpu_count()} cores, Python {platform.python_version()}, pgbench with {integrity.CLIENTS} clients,"
        f" {seconds} s per run; each figure is the median of {integrity.ROUNDS} rounds that interleave automl_db"
        " and its baselines in the same run.",
        "",
        "## Credit ledger: one entry per transaction",
        "",
        "automl_db: a client `insert into credit_transactions (user_id, type, amount, description)`; the",
        "posting trigger checks the rules, moves `users.credit_balance` and fills `entry_number` and",
        "`balance_after`. Baselines do the same work by hand in one statement (`with moved as (update",
        "... returning) insert ...`), without triggers: *same schema* on copies of `users` and",
        "`credit_transactions` (`LIKE ... INCLUDING ALL`: same CHECKs, indexes, defaults, user FK), so",
        "its ratio is the cost of the database keeping the rules; *bare* on minimal tables with keys only.",
        f"{integrity.USERS} accounts, random account per transaction.",
        "",
        *table(ledger_rows, "tps", "same-schema ratio >= 0.8; large/empty >= 0.9"),
        "",
        "## Job queue: claim + complete cycles",
        "",
        "automl_db: `select id from claim_jobs('bench-worker')` then `update jobs set status = 'completed'`",
        "(status machine, stamps and credit triggers included). Baselines: the same SKIP LOCKED claim",
        "and completion by hand, on a copy of `jobs` (`LIKE ... INCLUDING ALL`) and on a bare table with",
        f"only the partial claim index. {queued:,} queued jobs at the start.",
        "",
        *table(queue_rows, "cycles/s", "automl_db >= 1,500 cycles/s on 2 cores; large/empty >= 0.8"),
        "",
        "## Typed API against raw psycopg",
        "",
        "The generated functions (`automl_db.queries`, pydantic rows, typed errors) against raw psycopg",
        "running the same SQL constant, on the same pool, one transaction per call; throughput with",
        f"{api.THREADS} threads, and the median time of listing 1,000 jobs (20 columns) in one thread.",
        "",
        "| case | typed | raw psycopg | typed / raw |",
        "|---|---:|---:|---:|",
        *[f"| {f.case} | {_fmt(f.typed, f.unit)} | {_fmt(f.raw, f.unit)} | **{f.typed / f.raw:.2f}** |"
          for f in api_rows],
        "",
        "Goals: single-row throughput >= 0.9 of raw; listing 1,000 rows <= 1.5x raw time.",
        "",
        f"`check_integrity()` after the runs: {broken[0] if broken else '?'} broken invariants.",
        "",
    ]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
