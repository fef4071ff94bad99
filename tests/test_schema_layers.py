"""The two kinds of schema source (issue 11): structural migrations, and the idempotent layer
(schema/post/, generated into migrations/post-apply.sql) that yoyo re-runs after every apply.

A migration that only creates a tenant table gets ownership, grants, row-level security and its
place in check_integrity() from the catalog; `yoyo apply` alone loads the reference data; landed
migrations are frozen by checksum; everything of the project lives in the schema automl.
"""

import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from automl_db.errors import MigrationFailed
from automl_db.tools import frozen, migrate, postapply
from automl_db.tools.paths import PROJECT_ROOT, migrations_dir
from automl_db.urls import with_user, yoyo_url
from tests.catalog import snapshot
from tests.conftest import scratch_database
from tests.helpers import as_role, make_dataset, make_user

Conn = psycopg.Connection[DictRow]

#: A new tenant table written the way README "Writing a migration" says: the structural change only.
NOTES = """\
-- 0099 notes: a tenant table, and nothing about who may read it.
set local search_path = automl, public;
create table notes (
    id         uuid primary key default gen_random_uuid(),
    user_id    uuid not null references users (id) on delete cascade,
    dataset_id uuid,
    body       text not null,
    constraint notes_dataset_fkey foreign key (dataset_id, user_id) references datasets (id, user_id)
);
create index notes_user_idx on notes (user_id);
create index notes_dataset_idx on notes (dataset_id);
comment on table notes is 'A user''s notes.';
comment on column notes.id is 'Primary key.';
comment on column notes.user_id is 'Owner.';
comment on column notes.dataset_id is 'The dataset the note is about, of the same owner.';
comment on column notes.body is 'The note.';
"""
NOTES_ROLLBACK = "set local search_path = automl, public;\ndrop table notes;\n"


@pytest.fixture
def copied_migrations(tmp_path: Path) -> Path:
    """A scratch copy of migrations/ (post-apply.sql and frozen.sha256 included)."""
    target = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), target)
    return target


@pytest.fixture
def empty_db(server_url: str, template_name: str) -> Iterator[str]:
    """An empty database (template_name: the roles exist and may log in locally)."""
    with scratch_database(server_url, "t", "layers") as url:
        yield url


def test_a_tenant_table_from_a_migration_alone_is_owned_granted_guarded_and_audited(
        copied_migrations: Path, empty_db: str) -> None:
    (copied_migrations / "0099.notes.sql").write_text(NOTES)
    (copied_migrations / "0099.notes.rollback.sql").write_text(NOTES_ROLLBACK)
    assert migrate.apply(empty_db, copied_migrations)[-1] == "0099.notes"
    with psycopg.connect(empty_db, autocommit=True, row_factory=dict_row) as conn:
        table = conn.execute("""
            select c.relowner::regrole::text as owner, c.relrowsecurity, c.relforcerowsecurity,
                   c.relnamespace::regnamespace::text as schema
              from pg_class c where c.oid = 'automl.notes'::regclass""").fetchone()
        assert table == {"owner": "automl_owner", "relrowsecurity": True, "relforcerowsecurity": True,
                         "schema": "automl"}
        policies = {(r["polname"], r["roles"], r["cmd"], r["qual"]) for r in conn.execute("""
            select polname, polroles::regrole[]::text as roles, polcmd::text as cmd,
                   pg_get_expr(polqual, polrelid) as qual
              from pg_policy where polrelid = 'automl.notes'::regclass""")}
        tenant = ("notes_tenant", "{automl_app}", "*", "(user_id = ( SELECT app_user_id() AS app_user_id))")
        assert policies == {tenant, ("notes_readonly", "{automl_readonly}", "r", "true")}
        grants = {(r["grantee"], r["privilege_type"]) for r in conn.execute(
            "select grantee::regrole::text as grantee, privilege_type"
            " from aclexplode((select relacl from pg_class where oid = 'automl.notes'::regclass))")}
        assert {("automl_app", p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")} <= grants
        assert ("automl_readonly", "SELECT") in grants
        assert not {g for g in grants if g[0] in ("automl_readonly", "automl_billing") and g[1] != "SELECT"}
        a, b = make_user(conn), make_user(conn)
        dataset_b = make_dataset(conn, b)
        conn.execute("insert into notes (user_id, body) values (%s, 'of a'), (%s, 'of b')", [a, b])
        assert conn.execute("select * from check_integrity()").fetchall() == []

    with as_role(with_user(empty_db, "automl_app"), a) as app:
        assert [r["body"] for r in app.execute("select body from notes")] == ["of a"]
        with pytest.raises(psycopg.Error) as refused:
            app.execute("insert into notes (user_id, body) values (%s, 'planted')", [b])
        assert refused.value.sqlstate == "42501"  # the tenant policy's WITH CHECK
        assert app.execute("update notes set body = 'x' where user_id = %s", [b]).rowcount == 0
    with as_role(with_user(empty_db, "automl_readonly")) as readonly:
        assert len(readonly.execute("select body from notes").fetchall()) == 2

    with psycopg.connect(empty_db, autocommit=True, row_factory=dict_row) as conn:
        # Behind the foreign keys' back (a superuser with triggers off): a note of a missing account,
        # and a note of a pointing at b's dataset.
        conn.execute("set session_replication_role = replica")
        orphan = conn.execute("insert into notes (user_id, body) values (%s, 'orphan') returning id",
                              [uuid.uuid4()]).fetchone()
        crossed = conn.execute("insert into notes (user_id, dataset_id, body) values (%s, %s, 'crossed')"
                               " returning id", [a, dataset_b]).fetchone()
        conn.execute("reset session_replication_role")
        assert orphan is not None
        assert crossed is not None
        found = {(r["invariant"], r["subject"], r["detail"]) for r in conn.execute("select * from check_integrity()")}
        crossing = "notes_dataset_fkey: no datasets row of the same user"
        assert found == {("owner links", f"notes {orphan['id']}", "account missing"),
                         ("owner links", f"notes {crossed['id']}", crossing)}


def test_yoyo_apply_alone_loads_the_reference_data_and_a_rerun_changes_nothing(empty_db: str) -> None:
    """What a deployment runs: yoyo's own CLI on the migrations directory, nothing else."""
    yoyo = Path(sys.executable).with_name("yoyo")
    command = [str(yoyo), "apply", "--batch", "--database", yoyo_url(empty_db), str(migrations_dir())]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(empty_db, autocommit=True) as conn:
        counts = conn.execute("select (select count(*) from tier_limits), (select count(*) from credit_packages),"
                              " (select count(*) from tutorials)").fetchone()
        assert counts == (3, 4, 3)
        # yoyo's bookkeeping is all that public holds; the project is in automl.
        assert {r[0] for r in conn.execute("select relname from pg_class"
                                           " where relnamespace = 'public'::regnamespace and relkind = 'r'")} == {
            "_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"}
        stamps = conn.execute("select xmin::text, * from credit_packages order by name").fetchall()
        stamps += conn.execute("select xmin::text, * from tutorials order by slug").fetchall()
        stamps += conn.execute("select xmin::text, * from tier_limits order by tier").fetchall()
    before = snapshot(empty_db)
    # Again, with yoyo (nothing pending) and with automl-db migrate (which re-runs post-apply).
    again = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT)
    assert again.returncode == 0, again.stderr
    assert migrate.apply(empty_db) == []
    with psycopg.connect(empty_db, autocommit=True) as conn:
        after = conn.execute("select xmin::text, * from credit_packages order by name").fetchall()
        after += conn.execute("select xmin::text, * from tutorials order by slug").fetchall()
        after += conn.execute("select xmin::text, * from tier_limits order by tier").fetchall()
    assert after == stamps  # not even rewritten (same xmin)
    assert snapshot(empty_db) == before


def test_the_reference_data_is_brought_back_to_its_source(empty_db: str) -> None:
    migrate.apply(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("update credit_packages set price_cents = 1 where name = 'Starter'")
        conn.execute("update tutorials set steps = '[{\"id\": \"x\", \"title\": \"X\"}]' where slug = 'first-model'")
        conn.execute("update tier_limits set max_datasets = 1 where tier = 'free'")
    migrate.apply(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("select price_cents from credit_packages where name = 'Starter'").fetchone() == (999,)
        # Its steps changed back: learners who saw the hand-edited version see a new one.
        assert conn.execute("select step_count, content_version from tutorials where slug = 'first-model'"
                            ).fetchone() == (4, 2)
        assert conn.execute("select max_datasets from tier_limits where tier = 'free'").fetchone() == (10,)


def test_post_apply_repairs_drift_without_fighting_an_open_transaction(empty_db: str) -> None:
    """Re-applied while a client holds a write transaction open on the tenant tables: nothing it
    must change waits for that client's locks (post-apply's lock_timeout is 5s)."""
    migrate.apply(empty_db)
    with psycopg.connect(empty_db, autocommit=True, row_factory=dict_row) as conn:
        user = make_user(conn)
        conn.execute("revoke select on models from automl_readonly")  # drift post-apply repairs
    with psycopg.connect(empty_db) as writer:
        writer.execute("insert into workflows (user_id, name, definition)"
                       " values (%s, 'w', '{\"nodes\": [], \"edges\": []}')", [user])
        writer.execute("select count(*) from jobs, datasets, models, credit_transactions")
        # What a purchase in flight holds on its package and an account on its tier (foreign keys).
        writer.execute("select from credit_packages for key share")
        writer.execute("select from tier_limits for key share")
        writer.execute("select from tutorials for share")
        done: list[BaseException | None] = []

        def rerun() -> None:
            try:
                migrate.apply(empty_db)
                done.append(None)
            except BaseException as exc:
                done.append(exc)

        worker = threading.Thread(target=rerun)
        worker.start()
        worker.join(timeout=30)
        assert done == [None]
        writer.rollback()
    with psycopg.connect(empty_db) as check:
        assert check.execute("select has_table_privilege('automl_readonly', 'automl.models', 'select')"
                             ).fetchone() == (True,)


def test_a_migration_that_creates_into_public_is_refused(copied_migrations: Path, empty_db: str) -> None:
    """The boundary holds: a migration that forgets `set local search_path = automl, public` would put
    its table beside yoyo's bookkeeping, outside row-level security; post-apply refuses it."""
    (copied_migrations / "0099.stray.sql").write_text("create table stray (id int, user_id uuid);\n")
    (copied_migrations / "0099.stray.rollback.sql").write_text("drop table stray;\n")
    with pytest.raises(MigrationFailed) as refused:
        migrate.apply(empty_db, copied_migrations)
    assert "post-apply" in str(refused.value)
    assert "stray" in str(refused.value)


# Frozen migrations.

def test_the_landed_migrations_are_as_they_landed() -> None:
    assert frozen.problems() == []
    names = set(frozen.migration_files(migrations_dir()))
    assert set(frozen.read_frozen(migrations_dir())) == names  # every migration here has landed
    assert "0001.initial-schema.sql" in names
    assert "post-apply.sql" not in names


def test_an_edit_to_a_landed_migration_fails(copied_migrations: Path) -> None:
    assert frozen.problems(copied_migrations) == []
    first = copied_migrations / "0001.initial-schema.sql"
    first.write_text(first.read_text().replace("create table users", "create table users -- edited", 1))
    assert frozen.problems(copied_migrations) == [
        "0001.initial-schema.sql: edited after it was frozen (a landed migration never changes: add a new one)"]
    (copied_migrations / "0002.rules-for-every-client.rollback.sql").unlink()
    gone = "0002.rules-for-every-client.rollback.sql: frozen, but the file is gone"
    assert gone in frozen.problems(copied_migrations)


def test_only_the_newest_migration_may_be_unfrozen(copied_migrations: Path) -> None:
    (copied_migrations / "0098.draft.sql").write_text("select 1;\n")
    (copied_migrations / "0098.draft.rollback.sql").write_text("select 1;\n")
    assert frozen.problems(copied_migrations) == []  # being written
    (copied_migrations / "0099.next.sql").write_text("select 2;\n")
    assert [p.split(":")[0] for p in frozen.problems(copied_migrations)] == [
        "0098.draft.rollback.sql", "0098.draft.sql"]
    assert frozen.freeze(copied_migrations) == ["0098.draft.rollback.sql", "0098.draft.sql", "0099.next.sql"]
    assert frozen.problems(copied_migrations) == []


def test_post_apply_is_generated_from_schema_post() -> None:
    assert postapply.output_path().read_text() == postapply.render(), "stale: run `just post-apply`"
    assert [p.name for p in postapply.post_files()] == [
        "900_ownership.sql", "910_grants.sql", "920_row_security.sql", "930_reference_data.sql"]
    assert postapply.main(["--check"]) == 0


@pytest.mark.drift
def test_a_tenant_table_the_audit_cannot_read_is_reported_not_skipped(conn: Conn) -> None:
    """A table made behind post-apply's back (a superuser's, so automl_owner may not read it) is one
    row of check_integrity(), not an error and not a silent gap."""
    conn.execute("create table automl.side_notes (id uuid primary key, user_id uuid not null)")
    found = [(r["invariant"], r["subject"], r["detail"]) for r in conn.execute("select * from check_integrity()")]
    assert [(i, s) for i, s, _ in found] == [("owner links", "side_notes")]
    assert found[0][2].startswith("not audited: owned by ")
