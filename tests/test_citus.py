"""The Citus blocker list in docs/scaling.md: current with the migrated catalog, and computed from it."""

import psycopg
from psycopg.rows import DictRow

from automl_db.tools import citus

Conn = psycopg.Connection[DictRow]


def names(conn: Conn) -> dict[str, str]:
    return {b.rule: b.why for b in citus.blockers(conn)}


def test_the_committed_blocker_list_is_current(conn: Conn) -> None:
    document = citus.DOC.read_text()
    block = citus.render(conn)
    assert citus.splice(document, block) == document, (
        "docs/scaling.md's blocker list is stale: run `just citus-blockers`\n" + block)


def test_tables_are_placed_by_their_owner_column(conn: Conn) -> None:
    plan = citus.layout(conn)
    assert plan.distributed["users"] == "id"
    assert plan.distributed["credit_transactions"] == "user_id"
    assert {"tier_limits", "credit_packages", "tutorials"} <= set(plan.reference)
    assert "_yoyo_migration" in plan.local  # public: yoyo's bookkeeping, outside the project's schema
    assert not set(plan.distributed) & set(plan.reference)


def test_the_blockers_follow_the_catalog(conn: Conn) -> None:
    conn.execute("set search_path = automl, public")  # as a migration does: create into the project's schema
    conn.execute("set role automl_owner")  # and the post-apply layer gives what it creates to the owner
    conn.execute("create table notes (id uuid primary key, user_id uuid not null references users (id),"
                 " slug text constraint notes_slug_key unique, job_id uuid,"
                 " constraint notes_job_fkey foreign key (job_id) references jobs (id))")
    conn.execute("create table note_kinds (id int primary key,"
                 " owner uuid constraint note_kinds_owner_fkey references users (id))")
    found = names(conn)
    assert found["notes_pkey"] == "its key lacks `user_id`"
    assert found["notes_slug_key"] == "its key lacks `user_id`"
    assert found["notes_job_fkey"] == "does not pair `user_id` with `jobs.user_id`"
    assert found["note_kinds_owner_fkey"] == "a reference table may not point at a distributed one"
    assert "notes_user_id_fkey" not in found  # user_id -> users.id: co-located

    conn.execute("alter table notes drop constraint notes_pkey, add primary key (user_id, id),"
                 " drop constraint notes_slug_key, add constraint notes_slug_key unique (user_id, slug),"
                 " drop constraint notes_job_fkey, add constraint notes_job_fkey foreign key (job_id, user_id)"
                 " references jobs (id, user_id) on delete set null (job_id)")
    found = names(conn)
    assert "notes_pkey" not in found
    assert "notes_slug_key" not in found
    assert found["notes_job_fkey"].startswith("sets columns on delete on a key that includes `user_id`")
    conn.execute("alter table notes drop constraint notes_job_fkey, add constraint notes_job_fkey"
                 " foreign key (job_id, user_id) references jobs (id, user_id) on delete cascade")
    assert "notes_job_fkey" not in names(conn)
