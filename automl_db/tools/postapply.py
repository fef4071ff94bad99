"""`migrations/post-apply.sql`: the idempotent layer of the schema, for yoyo.

    python -m automl_db.tools.postapply          # rewrite migrations/post-apply.sql from schema/post/
    python -m automl_db.tools.postapply --check  # fail when it is stale (just lint)

The schema has two kinds of source. The structural files (`schema/NNN_*.sql`: tables, types,
indexes, constraints, trigger functions) change only through numbered migrations. The idempotent
files (`schema/post/9NN_*.sql`: ownership, grants, row-level security and its policies,
reference data) are re-applied after every migration run. yoyo runs every file of the migrations
directory whose name starts with `post-apply` after it applied migrations (`yoyo apply`), and
`automl-db migrate` runs it after every run; this file is the concatenation of schema/post/, so a
DBA reads the same plain SQL in both places.
"""

import argparse
import sys
from pathlib import Path

from automl_db.tools.paths import migrations_dir, schema_dir

FILE_NAME = "post-apply.sql"

_HEADER = """\
-- post-apply.sql — GENERATED from schema/post/ by `just post-apply`; do not edit (just lint fails
-- when it is stale). yoyo runs it after every `yoyo apply` that applied a migration, and
-- `automl-db migrate` after every run: ownership, grants, row-level security and reference data,
-- re-applied from the catalog, so a migration carries only its structural change. Idempotent:
-- a re-run that finds everything in place changes nothing and takes no table lock.
set local lock_timeout = '5s';
set local statement_timeout = '5min';
set local search_path = automl, public;
"""


def post_files(schema: Path | None = None) -> list[Path]:
    """The idempotent layer's files, in the order they run."""
    return sorted((schema or schema_dir()).joinpath("post").glob("*.sql"))


def render(schema: Path | None = None) -> str:
    parts = [_HEADER]
    for path in post_files(schema):
        parts.append(f"\n-- ==== schema/post/{path.name} ====\n")
        parts.append(path.read_text())
    return "".join(parts)


def output_path(migrations: Path | None = None) -> Path:
    return (migrations or migrations_dir()) / FILE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="automl_db.tools.postapply",
                                     description="Write migrations/post-apply.sql from schema/post/.")
    parser.add_argument("--check", action="store_true", help="fail if the file is stale instead of writing it")
    args = parser.parse_args(argv)
    target, text = output_path(), render()
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is stale: run `just post-apply`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
