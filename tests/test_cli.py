"""`automl-db` as an operator uses it: real subprocesses, real databases, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from automl_db import migrate
from automl_db.errors import MigrationFailed
from tests.conftest import create_database, drop_database


def run_cli(*args: str, database_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "automl_db.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.fixture
def empty_db(server_url: str) -> object:
    name = f"automl_cli_{os.getpid()}"
    url = create_database(server_url, name)
    yield url
    drop_database(server_url, name)


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
        "import sys, pathlib, automl_db.migrate as m, automl_db.cli as c;"
        f"m.migrations_dir = lambda: pathlib.Path({str(tmp_path)!r});"
        "sys.exit(c.main(['migrate']))"
    )
    env = {**os.environ, "DATABASE_URL": env_url}
    result = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                            timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'automl-db migrate: migration 0001.broken failed: relation "nowhere" does not exist')
