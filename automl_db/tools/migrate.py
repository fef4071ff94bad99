"""Applying and inspecting yoyo migrations through yoyo's Python API (same files `yoyo apply` runs)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from yoyo import get_backend, read_migrations

from automl_db.errors import MigrationFailed
from automl_db.tools.paths import migrations_dir
from automl_db.urls import connect, yoyo_url


@dataclass(frozen=True)
class MigrationState:
    id: str
    applied: bool
    #: False for a migration the database records as applied but migrations/ no longer holds.
    on_disk: bool = True


@contextmanager
def _backend(url: str, source: Path | None) -> Iterator[tuple[Any, Any]]:
    """yoyo's backend and the migrations; the backend's connection is closed afterwards."""
    connect(url).close()  # an unreachable server is DatabaseUnavailable, in one line
    backend = get_backend(yoyo_url(url))
    try:
        yield backend, read_migrations(str(source or migrations_dir()))
    finally:
        backend.connection.close()


def _message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def apply(url: str, source: Path | None = None) -> list[str]:
    """Apply pending migrations one by one under yoyo's lock, then the idempotent layer
    (post-apply.sql: ownership, grants, row-level security, reference data); return the ids applied.

    Unlike `yoyo apply`, which runs post-apply only after it applied something, this runs it on
    every call: it changes nothing when everything is in place, and repairs what drifted."""
    applied: list[str] = []
    with _backend(url, source) as (backend, migrations), backend.lock():
        pending = backend.to_apply(migrations)
        # One by one, not apply_migrations(): that skips a BadMigration silently and cannot
        # say which migration failed.
        for migration in pending:
            try:
                backend.apply_one(migration)
            except Exception as exc:
                raise MigrationFailed(migration.id, _message(exc)) from exc
            applied.append(migration.id)
        for hook in migrations.post_apply:
            try:
                backend.apply_one(hook, mark=False)
            except Exception as exc:
                raise MigrationFailed(hook.id, _message(exc)) from exc
    return applied


def rollback_all(url: str, source: Path | None = None) -> list[str]:
    """Roll back every applied migration, newest first; return the ids rolled back."""
    done: list[str] = []
    with _backend(url, source) as (backend, migrations), backend.lock():
        for migration in backend.to_rollback(migrations):
            try:
                backend.rollback_one(migration)
            except Exception as exc:
                raise MigrationFailed(migration.id, _message(exc)) from exc
            done.append(migration.id)
    return done


def status(url: str, source: Path | None = None) -> list[MigrationState]:
    """Every migration on disk, applied or pending, then any the database records that are not on
    disk. Read-only: it reads yoyo's table when there is one and never creates it (yoyo's own
    backend creates its lock table on connect), in a READ ONLY transaction. The post-apply hook is
    not a migration (yoyo records nothing for it, and runs it after every apply): not listed."""
    migrations = read_migrations(str(source or migrations_dir()))
    with connect(url) as conn:
        conn.read_only = True
        recorded = _recorded_migrations(conn)
    known = {m.hash for m in migrations}
    states = [MigrationState(m.id, m.hash in recorded) for m in migrations]
    states += [MigrationState(mid, True, on_disk=False) for mhash, mid in recorded.items() if mhash not in known]
    return states


def _recorded_migrations(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """yoyo's record of applied migrations, hash -> id in the order applied; empty without its table."""
    found = conn.execute("select to_regclass('_yoyo_migration') is not null").fetchone()
    if not found or not found[0]:
        return {}
    rows = conn.execute("select migration_hash, migration_id from _yoyo_migration order by applied_at_utc")
    return {str(mhash): str(mid) for mhash, mid in rows}
