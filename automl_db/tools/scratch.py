"""Scratch databases: the throwaway databases tests and tools create beside the real one.

A scratch database is named for what made it and for the id of the process that made it,
``automl_<kind>_<pid>[_<suffix>]`` (``automl_tpl_4711``, ``automl_t_4711_12``), so a later run can
tell a leftover of a run that was killed (its process is gone) from the databases of a run still
going on the same server (its process exists: they are kept). Every tool and test makes its
databases through ``database()`` below, so two runs on one server never collide. Earlier versions
of the tools used fixed names (``automl_codegen``, ``automl_bench``...); those carry no process id,
so only an explicit ``automl-db reset`` drops such leftovers, and only when nobody is connected to them.
"""

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from automl_db.urls import connect, resolve_url, with_database

#: What makes scratch databases with a process id in their name (see scratch_name).
KINDS = ("t", "tpl", "cli", "roundtrip", "schemadoc", "from_schema", "from_migrations", "codegen", "bench",
         "citus", "diff")
#: Fixed names (of earlier versions of the tools) and name prefixes of scratch databases that may
#: carry no process id.
FIXED_NAMES = ("automl_codegen", "automl_bench", "automl_roundtrip", "automl_citus_blockers")
PREFIXES = ("automl_t_", "automl_tpl_", "automl_from_")

_TAGGED = re.compile(rf"^automl_(?P<kind>{'|'.join(KINDS)})_(?P<pid>[0-9]+)(?:_[a-z0-9_]+)?$")


@dataclass(frozen=True)
class Scratch:
    name: str
    #: The process that created it, when its name says so.
    pid: int | None


def scratch_name(kind: str, suffix: str | int | None = None) -> str:
    """The name of a scratch database this process creates: automl_<kind>_<pid>[_<suffix>]."""
    if kind not in KINDS:
        raise ValueError(f"unknown scratch kind {kind!r} (known: {', '.join(KINDS)})")
    return f"automl_{kind}_{os.getpid()}" + ("" if suffix is None else f"_{suffix}")


def classify(name: str) -> Scratch | None:
    """The scratch database this name denotes, or None for any other database."""
    if match := _TAGGED.match(name):
        return Scratch(name, int(match["pid"]))
    if name in FIXED_NAMES or name.startswith(PREFIXES):
        return Scratch(name, None)
    return None


def process_exists(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one that belongs to another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_scratch(admin_url: str) -> list[Scratch]:
    with connect(admin_url) as conn:
        names = [str(row[0]) for row in conn.execute("select datname from pg_database order by datname")]
    return [s for s in (classify(name) for name in names) if s is not None]


@dataclass(frozen=True)
class Cleanup:
    dropped: list[str]
    #: Kept, with the reason: its process still runs, or someone is connected to it.
    kept: list[tuple[str, str]]


def drop_leftovers(admin_url: str, *, include_untagged: bool = False,
                   candidates: Iterable[Scratch] | None = None) -> Cleanup:
    """Drop the scratch databases on admin_url's server whose creating process no longer exists
    (with FORCE: whatever still holds them is a remnant of that process) and, with include_untagged,
    those named without a process id that nobody is connected to. The databases of a process that
    is still running are kept, so a second test run on a shared server leaves the first alone."""
    dropped: list[str] = []
    kept: list[tuple[str, str]] = []
    found = list(candidates) if candidates is not None else list_scratch(admin_url)
    with connect(admin_url, autocommit=True) as conn:
        own = conn.execute("select current_database()").fetchone()
        for scratch in found:
            if own is not None and scratch.name == own[0]:
                continue
            if scratch.pid is not None and process_exists(scratch.pid):
                kept.append((scratch.name, f"process {scratch.pid} is running"))
                continue
            if scratch.pid is None and not include_untagged:
                continue
            drop = sql.SQL("drop database if exists {}").format(sql.Identifier(scratch.name))
            if scratch.pid is not None:
                drop += sql.SQL(" with (force)")
            try:
                conn.execute(drop)
            except psycopg.errors.ObjectInUse:
                kept.append((scratch.name, "in use"))
                continue
            dropped.append(scratch.name)
    return Cleanup(dropped, kept)


# -- making and dropping them ----------------------------------------------------------------------


def create(server_url: str, name: str, template: str | None = None) -> str:
    """Create the database name on server_url's server (dropping a stale one of that name first:
    names carry this process's id, so one that exists is a remnant of this process); its URL."""
    with connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        query = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" template {}").format(sql.Identifier(template))
        conn.execute(query)
    return with_database(server_url, name)


def drop(server_url: str, name: str) -> None:
    with connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextmanager
def database(kind: str, *, suffix: str | int | None = None, server_url: str | None = None,
             template: str | None = None) -> Iterator[str]:
    """A scratch database named automl_<kind>_<pid>[_<suffix>] on server_url's server (default: the
    configured one, DATABASE_URL or the embedded server), optionally a copy of template; its URL.
    It is dropped on the way out, however the way out is taken: also when creating it, or the code
    using it, fails or is interrupted (and a killed process's is dropped later by the pid rule)."""
    server = server_url if server_url is not None else resolve_url()
    name = scratch_name(kind, suffix)
    try:
        yield create(server, name, template=template)
    finally:
        drop(server, name)
