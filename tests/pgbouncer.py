"""A real PgBouncer in transaction mode in front of the test server (Debian's `pgbouncer` package):
what services usually run behind, and what breaks session state and server-side prepares."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROLES = ("postgres", "automl_app", "automl_worker", "automl_billing", "automl_readonly")


def installed() -> bool:
    return shutil.which("pgbouncer") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(server_url: str) -> Iterator[Callable[[str], str]]:
    """Start PgBouncer for the server of server_url; yield a function that turns a direct URL (user,
    database) into the same one through PgBouncer."""
    parts = urlsplit(server_url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
    port = parts.port or 5432
    listen = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="automl_pgbouncer_"))
    os.chmod(workdir, 0o755)
    (workdir / "users.txt").write_text("".join(f'"{role}" ""\n' for role in ROLES))
    (workdir / "pgbouncer.ini").write_text(f"""[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
    command = ["pgbouncer"]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: run it as whoever may reach the server
        owner = Path(host).stat().st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
        command += ["-u", pwd.getpwuid(owner).pw_name]
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, owner, -1)
    process = subprocess.Popen([*command, str(workdir / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / "pgbouncer.log").read_text() if (workdir / "pgbouncer.log").exists() else ""
                    errors = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"PgBouncer did not start: {errors}{log}") from None
                time.sleep(0.05)

        def through(url: str) -> str:
            target = urlsplit(url)
            return f"postgresql://{target.username}@127.0.0.1:{listen}{target.path}"

        yield through
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
