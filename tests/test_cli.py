"""`automl-db` as an operator uses it: real subprocesses, real databases, one-line errors.

These run against DATABASE_URL's kind of server (the test server); the commands that act on the
embedded server itself (reset, stop, psql without DATABASE_URL) are in test_cli_embedded.py.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from automl_db.errors import MigrationFailed
from automl_db.tools import migrate
from automl_db.tools.paths import PROJECT_ROOT, migrations_dir
from tests.conftest import scratch_database

MIGRATIONS = sorted(p.name.removesuffix(".sql") for p in migrations_dir().glob("*.sql")
                    if not p.name.endswith(".rollback.sql") and not p.name.startswith("post-apply"))


def run_cli(*args: str, database_url: str | None, env: dict[str, str] | None = None,
            stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The worktree's automl-db in a subprocess; env adds variables, stdout may be a file descriptor."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "automl_db.tools.cli", *args], env=environment, text=True,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=120, check=False, cwd=PROJECT_ROOT)


def one_line_error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The single stderr line of a failed command (and nothing on stdout)."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def empty_db(server_url: str) -> Iterator[str]:
    with scratch_database(server_url, "cli") as url:
        yield url


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute(
            "select tablename from pg_tables where schemaname in ('public', 'automl')")}


def test_migrate_then_status(empty_db: str) -> None:
    before = run_cli("status", database_url=empty_db)
    assert before.returncode == 0
    assert "0 applied" in before.stdout
    assert "pending  0001" in before.stdout
    first = run_cli("migrate", database_url=empty_db)
    assert first.returncode == 0, first.stderr
    assert "0001.initial-schema" in first.stdout
    again = run_cli("migrate", database_url=empty_db)
    assert again.returncode == 0
    assert "none pending" in again.stdout
    after = run_cli("status", database_url=empty_db)
    assert "0 pending" in after.stdout
    assert "applied  0001.initial-schema" in after.stdout


def test_up_loads_reference_data_and_summarizes(empty_db: str) -> None:
    result = run_cli("up", database_url=empty_db)
    assert result.returncode == 0, result.stderr
    assert "credit_packages" in result.stdout
    assert "Starter" in result.stdout
    assert "enterprise" in result.stdout
    assert run_cli("up", database_url=empty_db).returncode == 0  # idempotent


@pytest.mark.parametrize("command", ["status", "migrate", "up", "server"])
def test_unreachable_server_is_one_clear_line(command: str) -> None:
    result = run_cli(command, database_url="postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    if command == "server":  # DATABASE_URL wins: nothing to start, the URL is printed
        assert result.returncode == 0
        assert result.stdout.strip().endswith("/none?connect_timeout=2")
        return
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"automl-db {command}: cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1")


def test_failed_migration_names_itself_and_keeps_the_database(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001.ok.sql").write_text("create table kept (id int);")
    (tmp_path / "0001.ok.rollback.sql").write_text("drop table kept;")
    (tmp_path / "0002.broken.sql").write_text("create table half (id int);\nselect * from no_such_table;")
    (tmp_path / "0002.broken.rollback.sql").write_text("drop table half;")
    with pytest.raises(MigrationFailed) as caught:
        migrate.apply(empty_db, source=tmp_path)
    assert caught.value.migration == "0002.broken"
    assert 'relation "no_such_table" does not exist' in str(caught.value)
    states = {s.id: s.applied for s in migrate.status(empty_db, source=tmp_path)}
    assert states == {"0001.ok": True, "0002.broken": False}


def test_cli_reports_a_failed_migration_in_one_line(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001.broken.sql").write_text("alter table nowhere add column x int;")
    (tmp_path / "0001.broken.rollback.sql").write_text("select 1;")
    env_url = empty_db
    code = (
        "import sys, pathlib, automl_db.tools.migrate as m, automl_db.tools.cli as c;"
        f"m.migrations_dir = lambda: pathlib.Path({str(tmp_path)!r});"
        "sys.exit(c.main(['migrate']))"
    )
    env = {**os.environ, "DATABASE_URL": env_url}
    result = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                            timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'automl-db migrate: migration 0001.broken failed: relation "nowhere" does not exist')


def test_version() -> None:
    result = run_cli("--version", database_url=None)
    assert result.returncode == 0
    assert result.stdout.strip() == f"automl-db 0.1.0 (migrations up to {MIGRATIONS[-1]})"


def test_status_writes_nothing_into_a_database_without_migrations(empty_db: str) -> None:
    result = run_cli("status", "--json", database_url=empty_db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["applied"] == 0
    assert report["pending"] == len(MIGRATIONS)
    assert [m["id"] for m in report["migrations"]] == MIGRATIONS
    assert tables(empty_db) == set()  # no _yoyo_migration, _yoyo_log, yoyo_lock...


def test_status_json_after_migrate_and_a_migration_missing_on_disk(empty_db: str) -> None:
    assert run_cli("migrate", database_url=empty_db).returncode == 0
    with psycopg.connect(empty_db) as conn:  # as if a newer checkout had applied a migration
        conn.execute("insert into _yoyo_migration (migration_hash, migration_id, applied_at_utc)"
                      " values ('f00', '9999.from-the-future', now())")
    report = json.loads(run_cli("status", "--json", database_url=empty_db).stdout)
    assert (report["applied"], report["pending"]) == (len(MIGRATIONS) + 1, 0)
    assert report["migrations"][-1] == {"id": "9999.from-the-future", "applied": True, "on_disk": False}
    text = run_cli("status", database_url=empty_db).stdout
    assert "applied  9999.from-the-future  (not in migrations/)" in text


def test_up_json(empty_db: str) -> None:
    result = run_cli("up", "--json", database_url=empty_db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["migrations_applied"] == MIGRATIONS
    assert report["tables"]["credit_packages"] == 4
    assert report["tables"]["users"] == 0
    assert [t["tier"] for t in report["tiers"]] == ["free", "pro", "enterprise"]
    assert report["tiers"][2]["max_datasets"] is None
    assert {"name": "Starter", "credits": 100, "price_cents": 999, "tier_restriction": "none"} in (
        report["credit_packages"])
    assert json.loads(run_cli("up", "--json", database_url=empty_db).stdout)["migrations_applied"] == []


def test_url_and_role_urls(db_url: str) -> None:
    assert run_cli("url", database_url=db_url).stdout.strip() == db_url
    for role in ("automl_app", "automl_readonly"):
        result = run_cli("url", "--role", role, database_url=db_url)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(result.stdout.strip()) as conn:
            assert conn.execute("select current_user").fetchone() == (role,)


def test_psql_is_the_servers_own_and_takes_psql_arguments(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        major = conn.info.server_version // 10000
        database = conn.info.dbname
    version = run_cli("psql", "--", "--version", database_url=db_url)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"psql (PostgreSQL) {major}.")
    query = run_cli("psql", "-XAt", "-c", "select current_user, current_database()", database_url=db_url)
    assert query.stdout.strip() == f"postgres|{database}", query.stderr
    listing = run_cli("psql", "-X", "-c", "\\l", database_url=db_url)  # psql 15's \l fails on PostgreSQL 18
    assert listing.returncode == 0, listing.stderr
    assert database in listing.stdout
    as_role = run_cli("psql", "--role", "automl_readonly", "-XAtc", "select current_user", database_url=db_url)
    assert as_role.stdout.strip() == "automl_readonly", as_role.stderr


def test_reset_on_database_url_does_nothing_without_yes(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute("create table precious (id int)")
    line = one_line_error(run_cli("reset", database_url=empty_db))
    assert line.startswith("automl-db reset: DATABASE_URL is set (postgresql://")
    assert line.endswith("reset would drop and rebuild that database; run it again with --yes if you mean it")
    assert one_line_error(run_cli("reset", "--scratch-only", database_url=empty_db)).endswith(
        "reset would drop its leftover scratch databases; run it again with --yes if you mean it")
    assert tables(empty_db) == {"precious"}


@pytest.mark.parametrize("command", ["status", "up", "migrate", "url", "psql", "server", "stop", "reset", "diff"])
def test_a_bad_setting_is_one_line_naming_the_variable(command: str) -> None:
    result = run_cli(command, database_url=None, env={"AUTOML_DB_CONNECT_TIMEOUT": "ten"})
    assert one_line_error(result) == (f"automl-db {command}: AUTOML_DB_CONNECT_TIMEOUT='ten': Input should be a"
                                      " valid number, unable to parse string as a number")


def test_a_closed_stdout_is_no_traceback(empty_db: str) -> None:
    """`automl-db status | head -0`: the reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = run_cli("status", database_url=empty_db, stdout=write)
    finally:
        os.close(write)
    assert result.returncode == 1
    assert result.stderr == ""


@pytest.mark.parametrize(("args", "says"), [
    ((), "the following arguments are required: command"),
    (("bogus",), "argument command: invalid choice: 'bogus'"),
    (("status", "--yes"), "unrecognized arguments: --yes"),
    (("url", "--role", "postgres"), "argument --role: invalid choice: 'postgres'"),
    (("completion", "fish"), "argument shell: invalid choice: 'fish'"),
    (("migration", "old", "x"), "argument action: invalid choice: 'old'"),
    (("migration", "new"), "the following arguments are required: name"),
    (("diff", "--yes"), "unrecognized arguments: --yes"),
])
def test_usage_errors_are_one_line(args: tuple[str, ...], says: str) -> None:
    line = one_line_error(run_cli(*args, database_url=None), status=2)
    assert says in line
    command = f" {args[0]}" if args and args[0] in ("url", "completion", "migration") else ""
    assert line.endswith(f"(see automl-db{command} --help)")


def bash_complete(script: str, *words: str) -> list[str]:
    """What bash offers for the last of words, with the completion script loaded."""
    words_array = " ".join(f"'{w}'" for w in ("automl-db", *words))
    program = f"{script}\nCOMP_WORDS=({words_array}); COMP_CWORD={len(words)}; _automl_db; echo \"${{COMPREPLY[*]}}\""
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30)
    return sorted(result.stdout.split())


def test_bash_completion() -> None:
    script = run_cli("completion", "bash", database_url=None).stdout
    assert script.rstrip().endswith("complete -F _automl_db automl-db")
    assert bash_complete(script, "st") == ["status", "stop"]
    assert bash_complete(script, "") == sorted(["up", "server", "stop", "migrate", "status", "migration", "diff",
                                                "psql", "url", "reset", "completion", "-h", "--help", "--version"])
    assert bash_complete(script, "migration", "") == ["--help", "--json", "--migrations-dir", "-h", "new"]
    assert bash_complete(script, "diff", "--") == ["--help", "--json", "--migrations-dir", "--schema-dir"]
    assert bash_complete(script, "url", "--role", "") == ["automl_app", "automl_billing", "automl_readonly",
                                                          "automl_worker"]
    assert bash_complete(script, "reset", "--") == ["--help", "--scratch-only", "--yes"]
    assert bash_complete(script, "completion", "") == ["--help", "-h", "bash", "zsh"]
    assert bash_complete(script, "psql", "--", "-") == []  # psql's own arguments: not ours to offer


def test_zsh_completion() -> None:
    script = run_cli("completion", "zsh", database_url=None).stdout
    assert script.startswith("#compdef automl-db\n")
    for command in ("up", "server", "stop", "migrate", "status", "migration", "diff", "psql", "url", "reset",
                    "completion"):
        assert f"\n                {command}) _arguments" in script
    assert "'--role[" in script
    assert ":value:(automl_app automl_worker automl_billing automl_readonly)" in script
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed")
    checked = subprocess.run(["zsh", "-n"], input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    loaded = subprocess.run(["zsh", "-fc", "autoload -U compinit; compinit -u -D; eval \"$(cat)\";"
                             " print -r -- ${_comps[automl-db]}"], input=script, capture_output=True, text=True,
                            check=False, timeout=30)
    assert loaded.stdout.strip() == "_automl_db", loaded.stderr


def test_demo_without_reference_data_fails_before_anyone_signs_up(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:  # the migrations load it: take it away again
        conn.execute("delete from tutorials")
        conn.execute("delete from credit_packages")
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": db_url}
    result = subprocess.run([sys.executable, "-m", "automl_db.tools.demo"], env=environment, text=True,
                            capture_output=True, timeout=120, check=False, cwd=PROJECT_ROOT)
    assert one_line_error(result) == (
        "demo failed: ReferenceDataMissing: reference data is not loaded (no credit package 'Builder' and no"
        " published tutorial 'first-model'): run `automl-db up` (or `just up`) first")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from users").fetchone() == (0,)
