"""Applying and inspecting yoyo migrations through yoyo's Python API (same files `yoyo apply` runs)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from yoyo import get_backend, read_migrations

from automl_db.database import connect, yoyo_url
from automl_db.errors import MigrationFailed
from automl_db.paths import migrations_dir


@dataclass(frozen=True)
class MigrationState:
    id: str
    applied: bool


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
    """Apply pending migrations one by one under yoyo's lock; return the ids applied."""
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
        if pending:
            backend.run_post_apply(pending)
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
    with _backend(url, source) as (backend, migrations):
        return [MigrationState(m.id, backend.is_applied(m)) for m in migrations]
