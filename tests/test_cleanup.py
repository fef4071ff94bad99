"""Test runs leave no databases behind: not when interrupted, not when a fixture fails, and a run
drops what earlier runs left when they were killed outright.

Each case runs a real pytest session in a subprocess against the same server, with this suite's
fixtures (`-p tests.conftest`), and looks at the server's databases afterwards.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from automl_db.tools import scratch
from automl_db.tools.paths import PROJECT_ROOT
from tests.conftest import create_database, drop_database
from tests.helpers import dead_pid

ROOT = PROJECT_ROOT or Path.cwd()


def databases(server_url: str) -> set[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        return {str(row[0]) for row in conn.execute("select datname from pg_database")}


def start_session(tmp_path: Path, test_source: str, conftest_source: str = "") -> subprocess.Popen[str]:
    (tmp_path / "test_child.py").write_text(textwrap.dedent(test_source))
    if conftest_source:
        (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest_source))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(tmp_path / "test_child.py")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_an_interrupted_run_drops_its_databases_and_earlier_leftovers(server_url: str, template_name: str,
                                                                      tmp_path: Path) -> None:
    gone = dead_pid()
    leftovers = [f"automl_tpl_{gone}", f"automl_t_{gone}_0", f"automl_from_schema_{gone}"]
    for name in leftovers:
        create_database(server_url, name)
    started = tmp_path / "started"
    child = start_session(tmp_path, f"""
        import pathlib, time
        from urllib.parse import urlsplit

        def test_waits(db_url):
            pathlib.Path({str(started)!r}).write_text(urlsplit(db_url).path.lstrip("/"))
            time.sleep(300)
    """)
    try:
        deadline = time.monotonic() + 180
        while not started.exists():
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "the child session never reached its test"
            time.sleep(0.2)
        clone = started.read_text()
        during = databases(server_url)
        assert {clone, f"automl_tpl_{child.pid}"} <= during
        assert not set(leftovers) & during  # the child's session start dropped them
        assert template_name in during  # ours: this process is alive
        child.send_signal(signal.SIGINT)  # Ctrl-C
        output = child.communicate(timeout=120)[0]
    finally:
        if child.poll() is None:
            child.kill()
        for name in leftovers:
            drop_database(server_url, name)
    assert child.returncode == 2, output  # pytest: interrupted
    assert "KeyboardInterrupt" in output
    after = databases(server_url)
    assert clone not in after
    assert f"automl_tpl_{child.pid}" not in after
    assert template_name in after


def test_a_failing_template_fixture_drops_the_template(server_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "migrations"
    broken.mkdir()
    (broken / "0001.broken.sql").write_text("select * from no_such_table;")
    (broken / "0001.broken.rollback.sql").write_text("select 1;")
    child = start_session(tmp_path, """
        def test_needs_a_database(db_url):
            pass
    """, conftest_source=f"""
        import pathlib
        from automl_db.tools import migrate

        migrate.migrations_dir = lambda: pathlib.Path({str(broken)!r})
    """)
    output = child.communicate(timeout=180)[0]
    assert child.returncode == 1, output
    assert "migration 0001.broken failed" in output
    assert not {name for name in databases(server_url) if name.startswith(f"automl_tpl_{child.pid}")}
    assert not {name for name in databases(server_url) if name.startswith(f"automl_t_{child.pid}_")}


def test_leftovers_of_running_processes_are_kept(server_url: str) -> None:
    alive = scratch.scratch_name("cli", "kept")  # this process's, so its process exists
    gone = f"automl_cli_{dead_pid()}_gone"
    foreign = f"automl_keep_{dead_pid()}"  # not a scratch name: never touched
    for name in (alive, gone, foreign):
        create_database(server_url, name)
    try:
        result = scratch.drop_leftovers(server_url, candidates=[s for s in scratch.list_scratch(server_url)
                                                                  if s.name in (alive, gone, foreign)])
        assert result.dropped == [gone]
        assert (alive, f"process {os.getpid()} is running") in result.kept
        assert {alive, foreign} <= databases(server_url)
        assert gone not in databases(server_url)
    finally:
        for name in (alive, gone, foreign):
            drop_database(server_url, name)


@pytest.mark.parametrize(("name", "pid"), [
    ("automl_t_123_4", 123), ("automl_tpl_77", 77), ("automl_from_schema_9", 9), ("automl_t_5_restored", 5),
    ("automl_roundtrip_31", 31), ("automl_codegen", None), ("automl_bench", None), ("automl_roundtrip", None),
    ("automl_from_schema", None), ("automl_t_x", None),
])
def test_scratch_names(name: str, pid: int | None) -> None:
    found = scratch.classify(name)
    assert found is not None
    assert found.pid == pid


@pytest.mark.parametrize("name", ["automl", "postgres", "automl_prod_2024", "automl_tplx", "my_automl_t_1"])
def test_other_databases_are_not_scratch(name: str) -> None:
    assert scratch.classify(name) is None


def test_a_tool_database_is_this_processs_and_is_dropped_however_it_ends(server_url: str) -> None:
    """scratch.database(): what codegen, schemadoc, citus, bench and diff build their databases with."""
    name = scratch.scratch_name("codegen")
    with scratch.database("codegen", server_url=server_url) as url:
        assert name in databases(server_url)
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_database()").fetchone() == (name,)
        found = scratch.classify(name)
        assert found is not None
        assert found.pid == os.getpid()  # so `automl-db reset` keeps it while this process runs
    assert name not in databases(server_url)
    seen: list[bool] = []
    try:
        with scratch.database("bench", suffix="x", server_url=server_url):
            seen.append(scratch.scratch_name("bench", "x") in databases(server_url))
            raise RuntimeError("the tool failed")
    except RuntimeError:
        pass
    assert seen == [True]
    assert scratch.scratch_name("bench", "x") not in databases(server_url)
    with pytest.raises(ValueError, match="unknown scratch kind"), scratch.database("nonsense", server_url=server_url):
        pass


def test_a_killed_tools_database_is_dropped_by_the_pid_rule(server_url: str) -> None:
    """A tool run in another process, killed before it could drop its database: the next cleanup
    drops it; one of a process still running is kept."""
    code = ("import os, time; from automl_db.tools import scratch\n"
            f"with scratch.database('diff', server_url={server_url!r}):\n"
            "    print(scratch.scratch_name('diff'), flush=True); time.sleep(300)\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True, stdout=subprocess.PIPE)
    name = f"automl_diff_{child.pid}"
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == name
        mine = [s for s in scratch.list_scratch(server_url) if s.name == name]
        assert scratch.drop_leftovers(server_url, candidates=mine).kept == [(name, f"process {child.pid} is running")]
        child.kill()  # no finally runs: the database stays behind
        child.wait(timeout=30)
        assert name in databases(server_url)
        assert scratch.drop_leftovers(server_url, candidates=mine).dropped == [name]
        assert name not in databases(server_url)
    finally:
        if child.poll() is None:
            child.kill()
        drop_database(server_url, name)
