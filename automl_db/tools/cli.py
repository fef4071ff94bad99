"""`automl-db`: the embedded server, migrations (new ones too), status, schema/ vs migrations/ diff,
a SQL shell, URLs, reset, completion.

Every failure is one line on stderr and exit status 1 (usage errors: one line, status 2); no
tracebacks for expected trouble: an unreachable server, a failed migration, a bad setting, a
data directory of another PostgreSQL version, stdout closed early (`automl-db up | head`).
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, cast

import aiosql
import psycopg
from psycopg import sql

from automl_db import __version__
from automl_db.config import Settings
from automl_db.errors import AutomlDbError
from automl_db.tools import completion, embedded, migrate, newmigration, schemadiff, scratch
from automl_db.tools.paths import migrations_dir, queries_dir
from automl_db.urls import (
    LOCAL_LOGIN_ROLES,
    connect,
    describe,
    enable_local_logins,
    resolve_url,
    with_database,
    with_user,
)

PROG = "automl-db"
#: Databases reset never drops: the server's own, which other databases are made from.
MAINTENANCE_DATABASES = ("postgres", "template0", "template1")


class CommandError(AutomlDbError):
    """A command refused what it was asked (reset without --yes on DATABASE_URL, an unknown role...)."""


# -- commands -----------------------------------------------------------------------------------


def _server(args: argparse.Namespace, extra: list[str]) -> None:
    print(resolve_url(Settings.from_env()))


def _stop(args: argparse.Namespace, extra: list[str]) -> None:
    settings = Settings.from_env()
    stopped = embedded.stop(settings.embedded_data_dir, settings.embedded_pg_version)
    print(f"embedded server in {settings.embedded_data_dir} " + ("stopped" if stopped else "was not running"))


def _migrate(args: argparse.Namespace, extra: list[str]) -> None:
    settings = Settings.from_env()
    url = resolve_url(settings)
    applied = migrate.apply(url)
    if not settings.database_url:
        enable_local_logins(url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; none pending"))


def _status(args: argparse.Namespace, extra: list[str]) -> None:
    url = resolve_url(Settings.from_env())
    states = migrate.status(url)
    pending = sum(not s.applied for s in states)
    if args.json:
        _print_json({"database": describe(url),
                     "migrations": [{"id": s.id, "applied": s.applied, "on_disk": s.on_disk} for s in states],
                     "applied": len(states) - pending, "pending": pending})
        return
    print(f"database: {describe(url)}")
    for state in states:
        note = "  (not in migrations/)" if not state.on_disk else ""
        print(f"  {'applied' if state.applied else 'pending'}  {state.id}{note}")
    print(f"{len(states) - pending} applied, {pending} pending")


def _up(args: argparse.Namespace, extra: list[str]) -> None:
    settings = Settings.from_env()
    url = resolve_url(settings)
    applied = _build(url, embedded_server=not settings.database_url)
    summary = _summary(url)
    if args.json:
        _print_json({"database": describe(url), "migrations_applied": applied, **summary})
        return
    print(f"database   {describe(url)}")
    print(f"migrations {len(applied)} applied now, schema up to date")
    print("\ntable                     rows")
    for name, rows in summary["tables"].items():
        print(f"  {name:<24}{rows:>6}")
    print("\ntier        storage   datasets workflows models")
    for tier in summary["tiers"]:
        limits = f"{_limit(tier['max_datasets']):>8} {_limit(tier['max_workflows']):>9} {_limit(tier['max_models']):>6}"
        print(f"  {tier['tier']:<10}{tier['max_storage_bytes'] / 2**30:>6.0f} GiB {limits}")
    print("\ncredit package     credits   price  for")
    for package in summary["credit_packages"]:
        print(f"  {package['name']:<16}{package['credits']:>8} {package['price_cents'] / 100:>7.2f}"
              f"  {package['tier_restriction']}")


def _url(args: argparse.Namespace, extra: list[str]) -> None:
    url = resolve_url(Settings.from_env())
    print(_as_role(url, args.role) if args.role else url)


def _psql(args: argparse.Namespace, extra: list[str]) -> None:
    """Replace this process with the server's own psql: a client of another major version can
    misread the catalog (psql 15's \\l on PostgreSQL 18: column d.daticulocale does not exist)."""
    url = resolve_url(Settings.from_env())
    with connect(url) as conn:
        row = conn.execute("select current_setting('server_version_num')::int / 10000").fetchone()
    major = int(cast(int, row[0])) if row else 0
    target = _as_role(url, args.role) if args.role else url
    program = embedded.binary("psql", major)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    sys.stdout.flush()
    os.execv(program, [program, f"--dbname={target}", *extra])


def _reset(args: argparse.Namespace, extra: list[str]) -> None:
    """Drop leftover scratch databases, then drop and rebuild the database (unless --scratch-only).
    Without DATABASE_URL that is the embedded server's private database; DATABASE_URL's server is
    someone's to lose, so nothing happens there without --yes."""
    settings = Settings.from_env()
    if settings.database_url and not args.yes:
        what = "drop its leftover scratch databases" if args.scratch_only else "drop and rebuild that database"
        raise CommandError(f"DATABASE_URL is set ({describe(settings.database_url)}): reset would {what};"
                           " run it again with --yes if you mean it")
    url = resolve_url(settings)
    with connect(url, autocommit=True) as conn:
        row = conn.execute("select current_database(), pg_get_userbyid(datdba) from pg_database"
                           " where datname = current_database()").fetchone()
    assert row is not None
    database, owner = str(row[0]), str(row[1])
    if not args.scratch_only and database in MAINTENANCE_DATABASES:
        raise CommandError(f"will not drop {database}, the server's maintenance database: point DATABASE_URL at the"
                           " application's own database, or use --scratch-only")
    admin = url if database in MAINTENANCE_DATABASES else with_database(url, "postgres")
    cleanup = scratch.drop_leftovers(admin, include_untagged=True)
    print(f"dropped {len(cleanup.dropped)} scratch database(s)"
          + (": " + ", ".join(cleanup.dropped) if cleanup.dropped else ""))
    for name, reason in cleanup.kept:
        print(f"kept {name}: {reason}")
    if args.scratch_only:
        return
    with connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(database), sql.Identifier(owner)))
    applied = _build(url, embedded_server=not settings.database_url)
    print(f"dropped and recreated database {database}; applied {len(applied)} migration(s); reference data loaded")


def _migration(args: argparse.Namespace, extra: list[str]) -> None:
    """`migration new NAME`: the next numbered pair of migration files, from the project's template."""
    created = newmigration.create(args.name, args.migrations_dir)
    if args.json:
        _print_json({"id": created.id, "depends": created.depends,
                     "files": [str(created.forward), str(created.rollback)]})
        return
    print(_shown(created.forward))
    print(_shown(created.rollback))


def _diff(args: argparse.Namespace, extra: list[str]) -> int:
    """Build schema/ and migrations/ into two scratch databases; print the draft SQL that takes the
    migrations' catalog to schema/'s. Status 0 when they agree, 1 when they differ (for CI)."""
    for option, given in (("--schema-dir", args.schema_dir), ("--migrations-dir", args.migrations_dir)):
        if given is not None and not given.is_dir():
            raise CommandError(f"{option} {given} is not a directory")
    url = resolve_url(Settings.from_env())
    difference = schemadiff.diff(url, schema=args.schema_dir, migrations=args.migrations_dir)
    if args.json:
        _print_json(difference.as_json())
    elif difference.identical:
        print("no difference: migrations/ and schema/ build the same catalog")
    else:
        print(difference.text(), end="")
    return 0 if difference.identical else 1


def _completion(args: argparse.Namespace, extra: list[str]) -> None:
    parser = build_parser()
    print(completion.bash(parser) if args.shell == "bash" else completion.zsh(parser), end="")


# -- helpers -------------------------------------------------------------------------------------


def _build(url: str, *, embedded_server: bool) -> list[str]:
    """Migrate, let the roles log in (embedded server only), load reference data; the ids applied."""
    applied = migrate.apply(url)
    if embedded_server:
        enable_local_logins(url)
    queries = aiosql.from_path(queries_dir() / "reference_data.sql", "psycopg")
    with connect(url) as conn:
        queries.seed_reference_data(conn)
        conn.commit()
    return applied


def _summary(url: str) -> dict[str, Any]:
    """What the database holds: rows per table, the tiers' limits, the packages on offer."""
    queries = aiosql.from_path(queries_dir() / "reference_data.sql", "psycopg")
    with connect(url) as conn:
        conn.read_only = True
        tables = {str(name): _count(conn, str(name)) for (name,) in queries.schema_tables(conn)}
        tiers = conn.execute(
            "select tier::text, max_storage_bytes, max_datasets, max_workflows, max_models"
            " from tier_limits order by tier_limits.tier").fetchall()
        packages = conn.execute(
            "select name, credits, price_cents, tier_restriction::text from credit_packages"
            " where is_active order by credits").fetchall()
    return {
        "tables": tables,
        "tiers": [dict(zip(("tier", "max_storage_bytes", "max_datasets", "max_workflows", "max_models"), row,
                           strict=True)) for row in tiers],
        "credit_packages": [dict(zip(("name", "credits", "price_cents", "tier_restriction"), row, strict=True))
                            for row in packages],
    }


def _count(conn: psycopg.Connection[tuple[object, ...]], table: str) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _limit(value: object) -> str:
    return "-" if value is None else str(value)


def _as_role(url: str, role: str) -> str:
    """url logged in as role, once the role is known to be able to log in there."""
    with connect(url) as conn:
        row = conn.execute("select rolcanlogin from pg_roles where rolname = %s", [role]).fetchone()
    if row is None:
        raise CommandError(f"role {role} does not exist on {describe(url)}: run `{PROG} up` (or migrate) first")
    if not row[0]:
        raise CommandError(f"role {role} cannot log in on {describe(url)}: `{PROG} up` lets the schema's roles log in"
                           " to the embedded server; elsewhere give the service its own login (README, Deployment)")
    return with_user(url, role)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2, default=str))


def _version() -> str:
    try:
        version = metadata.version("automl_db")
    except metadata.PackageNotFoundError:
        version = __version__
    try:
        latest = max(p.name.removesuffix(".sql") for p in migrations_dir().glob("*.sql")
                     if not p.name.endswith(".rollback.sql") and not p.name.startswith("post-apply"))
    except (FileNotFoundError, ValueError):
        return f"{PROG} {version}"
    return f"{PROG} {version} (migrations up to {latest})"


# -- parser and main -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error in one line (argparse prints the whole usage first)."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Command:
    #: What it does; it may return the exit status (None: 0).
    run: Callable[[argparse.Namespace, list[str]], int | None]
    help: str
    configure: Callable[[argparse.ArgumentParser], None] | None = None


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text (for CI)")


def _role_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=LOCAL_LOGIN_ROLES, help="log in as this runtime role instead of the"
                        " administrator (the role must be able to log in: `automl-db up` allows it locally)")


def _psql_options(parser: argparse.ArgumentParser) -> None:
    _role_option(parser)
    parser.set_defaults(passthrough=True)


def _reset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true",
                        help="also act when DATABASE_URL is set (its database is dropped and rebuilt)")
    parser.add_argument("--scratch-only", action="store_true",
                        help="only drop leftover test and tool databases (automl_<kind>_<pid>...: automl_t_*,"
                             " automl_tpl_*, automl_codegen_*, automl_bench_*...; also the fixed names of earlier"
                             " versions, automl_codegen, automl_bench...)")


def _migration_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("new",), help="new: write the next numbered migration pair")
    parser.add_argument("name", help="what it does, lower-case words and dashes (e.g. add-model-tags)")
    parser.add_argument("--migrations-dir", type=Path, help="where to write it (default: the checkout's migrations/)")
    _json_option(parser)


def _diff_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema-dir", type=Path, help="the schema files to build (default: schema/)")
    parser.add_argument("--migrations-dir", type=Path, help="the migrations to apply (default: migrations/)")
    _json_option(parser)


def _completion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell to print a completion script for")


COMMANDS: dict[str, Command] = {
    "up": Command(_up, "server + migrations + reference data, then a summary of what exists", _json_option),
    "server": Command(_server, "start the embedded PostgreSQL server (unless DATABASE_URL is set) and print its URL"),
    "stop": Command(_stop, "stop the embedded PostgreSQL server"),
    "migrate": Command(_migrate, "apply pending migrations"),
    "status": Command(_status, "list migrations, applied and pending (read-only)", _json_option),
    "migration": Command(_migration, "migration new NAME: write the next numbered migration and its rollback"
                         " from the template", _migration_options),
    "diff": Command(_diff, "build schema/ and migrations/ in scratch databases and print draft SQL from the"
                    " migrations' catalog to schema/'s (status 1 when they differ)", _diff_options),
    "psql": Command(_psql, "open the server's own psql on the database; other arguments go to psql"
                    " (e.g. automl-db psql -c 'table tier_limits')", _psql_options),
    "url": Command(_url, "print the database's URL, for scripts and GUI tools", _role_option),
    "reset": Command(_reset, "drop leftover test databases, then drop and rebuild the database", _reset_options),
    "completion": Command(_completion, "print a shell completion script (bash or zsh)", _completion_options),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="automl_db database tool. Settings: DATABASE_URL, AUTOML_DB_* (README).")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        if command.configure:
            command.configure(child)
    return parser


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    name = f"{PROG} {args.command}"
    try:
        status = COMMANDS[args.command].run(args, extra) or 0
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler, not at exit
    except BrokenPipeError:
        # The reader went away (`automl-db up | head`): nothing to tell it. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except AutomlDbError as exc:
        print(f"{name}: {_one_line(str(exc)) or type(exc).__name__}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        message = exc.diag.message_primary or _one_line(str(exc)) or type(exc).__name__
        print(f"{name}: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    except OSError as exc:  # a data directory that cannot be written, a program that cannot run
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{name}: {exc.strerror or _one_line(str(exc)) or type(exc).__name__}{where}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
