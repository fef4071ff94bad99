"""`automl-db migration new NAME`: the next numbered pair of migration files, from the template below.

The template is the one place that holds the conventions of a new migration: what its header says,
yoyo's `-- depends:` on the migration before it, the lock and statement timeouts (a migration that
waits on a busy table gives up instead of queueing every client behind it). It holds no grants and
no ownership changes: those are not part of a migration's structural change.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from automl_db.errors import AutomlDbError
from automl_db.tools import project
from automl_db.tools.paths import PROJECT_ROOT

#: The forward migration. Fields: id, number, title, previous (the id it depends on).
FORWARD_TEMPLATE = """\
-- {number} {title}: <what this migration changes, and why (issue N)>.
-- Mirror every change in schema/: `automl-db diff` then finds no difference (it drafts SQL from schema/).
-- depends: {previous}
set local search_path = {schema}, public;
set local lock_timeout = '5s';
set local statement_timeout = '5min';

"""

#: The rollback: undoes the forward migration, newest change first.
ROLLBACK_TEMPLATE = """\
-- {number} rollback: <what rolling back {number} {title} restores>.
set local search_path = {schema}, public;
set local lock_timeout = '5s';
set local statement_timeout = '5min';

"""

#: A migration's name: lower-case words of letters and digits joined by single dashes.
NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_NAME_LENGTH = 60
_MIGRATION = re.compile(r"(?P<number>[0-9]{4})\.(?P<name>[^.]+)\.sql")


class MigrationNameError(AutomlDbError):
    """A name a migration file cannot have, or a pair that would overwrite files."""


@dataclass(frozen=True)
class NewMigration:
    id: str
    depends: str | None
    forward: Path
    rollback: Path


def default_directory() -> Path:
    """The checkout's migrations/ (a built wheel carries a copy of it that is not to be written)."""
    if PROJECT_ROOT is None or not (PROJECT_ROOT / "migrations").is_dir():
        raise MigrationNameError("no checkout to write into: run this in an editable install of automl_db"
                                 " (pip install -e .), or pass --migrations-dir")
    return PROJECT_ROOT / "migrations"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise MigrationNameError(f"bad migration name {name!r}: use lower-case letters, digits and single dashes"
                                 " (e.g. add-model-tags)")
    if len(name) > MAX_NAME_LENGTH:
        raise MigrationNameError(f"migration name too long ({len(name)} characters; at most {MAX_NAME_LENGTH})")
    return name


def existing(directory: Path) -> list[str]:
    """The ids of the forward migrations in directory, in order."""
    return sorted(p.name.removesuffix(".sql") for p in directory.glob("*.sql")
                  if not p.name.endswith(".rollback.sql") and _MIGRATION.fullmatch(p.name))


def plan(name: str, directory: Path) -> NewMigration:
    """The pair `migration new name` writes: the next number after the newest migration."""
    check_name(name)
    if not directory.is_dir():
        raise MigrationNameError(f"{directory} is not a directory")
    ids = existing(directory)
    previous = ids[-1] if ids else None
    number = f"{int(previous[:4]) + 1 if previous else 1:04d}"
    if number == "10000":
        raise MigrationNameError("migration numbers are exhausted (9999 reached)")
    same = [i for i in ids if i.split(".", 1)[1] == name]
    if same:
        raise MigrationNameError(f"migration {same[0]} already has the name {name!r}: choose another")
    taken = sorted(p.name for p in directory.iterdir() if p.name.startswith(f"{number}."))
    if taken:
        raise MigrationNameError(f"{directory / taken[0]} already exists: will not overwrite it; remove it or"
                                 " finish that migration first")
    migration_id = f"{number}.{name}"
    return NewMigration(migration_id, previous, directory / f"{migration_id}.sql",
                        directory / f"{migration_id}.rollback.sql")


def render(migration: NewMigration) -> tuple[str, str]:
    """The texts of the forward and rollback files."""
    number, name = migration.id.split(".", 1)
    fields = {"schema": project.SCHEMA, "id": migration.id, "number": number, "title": name.replace("-", " "),
              "previous": migration.depends or ""}
    forward = FORWARD_TEMPLATE.format(**fields)
    if migration.depends is None:  # the first migration depends on nothing
        forward = "".join(line for line in forward.splitlines(keepends=True) if not line.startswith("-- depends:"))
    return forward, ROLLBACK_TEMPLATE.format(**fields)


def create(name: str, directory: Path | None = None) -> NewMigration:
    """Write the pair; refuses to overwrite anything (the files are created exclusively)."""
    migration = plan(name, directory or default_directory())
    forward, rollback = render(migration)
    written: list[Path] = []
    try:
        for path, text in ((migration.forward, forward), (migration.rollback, rollback)):
            with path.open("x") as out:
                written.append(path)
                out.write(text)
    except FileExistsError as exc:
        for path in written:
            path.unlink()
        raise MigrationNameError(f"{exc.filename} already exists: will not overwrite it") from exc
    return migration
