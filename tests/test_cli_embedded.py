"""`automl-db` on an embedded server of its own: psql, url, reset and stop as a developer uses them.

The module starts a private embedded server in a temporary data directory (AUTOML_DB_DATA_DIR),
so resetting it cannot touch the developer's database or another run's, and stops it at the end.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from automl_db.tools import scratch
from automl_db.urls import with_database
from tests.helpers import dead_pid
from tests.test_cli import MIGRATIONS, one_line_error, run_cli, tables


class Private:
    def __init__(self, data_dir: Path) -> None:
        self.env = {"AUTOML_DB_DATA_DIR": str(data_dir)}
        self.data_dir = data_dir

    def run(self, *args: str, database_url: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, database_url=database_url, env={**self.env, **(env or {})})

    def url(self) -> str:
        result = self.run("url")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def databases(self) -> set[str]:
        with psycopg.connect(with_database(self.url(), "postgres")) as conn:
            return {str(r[0]) for r in conn.execute("select datname from pg_database")}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    server = Private(tmp_path_factory.mktemp("embedded") / "pgdata")
    try:
        up = server.run("up")
        assert up.returncode == 0, up.stderr
        yield server
    finally:
        server.run("stop")
        shutil.rmtree(server.data_dir, ignore_errors=True)  # ~40 MB of cluster files


def test_psql_is_the_embedded_servers_own(private: Private) -> None:
    version = private.run("psql", "--", "--version")
    assert version.stdout.startswith("psql (PostgreSQL) 18."), version.stderr
    listing = private.run("psql", "-X", "-c", "\\l")  # psql 15 on PATH fails here (daticulocale)
    assert listing.returncode == 0, listing.stderr
    assert " automl " in listing.stdout
    query = private.run("psql", "-XAt", "-c", "select current_user, current_database(), count(*) from tier_limits")
    assert query.stdout.strip() == "postgres|automl|3", query.stderr
    worker = private.run("psql", "--role", "automl_worker", "-XAtc", "select current_user")
    assert worker.stdout.strip() == "automl_worker", worker.stderr


def test_url_is_the_unix_socket_of_the_data_dir(private: Private) -> None:
    url = private.url()
    assert url.startswith("postgresql://postgres:@/automl?host=")
    with psycopg.connect(url) as conn:
        assert conn.execute("select current_database()").fetchone() == ("automl",)
    role_url = private.run("url", "--role", "automl_billing").stdout.strip()
    assert role_url.startswith("postgresql://automl_billing@/automl?host=")
    with psycopg.connect(role_url) as conn:
        assert conn.execute("select current_user").fetchone() == ("automl_billing",)


def test_reset_rebuilds_the_database_and_drops_leftovers(private: Private) -> None:
    url = private.url()
    leftover = f"automl_t_{dead_pid()}_0"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table scribble (id int)")
        for name in ("automl_codegen", leftover, "automl_from_schema", "notes", scratch.scratch_name("tpl", "live")):
            conn.execute(f'create database "{name}"')
    result = private.run("reset")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dropped 3 scratch database(s): ")
    assert set(lines[0].split(": ", 1)[1].split(", ")) == {"automl_codegen", "automl_from_schema", leftover}
    assert f"kept {scratch.scratch_name('tpl', 'live')}: process {os.getpid()} is running" in lines
    assert lines[-1] == (f"dropped and recreated database automl; applied {len(MIGRATIONS)} migration(s);"
                         " reference data loaded")
    after = private.databases()
    assert {"automl", "notes", scratch.scratch_name("tpl", "live")} <= after
    assert not {"automl_codegen", "automl_from_schema", leftover} & after
    assert "scribble" not in tables(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from credit_packages").fetchone() == (4,)
    status = private.run("status")
    assert status.stdout.strip().endswith(f"{len(MIGRATIONS)} applied, 0 pending")


def test_reset_keeps_a_scratch_database_someone_is_using(private: Private) -> None:
    admin = with_database(private.url(), "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute('create database "automl_bench"')
    try:
        with psycopg.connect(with_database(admin, "automl_bench")):
            result = private.run("reset", "--scratch-only")
        assert "kept automl_bench: in use" in result.stdout.splitlines(), result.stdout
        assert "automl_bench" in private.databases()
    finally:
        private.run("reset", "--scratch-only")
    assert "automl_bench" not in private.databases()


def test_reset_with_database_url_needs_yes_and_spares_the_maintenance_database(private: Private) -> None:
    target = with_database(private.url(), "app")
    with psycopg.connect(with_database(target, "postgres"), autocommit=True) as conn:
        conn.execute("create database app")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("create table scribble (id int)")
    assert "run it again with --yes" in one_line_error(private.run("reset", database_url=target))
    assert tables(target) == {"scribble"}
    done = private.run("reset", "--yes", database_url=target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("dropped and recreated database app; applied")
    assert "scribble" not in tables(target)
    assert "credit_transactions" in tables(target)
    maintenance = one_line_error(private.run("reset", "--yes", database_url=with_database(target, "postgres")))
    assert maintenance == ("automl-db reset: will not drop postgres, the server's maintenance database: point"
                           " DATABASE_URL at the application's own database, or use --scratch-only")
    assert private.run("reset", "--yes", "--scratch-only",
                       database_url=with_database(target, "postgres")).returncode == 0


@pytest.mark.parametrize("command", ["stop", "server", "status", "up", "psql", "reset"])
def test_another_postgresql_version_than_the_data_dirs_is_one_line(private: Private, command: str) -> None:
    line = one_line_error(private.run(command, env={"AUTOML_DB_PG_VERSION": "16"}))
    assert line == (f"automl-db {command}: the data directory {private.data_dir} holds a PostgreSQL 18 cluster, but"
                    " AUTOML_DB_PG_VERSION is 16: set AUTOML_DB_PG_VERSION=18, or point AUTOML_DB_DATA_DIR at another"
                    " directory")


def test_a_version_the_wheel_does_not_ship_is_one_line(tmp_path: Path) -> None:
    result = run_cli("server", database_url=None, env={"AUTOML_DB_DATA_DIR": str(tmp_path / "pgdata"),
                                                        "AUTOML_DB_PG_VERSION": "17"})
    assert one_line_error(result) == ("automl-db server: AUTOML_DB_PG_VERSION is 17, but the embedded server ships"
                                      " PostgreSQL 16, 18 only")
    assert not (tmp_path / "pgdata").exists()


def test_stop_then_start_again(private: Private) -> None:
    assert private.run("stop").stdout.strip() == f"embedded server in {private.data_dir} stopped"
    assert private.run("stop").stdout.strip() == f"embedded server in {private.data_dir} was not running"
    assert private.run("server").returncode == 0
    assert private.run("psql", "-XAtc", "select 1").stdout.strip() == "1"
