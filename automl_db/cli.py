"""`automl-db`: start the embedded server, migrate, report status, load reference data.

Every failure is one line on stderr and exit status 1; no tracebacks for expected trouble.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import cast

import aiosql
import psycopg
from psycopg import sql

from automl_db import embedded, migrate
from automl_db.config import Settings
from automl_db.database import connect, describe, enable_local_logins, resolve_url
from automl_db.errors import AutomlDbError
from automl_db.paths import queries_dir


def _server(settings: Settings) -> None:
    print(resolve_url(settings))


def _stop(settings: Settings) -> None:
    stopped = embedded.stop(settings.embedded_data_dir, settings.embedded_pg_version)
    print(f"embedded server in {settings.embedded_data_dir} " + ("stopped" if stopped else "was not running"))


def _migrate(settings: Settings) -> None:
    url = resolve_url(settings)
    applied = migrate.apply(url)
    if not settings.database_url:
        enable_local_logins(url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; none pending"))


def _status(settings: Settings) -> None:
    url = resolve_url(settings)
    states = migrate.status(url)
    print(f"database: {describe(url)}")
    for state in states:
        print(f"  {'applied' if state.applied else 'pending'}  {state.id}")
    pending = sum(not s.applied for s in states)
    print(f"{len(states) - pending} applied, {pending} pending")


def _up(settings: Settings) -> None:
    url = resolve_url(settings)
    applied = migrate.apply(url)
    if not settings.database_url:
        enable_local_logins(url)
    queries = aiosql.from_path(queries_dir() / "reference_data.sql", "psycopg")
    with connect(url) as conn:
        queries.seed_reference_data(conn)
        conn.commit()
        counts = [(name, _count(conn, name)) for (name,) in queries.schema_tables(conn)]
        tiers = conn.execute(
            "select tier::text, max_storage_bytes, max_datasets, max_workflows, max_models"
            " from tier_limits order by tier_limits.tier").fetchall()
        packages = conn.execute(
            "select name, credits, price_cents, tier_restriction::text from credit_packages"
            " where is_active order by credits").fetchall()
    print(f"database   {describe(url)}")
    print(f"migrations {len(applied)} applied now, schema up to date")
    print("\ntable                     rows")
    for name, rows in counts:
        print(f"  {name:<24}{rows:>6}")
    print("\ntier        storage   datasets workflows models")
    for tier, storage, datasets, workflows, models in tiers:
        storage = cast(int, storage)
        limits = f"{_limit(datasets):>8} {_limit(workflows):>9} {_limit(models):>6}"
        print(f"  {tier:<10}{storage / 2**30:>6.0f} GiB {limits}")
    print("\ncredit package     credits   price  for")
    for name, credits, cents, restriction in packages:
        cents = cast(int, cents)
        print(f"  {name:<16}{credits:>8} {cents / 100:>7.2f}  {restriction}")


def _count(conn: psycopg.Connection[tuple[object, ...]], table: str) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _limit(value: object) -> str:
    return "-" if value is None else str(value)


COMMANDS: dict[str, tuple[Callable[[Settings], None], str]] = {
    "server": (_server, "start the embedded PostgreSQL server (unless DATABASE_URL is set) and print its URL"),
    "stop": (_stop, "stop the embedded PostgreSQL server"),
    "migrate": (_migrate, "apply pending migrations"),
    "status": (_status, "list migrations, applied and pending"),
    "up": (_up, "server + migrations + reference data, then a summary of what exists"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="automl-db", description="automl_db database tool")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command][0](Settings.from_env())
    except AutomlDbError as exc:
        print(f"automl-db {args.command}: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
        print(f"automl-db {args.command}: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
