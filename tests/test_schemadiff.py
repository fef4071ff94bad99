"""`automl-db diff` and `automl-db migration new`: the draft SQL takes the migrations' catalog to
schema/'s (applying it leaves no difference), and the new pair follows the project's conventions.

The diff cases edit a copy of schema/ and compare it with the real migrations; the draft is then
applied to a copy of the migrations' database, and the two must agree — by the draft's own reading
and by the parity test's snapshot.
"""

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from automl_db.tools import catalog, migrate, newmigration, schemadiff, scratch
from automl_db.tools.catalog import PROJECT_SCHEMA
from automl_db.tools.paths import migrations_dir, schema_dir
from tests.conftest import scratch_database
from tests.test_cli import MIGRATIONS, one_line_error, run_cli


@pytest.fixture(scope="module")
def migrations_built(server_url: str) -> Iterator[str]:
    """The real migrations, applied once; the cases work on copies of it."""
    with scratch_database(server_url, "diff", "m") as url:
        catalog.build_from_migrations(url)
        yield scratch.scratch_name("diff", "m")


def edited_schema(tmp_path: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of schema/ with each (old, new) replacement made exactly once in its file."""
    copy = tmp_path / "schema"
    shutil.copytree(schema_dir(), copy)
    for name, replacements in edits.items():
        path = copy / name
        text = path.read_text()
        for old, new in replacements:
            assert text.count(old) == 1, f"{name}: {old!r}"
            text = text.replace(old, new)
        path.write_text(text)
    return copy


def apply_draft(server_url: str, migrations_built: str, schema: Path,
                check: Callable[[schemadiff.Difference], None]) -> None:
    """Draft from a copy of the migrations' database to schema, check the draft, apply it: no difference left."""
    with scratch_database(server_url, "diff", "s") as target, \
            scratch_database(server_url, "diff", "c", template=migrations_built) as current:
        catalog.build_from_schema(target, sorted(schema.rglob("*.sql")))
        before = schemadiff.compare(current, target)
        assert not before.identical
        check(before)
        with psycopg.connect(current, autocommit=True) as conn:
            conn.execute(before.text().encode())
        after = schemadiff.compare(current, target)
        assert after.statements == [], after.text()
        assert after.parity == {}, after.text()
        assert after.identical


#: A small tree of its own builds into the project's schema too (the catalog reads that schema only).
SCHEMA_PRELUDE = f"create schema {PROJECT_SCHEMA};\nset search_path = {PROJECT_SCHEMA}, public;\n"
MIGRATION_PRELUDE = f"create schema {PROJECT_SCHEMA};\nset local search_path = {PROJECT_SCHEMA}, public;\n"
TUTORIAL_COLUMN = "        case when jsonb_typeof(steps) = 'array' then jsonb_array_length(steps) end) stored,"
NEW_TABLE = """
create table tutorial_notes (
    id          uuid primary key default gen_random_uuid(),
    tutorial_id uuid not null references tutorials (id) on delete cascade,
    body        text not null,
    constraint tutorial_notes_body_length check (length(body) between 1 and 1000)
);
comment on table tutorial_notes is 'Notes on a tutorial.';
comment on column tutorial_notes.body is 'The note.';
create index tutorial_notes_tutorial_idx on tutorial_notes (tutorial_id);
"""


def test_draft_for_columns_constraints_indexes_functions_and_a_new_table(
        server_url: str, migrations_built: str, tmp_path: Path) -> None:
    schema = edited_schema(tmp_path, {"090_tutorials.sql": [
        # a new column (last, as a migration adds it) with a comment, and a constraint on it
        (TUTORIAL_COLUMN, TUTORIAL_COLUMN + "\n    video_url         text not null default 'none',"),
        ("    constraint tutorials_slug_key unique (slug),",
         "    constraint tutorials_slug_key unique (slug),\n"
         "    constraint tutorials_video_url_length check (length(video_url) <= 500),"),
        ("comment on column tutorials.id is 'Primary key.';",
         "comment on column tutorials.id is 'Primary key.';\ncomment on column tutorials.video_url is 'A video.';"),
        # a changed function body
        ("or s.step ->> 'id' = '')", "or s.step ->> 'id' = '' or length(s.step ->> 'id') > 100)"),
        # an index gone, another new
        ("create index tutorials_published_idx on tutorials (sort_order, title) where is_published;\n"
         "comment on index tutorials_published_idx is 'The published catalogue in display order.';",
         "create index tutorials_difficulty_idx on tutorials (difficulty) where is_published;"),
        # a new table, with its constraints, index and comments
        ("create table user_tutorial_progress (", NEW_TABLE + "\ncreate table user_tutorial_progress ("),
    ]})

    def check(difference: schemadiff.Difference) -> None:
        text = difference.text()
        for expected in [
            "alter table tutorials add column video_url text default 'none'::text not null;",
            "alter table tutorials add constraint tutorials_video_url_length CHECK ((length(video_url) <= 500));",
            "comment on column tutorials.video_url is 'A video.';",
            f"CREATE OR REPLACE FUNCTION {PROJECT_SCHEMA}.tutorial_steps_are_valid(steps jsonb)",
            "length((s.step ->> 'id'::text)) > 100",
            "drop index tutorials_published_idx;",
            # pg_get_indexdef names the table with its schema
            f"CREATE INDEX tutorials_difficulty_idx ON {PROJECT_SCHEMA}.tutorials USING btree (difficulty)"
            " WHERE is_published;",
            "create table tutorial_notes (\n    id uuid default gen_random_uuid() not null,\n",
            "alter table tutorial_notes add constraint tutorial_notes_pkey PRIMARY KEY (id);",
            "alter table tutorial_notes add constraint tutorial_notes_tutorial_id_fkey FOREIGN KEY (tutorial_id)"
            " REFERENCES tutorials(id) ON DELETE CASCADE;",
            f"CREATE INDEX tutorial_notes_tutorial_idx ON {PROJECT_SCHEMA}.tutorial_notes USING btree (tutorial_id);",
            "grant select on table tutorial_notes to automl_readonly;",
            "comment on table tutorial_notes is 'Notes on a tutorial.';",
            "alter table tutorial_notes owner to automl_owner;",
        ]:
            assert expected in text, expected
        # the drop before the creations, the table before its key, the key before the reference to it
        assert text.index("drop index tutorials_published_idx;") < text.index("create table tutorial_notes")
        assert text.index("create table tutorial_notes") < text.index("tutorial_notes_pkey PRIMARY KEY")
        assert text.index("tutorial_notes_pkey PRIMARY KEY") < text.index("tutorial_notes_tutorial_id_fkey")
        assert difference.parity  # the parity test sees the same changes
        assert {"subject": "index tutorials.tutorials_published_idx", "sql": "drop index tutorials_published_idx;"} in (
            difference.as_json()["statements"])

    apply_draft(server_url, migrations_built, schema, check)


def test_draft_for_enums_domains_triggers_policies_and_drops(
        server_url: str, migrations_built: str, tmp_path: Path) -> None:
    schema = edited_schema(tmp_path, {
        "010_types.sql": [
            ("('csv', 'json', 'parquet', 'excel', 'unknown')",
             "('csv', 'json', 'parquet', 'avro', 'excel', 'unknown')"),
            # a domain's rule and comment
            ("    constraint error_text_length check (length(value) <= 10000);\n"
             "comment on domain error_text is 'A short error description: at most 10,000 characters.';",
             "    constraint error_text_length check (length(value) <= 20000);\n"
             "comment on domain error_text is 'A short error description: at most 20,000 characters.';"),
        ],
        "post/930_reference_data.sql": [
            # the starter tutorials name the column this copy drops: leave them out of it
            ("-- The starter tutorials.\n", "-- The starter tutorials (left out: this copy drops a column).\n/*\n"),
            ("excluded.steps::jsonb)::integer;", "excluded.steps::jsonb)::integer;\n*/"),
        ],
        "post/920_row_security.sql": [
            # a policy's rule, another's comment
            ("('jobs', 'jobs_worker_read', 'for select to automl_worker using (true)',",
             "('jobs', 'jobs_worker_read', 'for select to automl_worker using (status <> ''cancelled'')',"),
            ("             'automl_worker claims, heartbeats and finishes any user''s queued or running job;"
             " a pending job '\n             'is its owner''s alone (its price may still change).'),",
             "             'automl_worker claims any job.'),"),
        ],
        "090_tutorials.sql": [
            # a column gone (its comment with it), a trigger gone
            ("    estimated_minutes integer,\n", ""),
            ("    constraint tutorials_estimated_minutes_positive check (estimated_minutes > 0)\n",
             "    constraint tutorials_steps_capped check (jsonb_array_length(steps) <= 500)\n"),
            ("comment on column tutorials.estimated_minutes is 'Expected time to finish.';\n", ""),
            ("create trigger tutorials_set_updated_at before update on tutorials\n"
             "    for each row execute function set_updated_at();\n", ""),
        ],
    })

    def check(difference: schemadiff.Difference) -> None:
        text = difference.text()
        for expected in [
            "alter type file_format add value 'avro' before 'excel';",
            "alter table tutorials drop column estimated_minutes;",
            "alter table tutorials drop constraint tutorials_estimated_minutes_positive;",
            # steps is a bounded_jsonb: the expression reads it as jsonb
            "alter table tutorials add constraint tutorials_steps_capped"
            " CHECK ((jsonb_array_length((steps)::jsonb) <= 500));",
            "drop trigger tutorials_set_updated_at on tutorials;",
            "alter domain error_text drop constraint error_text_length;",
            "alter domain error_text add constraint error_text_length CHECK ((length(VALUE) <= 20000));",
            "comment on domain error_text is 'A short error description: at most 20,000 characters.';",
            "drop policy jobs_worker_read on jobs;",
            "create policy jobs_worker_read on jobs as permissive for select to automl_worker"
            " using ((status <> 'cancelled'::job_status));",
            "comment on policy jobs_worker_read on jobs is 'automl_worker sees every job: the queue spans users.';",
            "comment on policy jobs_worker_update on jobs is 'automl_worker claims any job.';",
        ]:
            assert expected in text, expected
        # what goes away first, then the new rules, then the column
        assert text.index("drop trigger") < text.index("add constraint tutorials_steps_capped") < text.index(
            "drop column estimated_minutes")

    apply_draft(server_url, migrations_built, schema, check)


def test_identical_trees_make_no_difference_and_a_changed_one_does(server_url: str, tmp_path: Path) -> None:
    """On a small tree of its own: schema/ and migrations/ that agree, then a function body apart."""
    schema, migrations = tmp_path / "schema", tmp_path / "migrations"
    schema.mkdir()
    migrations.mkdir()
    body = ("create function double_it(n integer) returns integer language sql immutable return n * 2;\n"
            "create table things (id integer primary key, n integer not null check (n > 0));\n")
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + body)
    (migrations / "0001.all.sql").write_text(MIGRATION_PRELUDE + body)
    (migrations / "0001.all.rollback.sql").write_text("drop table things;\ndrop function double_it(integer);\n")
    same = schemadiff.diff(server_url, schema=schema, migrations=migrations)
    assert same.identical
    assert same.statements == []
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + body.replace("n * 2", "n * 3"))
    apart = schemadiff.diff(server_url, schema=schema, migrations=migrations)
    assert not apart.identical
    assert [s.subject for s in apart.statements] == ["function double_it(n integer)"]
    assert "RETURN (n * 3)" in apart.statements[0].sql


def test_the_draft_is_tried_on_a_copy_and_says_what_it_leaves_undone(server_url: str, tmp_path: Path) -> None:
    schema, migrations = tmp_path / "schema", tmp_path / "migrations"
    schema.mkdir()
    migrations.mkdir()
    (migrations / "0001.all.sql").write_text(MIGRATION_PRELUDE +
        "create type color as enum ('red', 'green', 'blue');\n"
        "create table things (id integer primary key);\ninsert into things values (1);\n")
    (migrations / "0001.all.rollback.sql").write_text("drop table things;\ndrop type color;\n")
    # a label gone: not drafted, and the check says what still differs
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + "create type color as enum ('red', 'blue');\n"
                                        "create table things (id integer primary key);\n")
    undone = schemadiff.diff(server_url, schema=schema, migrations=migrations)
    assert [s.sql.split(":")[0] for s in undone.statements] == ["-- not drafted"]
    assert undone.remaining == ["-- types, only in schema/: color | e | red,blue |",
                                "-- types, only in migrations/: color | e | red,green,blue |"]
    assert "-- Not done by this draft (applied to a copy of the migrations' database, these still differ):\n" in (
        undone.text())
    # a NOT NULL column the existing row cannot have: the draft fails, and says so
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + "create type color as enum ('red', 'green', 'blue');\n"
                                        "create table things (id integer primary key, label text not null);\n")
    failing = schemadiff.diff(server_url, schema=schema, migrations=migrations)
    assert [s.sql for s in failing.statements] == ["alter table things add column label text not null;"]
    assert failing.remaining == ['-- the draft fails to apply: NotNullViolation: column "label" of relation "things"'
                                 ' contains null values']
    # one that works says so
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + "create type color as enum ('red', 'green', 'blue');\n"
                                        "create table things (id integer primary key, label text);\n")
    working = schemadiff.diff(server_url, schema=schema, migrations=migrations)
    assert working.remaining == []
    assert working.text().endswith(
        "\n-- Checked: applied to a copy of the migrations' database, this draft leaves no difference.\n")


# -- the commands, as an operator runs them -------------------------------------------------------


def small_trees(tmp_path: Path, schema_body: str) -> tuple[Path, Path]:
    schema, migrations = tmp_path / "schema", tmp_path / "migrations"
    schema.mkdir()
    migrations.mkdir()
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + schema_body)
    (migrations / "0001.all.sql").write_text(MIGRATION_PRELUDE + "create table things (id integer primary key);\n")
    (migrations / "0001.all.rollback.sql").write_text("drop table things;\n")
    return schema, migrations


def test_diff_command_exit_status_and_output(server_url: str, tmp_path: Path) -> None:
    schema, migrations = small_trees(tmp_path, "create table things (id integer primary key);\n")
    dirs = ("--schema-dir", str(schema), "--migrations-dir", str(migrations))
    same = run_cli("diff", *dirs, database_url=server_url)
    assert (same.returncode, same.stdout, same.stderr) == (
        0, "no difference: migrations/ and schema/ build the same catalog\n", "")
    (schema / "000_all.sql").write_text(SCHEMA_PRELUDE + "create table things (id integer primary key, label text);\n")
    apart = run_cli("diff", *dirs, database_url=server_url)
    assert apart.returncode == 1, apart.stderr
    assert apart.stderr == ""
    assert apart.stdout.startswith("-- DRAFT (automl-db diff)")
    assert "alter table things add column label text;\n" in apart.stdout
    report = json.loads(run_cli("diff", "--json", *dirs, database_url=server_url).stdout)
    assert report["identical"] is False
    assert report["statements"] == [{"subject": "column things.label",
                                     "sql": "alter table things add column label text;"}]
    with psycopg.connect(server_url) as conn:  # the subprocesses dropped their scratch databases
        names = [str(r[0]) for r in conn.execute("select datname from pg_database")]
    left = [n for n in names if (found := scratch.classify(n)) is not None and n.endswith("_diff")
            and found.pid is not None and not scratch.process_exists(found.pid)]
    assert left == []


def test_diff_refusals_are_one_line(tmp_path: Path) -> None:
    unreachable = run_cli("diff", database_url="postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert one_line_error(unreachable).startswith(
        "automl-db diff: cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1")
    missing = tmp_path / "nowhere"
    assert one_line_error(run_cli("diff", "--schema-dir", str(missing), database_url=None)) == (
        f"automl-db diff: --schema-dir {missing} is not a directory")


def test_migration_new_writes_the_next_pair(tmp_path: Path, server_url: str) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    result = run_cli("migration", "new", "add-model-tags", "--migrations-dir", str(directory), database_url=None)
    assert result.returncode == 0, result.stderr
    number = f"{int(MIGRATIONS[-1][:4]) + 1:04d}"
    forward, rollback = directory / f"{number}.add-model-tags.sql", directory / f"{number}.add-model-tags.rollback.sql"
    assert result.stdout.splitlines() == [str(forward), str(rollback)]
    text = forward.read_text()
    assert text.startswith(f"-- {number} add model tags: ")
    assert f"\n-- depends: {MIGRATIONS[-1]}\n" in text
    assert "set local lock_timeout = '5s';\nset local statement_timeout = '5min';\n" in text
    assert "grant" not in text.lower()
    assert rollback.read_text().startswith(f"-- {number} rollback: ")
    # squawk passes the pair, yoyo reads the dependency, and the pair applies and rolls back
    linted = subprocess.run(["squawk", "--config", str(Path(migrations_dir()).parent / ".squawk.toml"),
                             str(forward), str(rollback)], capture_output=True, text=True, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    with scratch_database(server_url, "cli", "new") as url:
        applied = migrate.apply(url, directory)
        assert applied == [*MIGRATIONS, f"{number}.add-model-tags"]
        assert migrate.rollback_all(url, directory)[0] == f"{number}.add-model-tags"
    from yoyo import read_migrations
    new = next(m for m in read_migrations(str(directory)) if m.id == f"{number}.add-model-tags")
    assert [d.id for d in new.depends] == [MIGRATIONS[-1]]
    # JSON, then the next number depends on the one just written
    again = json.loads(run_cli("migration", "new", "second", "--json", "--migrations-dir", str(directory),
                               database_url=None).stdout)
    assert again["id"] == f"{int(number) + 1:04d}.second"
    assert again["depends"] == f"{number}.add-model-tags"


@pytest.mark.parametrize("name", ["Add-Tags", "add_tags", "add tags", "add-", "add--tags", "add.tags", "",
                                  "x" * 61])
def test_migration_new_refuses_a_bad_name(tmp_path: Path, name: str) -> None:
    line = one_line_error(run_cli("migration", "new", name, "--migrations-dir", str(tmp_path), database_url=None))
    assert line.startswith(("automl-db migration: bad migration name", "automl-db migration: migration name too long"))
    assert list(tmp_path.iterdir()) == []


def test_migration_new_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "0001.first.sql").write_text("select 1;\n")
    (tmp_path / "0001.first.rollback.sql").write_text("select 1;\n")
    stray = tmp_path / "0002.half-done.rollback.sql"
    stray.write_text("-- someone's work\n")
    line = one_line_error(run_cli("migration", "new", "next", "--migrations-dir", str(tmp_path), database_url=None))
    assert line == (f"automl-db migration: {stray} already exists: will not overwrite it; remove it or finish that"
                    " migration first")
    assert stray.read_text() == "-- someone's work\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001.first.rollback.sql", "0001.first.sql",
                                                          "0002.half-done.rollback.sql"]
    stray.unlink()
    assert one_line_error(run_cli("migration", "new", "first", "--migrations-dir", str(tmp_path),
                                  database_url=None)) == (
        "automl-db migration: migration 0001.first already has the name 'first': choose another")
    with pytest.raises(newmigration.MigrationNameError):
        newmigration.create("next", tmp_path / "missing")
