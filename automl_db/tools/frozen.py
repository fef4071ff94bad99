"""Landed migrations are frozen: `migrations/frozen.sha256` keeps the SHA-256 of each one's files.

    python -m automl_db.tools.frozen           # list what is frozen, edited or not yet frozen
    python -m automl_db.tools.frozen --check   # fail on an edited or vanished frozen file (just lint, a test)
    python -m automl_db.tools.frozen --freeze  # add the migrations not yet frozen (when one lands)

A database records which migrations it applied, not what they said: an edit to a landed migration
reaches no database that already ran it, and silently builds new ones differently. So every file of
a landed migration (forward and rollback) has its checksum in `frozen.sha256` (`sha256sum`
format), and the check fails when a frozen file changes or disappears. Only the newest migration
may be unfrozen (it is being written); one that another migration already follows must be frozen.
The idempotent layer (`post-apply.sql`) is regenerated, never frozen.
"""

import argparse
import hashlib
import re
import sys
from pathlib import Path

from automl_db.tools.paths import migrations_dir

FILE_NAME = "frozen.sha256"
_MIGRATION = re.compile(r"^(?P<id>\d{4}\.[^/]+?)(?:\.rollback)?\.sql$")
_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>\S+)$")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def migration_files(directory: Path) -> dict[str, Path]:
    """Every numbered migration file (forward and rollback) by name; not post-apply.sql."""
    return {p.name: p for p in sorted(directory.glob("*.sql")) if _MIGRATION.match(p.name)}


def read_frozen(directory: Path) -> dict[str, str]:
    path = directory / FILE_NAME
    if not path.is_file():
        return {}
    frozen: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        found = _LINE.match(line)
        if found is None:
            raise ValueError(f"{path}:{number}: not a sha256sum line: {line!r}")
        frozen[found["name"]] = found["digest"]
    return frozen


def problems(directory: Path | None = None) -> list[str]:
    """What breaks the freeze, one line each; empty when every landed migration is as it landed."""
    directory = directory or migrations_dir()
    files, frozen = migration_files(directory), read_frozen(directory)
    found: list[str] = []
    for name, expected in sorted(frozen.items()):
        if name not in files:
            found.append(f"{name}: frozen, but the file is gone")
        elif digest(files[name]) != expected:
            found.append(f"{name}: edited after it was frozen (a landed migration never changes: add a new one)")
    ids = sorted({m["id"] for name in files if (m := _MIGRATION.match(name))})
    for name in sorted(files):
        match = _MIGRATION.match(name)
        if name not in frozen and match and match["id"] != ids[-1]:
            found.append(f"{name}: not frozen, but a later migration follows it (just freeze)")
    return found


def freeze(directory: Path | None = None) -> list[str]:
    """Add every migration file not yet frozen; return their names. Frozen entries never change."""
    directory = directory or migrations_dir()
    files, frozen = migration_files(directory), read_frozen(directory)
    added = [name for name in files if name not in frozen]
    frozen.update({name: digest(files[name]) for name in added})
    lines = [f"{frozen[name]}  {name}" for name in sorted(frozen)]
    (directory / FILE_NAME).write_text("\n".join(lines) + "\n")
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="automl_db.tools.frozen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="fail on an edited, vanished or skipped frozen file")
    action.add_argument("--freeze", action="store_true", help="freeze every migration not yet frozen")
    args = parser.parse_args(argv)
    if args.freeze:
        for name in freeze():
            print(f"froze {name}")
        return 0
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    if not args.check:
        frozen = read_frozen(migrations_dir())
        for name in migration_files(migrations_dir()):
            print(f"{'frozen' if name in frozen else 'not frozen'}  {name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
