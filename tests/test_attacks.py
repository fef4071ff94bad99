"""The attack suite: every way an adversarial client once broke a rule, tried again.

Each test plays the attacker as a real role (automl_app, automl_worker, automl_billing,
automl_readonly, or the superuser where a DBA would), with real threads and real killed backends
for the races, and asserts the refusal or the harmlessness, and that nothing was lost or
half-written. check_integrity() runs after every test (conftest).
"""

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import AlreadyExists
from automl_db.tools.paths import queries_dir, schema_files
from tests.helpers import as_role, give_credits, make_dataset, make_job, make_snapshot, make_user, one, value

Conn = psycopg.Connection[DictRow]


def balance(conn: Conn, user: Any) -> dict[str, Any]:
    return one(conn, "select credit_balance, last_entry_number from users where id = %s", [user])


def sqlstate_of(conn: Conn, query: str, params: Any = None) -> str:
    """'ok', or the SQLSTATE that refused the statement."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    return "ok"


@contextmanager
def background() -> Iterator[Callable[[Callable[[], Any]], Future[Any]]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool.submit


def blocked(future: Future[Any], seconds: float = 0.5) -> bool:
    """Whether the statement in `future` is still waiting after `seconds`."""
    time.sleep(seconds)
    return not future.done()


@pytest.fixture
def charged_job(conn: Conn) -> dict[str, Any]:
    """A user with 100 credits and a queued job that cost 30 (so 70 left)."""
    user = make_user(conn)
    give_credits(conn, user, 100)
    job = make_job(conn, user, status="queued", cost=30)
    return {"user": user, "job": job}


# 1. Settlement must not depend on the caller's row-level security.

@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_a_worker_acting_for_nobody_still_refunds(
        conn: Conn, worker_url: str, charged_job: dict[str, Any], end: str) -> None:
    user, job = charged_job["user"], charged_job["job"]
    assert balance(conn, user)["credit_balance"] == 70
    with as_role(worker_url) as worker:  # no automl.user_id: the worker sees no ledger rows of its own
        claimed = worker.execute("select id from claim_jobs('w1')").fetchone()
        assert claimed == {"id": job}
        worker.execute(f"update jobs set status = '{end}' where id = %s", [job])
    assert balance(conn, user)["credit_balance"] == 100
    assert value(conn, "select count(*) from credit_transactions where job_id = %s and type = 'refund'", [job]) == 1


def test_the_typed_worker_fails_a_job_without_acting_for_its_owner(
        worker_url: str, conn: Conn, charged_job: dict[str, Any]) -> None:
    with Database(worker_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as workers:
        with workers.transaction() as c:
            claimed = q.claim_job(c, worker_id="w1")
            assert claimed is not None
        with workers.transaction() as c:
            failed = q.fail_job(c, id=claimed.id, worker_id="w1", error_message="boom")
            assert failed is not None
    assert balance(conn, charged_job["user"])["credit_balance"] == 100


# 2. A temporary object cannot stand in for one of ours.

def test_the_runtime_roles_cannot_create_temporary_objects(
        app_url: str, worker_url: str, billing_url: str, readonly_url: str) -> None:
    for url in (app_url, worker_url, billing_url, readonly_url):
        with as_role(url) as c:
            assert sqlstate_of(c, "create temporary table credit_transactions (id uuid)") == "42501"


def test_a_temporary_ledger_or_type_does_not_shadow_the_real_one(
        conn: Conn, db_url: str, app_url: str) -> None:
    """Even where a DBA handed out the temporary-table right, the functions resolve our names."""
    user = make_user(conn)
    give_credits(conn, user, 50)
    snapshot = make_snapshot(conn, user)
    database = value(conn, "select current_database()")
    conn.execute(f'grant temporary on database "{database}" to automl_app')
    try:
        with as_role(app_url, user) as app:
            app.execute("create temporary table credit_transactions (like automl.credit_transactions)")
            app.execute("create temporary table users (like automl.users)")
            app.execute("create type pg_temp.job_status as enum ('queued')")
            job = value(app, "insert into automl.jobs (user_id, workflow_snapshot_id, status, credit_cost)"
                             " values (%s, %s, 'queued', 20) returning id", [user, snapshot])
            assert value(app, "select count(*) from pg_temp.credit_transactions") == 0
            app.execute("update automl.jobs set status = 'cancelled' where id = %s", [job])
            assert value(app, "select count(*) from pg_temp.credit_transactions") == 0
    finally:
        conn.execute(f'revoke temporary on database "{database}" from automl_app')
    assert [r["type"] for r in conn.execute(
        "select type::text from credit_transactions where job_id = %s order by entry_number", [job])] == [
        "consumption", "refund"]
    assert balance(conn, user)["credit_balance"] == 50


def test_every_function_pins_its_search_path_or_binds_its_names_at_creation(conn: Conn) -> None:
    loose = conn.execute("""
        select p.oid::regprocedure::text as function from pg_proc p
         where p.pronamespace = 'automl'::regnamespace
           and p.prosqlbody is null
           and not exists (select from unnest(p.proconfig) c
                            where c = 'search_path=pg_catalog, automl, pg_temp')""").fetchall()
    assert loose == []
    definers_unpinned = conn.execute("""
        select p.oid::regprocedure::text as function from pg_proc p
         where p.pronamespace = 'automl'::regnamespace and p.prosecdef
           and not exists (select from unnest(p.proconfig) c where c like 'search_path=%%pg_temp')""").fetchall()
    assert definers_unpinned == []


# 3. A balance, counter or number moves only with its row.

@pytest.mark.parametrize("conflict", ["", "on conflict do nothing", "on conflict (stripe_payment_id) do nothing"])
def test_a_payment_twin_in_another_tenant_cannot_credit_without_an_entry(
        conn: Conn, billing_url: str, conflict: str) -> None:
    a, b = make_user(conn), make_user(conn)
    buy = ("insert into credit_transactions (user_id, type, amount, stripe_payment_id)"
           f" values (%s, 'purchase', 100, 'pi_twin') {conflict}")
    with as_role(billing_url) as first, as_role(billing_url) as second, background() as run:
        first.execute("begin")
        first.execute(buy, [a])
        twin = run(lambda: sqlstate_of(second, buy, [b]))
        assert blocked(twin)  # the second waits for the first: it cannot move b's balance meanwhile
        first.execute("commit")
        assert twin.result(timeout=10) == "23505"
    assert balance(conn, a) == {"credit_balance": 100, "last_entry_number": 1}
    assert balance(conn, b) == {"credit_balance": 0, "last_entry_number": 0}


def test_an_id_twin_in_another_tenant_cannot_move_a_balance(conn: Conn, billing_url: str) -> None:
    a, b = make_user(conn), make_user(conn)
    entry = uuid.uuid4()
    grant = ("insert into credit_transactions (id, user_id, type, amount) values (%s, %s, 'adjustment', 5)"
             " on conflict do nothing")
    with as_role(billing_url) as first, as_role(billing_url) as second, background() as run:
        first.execute("begin")
        first.execute(grant, [entry, a])
        twin = run(lambda: sqlstate_of(second, grant, [entry, b]))
        assert blocked(twin)
        first.execute("commit")
        assert twin.result(timeout=10) == "23505"
    assert balance(conn, b) == {"credit_balance": 0, "last_entry_number": 0}


def test_a_killed_twin_leaves_nothing_and_the_waiting_one_proceeds(conn: Conn, billing_url: str) -> None:
    a, b = make_user(conn), make_user(conn)
    buy = ("insert into credit_transactions (user_id, type, amount, stripe_payment_id)"
           " values (%s, 'purchase', 9, 'pi_k')")
    first = as_role(billing_url)
    with as_role(billing_url) as second, background() as run:
        first.execute("begin")
        first.execute(buy, [a])  # a's balance moved, uncommitted
        twin = run(lambda: sqlstate_of(second, buy, [b]))
        assert blocked(twin)
        conn.execute("select pg_terminate_backend(%s)", [first.info.backend_pid])
        assert twin.result(timeout=10) == "ok"
    assert first.closed or first.broken or sqlstate_of(first, "select 1") != "ok"
    first.close()
    assert balance(conn, a) == {"credit_balance": 0, "last_entry_number": 0}
    assert balance(conn, b) == {"credit_balance": 9, "last_entry_number": 1}


def test_an_upload_naming_another_tenants_dataset_touches_nothing_of_it(conn: Conn, app_url: str) -> None:
    a, b = make_user(conn), make_user(conn)
    mine, theirs = make_dataset(conn, a), make_dataset(conn, b)
    upload = value(conn, "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 1)"
                         " returning upload_id", [mine])
    with as_role(app_url, a) as attacker, as_role(app_url, b) as victim:
        attacker.execute("begin")
        state = sqlstate_of(attacker, "insert into dataset_versions (dataset_id, user_id, upload_id,"
                                      " original_size_bytes) values (%s, %s, %s, 1) on conflict do nothing",
                            [theirs, a, upload])
        assert state == "23503"  # a dataset a cannot see does not exist for a
        # The attacker's transaction stays open (aborted): b's dataset row must not be locked by it.
        victim.execute("set lock_timeout = '1s'")
        victim.execute("insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 1)", [theirs])
        attacker.execute("rollback")
    assert value(conn, "select last_version_number from datasets where id = %s", [theirs]) == 1


def test_an_upload_skipped_by_on_conflict_leaves_no_gap(conn: Conn, app_url: str) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)
    with as_role(app_url, user) as app:
        first = one(app, "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 1)"
                         " returning upload_id, version_number", [dataset])
        skipped = app.execute("insert into dataset_versions (dataset_id, upload_id, original_size_bytes)"
                              " values (%s, %s, 1) on conflict (upload_id) do nothing returning id",
                              [dataset, first["upload_id"]]).fetchall()
        assert skipped == []
        second = one(app, "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 1)"
                          " returning version_number", [dataset])
    assert (first["version_number"], second["version_number"]) == (1, 2)
    assert one(conn, "select last_version_number from datasets where id = %s", [dataset]) == {"last_version_number": 2}
    assert one(conn, "select storage_used_bytes from users where id = %s", [user]) == {"storage_used_bytes": 2}


def test_a_multi_row_upload_numbers_each_version(conn: Conn) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)
    numbers = [r["version_number"] for r in conn.execute(
        "insert into dataset_versions (dataset_id, original_size_bytes) select %s, 1 from generate_series(1, 3)"
        " returning version_number", [dataset])]
    assert sorted(numbers) == [1, 2, 3]


def test_a_resubmitted_job_is_charged_once(conn: Conn, app_url: str, charged_job: dict[str, Any]) -> None:
    user = charged_job["user"]
    snapshot = value(conn, "select workflow_snapshot_id from jobs where id = %s", [charged_job["job"]])
    submit = ("insert into jobs (user_id, workflow_snapshot_id, status, credit_cost, idempotency_key)"
              " values (%s, %s, 'queued', 20, 'k1') on conflict (user_id, idempotency_key)"
              " where idempotency_key is not null do nothing")
    with as_role(app_url, user) as app:
        app.execute(submit, [user, snapshot])
        app.execute(submit, [user, snapshot])
    assert balance(conn, user) == {"credit_balance": 50, "last_entry_number": 3}


# 4. Sign-in reveals one id and changes nothing; sign-up only for the id acted for.

def test_oauth_sign_in_reveals_one_id_and_changes_nothing(conn: Conn, app_url: str) -> None:
    a = make_user(conn)
    b = make_user(conn, full_name="Bea", oauth_provider="github", oauth_id="77", email_verified=False)
    before = one(conn, "select * from users where id = %s", [b])
    with as_role(app_url, a) as app:
        assert value(app, "select user_id_for_oauth('github', '77')") == b
        assert app.execute("select * from users where id = %s", [b]).fetchall() == []  # and nothing more
        assert sqlstate_of(app, "select oauth_sign_in('x@example.com', 'Eve', 'github', '77')") == "42883"
        assert sqlstate_of(app, "update users set full_name = 'Eve' where id = %s", [b]) == "ok"  # 0 rows
        for account in (b, uuid.uuid4()):  # an account for an id this transaction does not act for
            assert sqlstate_of(app, "insert into users (id, email, oauth_provider, oauth_id, email_verified)"
                                    " values (%s, 'new@example.com', 'google', 'g1', true)", [account]) == "42501"
    with as_role(app_url) as nobody:
        assert sqlstate_of(nobody, "insert into users (email) values ('n@example.com')") == "42501"
    assert one(conn, "select * from users where id = %s", [b]) == before


# 5. Credits come only from the billing path.

def test_the_runtime_role_cannot_mint_credits_or_lift_its_tier(conn: Conn, app_url: str) -> None:
    user = make_user(conn)
    enterprise = value(conn, "insert into credit_packages (name, credits, price_cents, tier_restriction)"
                             " values ('E', 20000, 1, 'enterprise_only') returning id")
    starter = value(conn, "insert into credit_packages (name, credits, price_cents) values ('S', 100, 1) returning id")
    job = make_job(conn, user)  # pending, never charged
    with as_role(app_url, user) as app:
        assert sqlstate_of(app, "update users set tier = 'enterprise' where id = %s", [user]) == "42501"
        assert sqlstate_of(app, "select change_user_tier(%s, 'enterprise')", [user]) == "42883"
        for statement, params in [
            ("insert into credit_transactions (user_id, type, amount, package_id, stripe_payment_id)"
             " values (%s, 'purchase', 100, %s, 'pi_forged')", [user, starter]),
            ("insert into credit_transactions (user_id, type, amount, package_id) values (%s, 'purchase', 20000, %s)",
             [user, enterprise]),
            ("insert into credit_transactions (user_id, type, amount) values (%s, 'adjustment', 20000)", [user]),
        ]:
            assert sqlstate_of(app, statement, params) == "42501", statement
        assert sqlstate_of(app, "insert into credit_transactions (user_id, type, amount, job_id)"
                                " values (%s, 'refund', 500, %s)", [user, job]) == "23514"  # nothing to refund
    assert balance(conn, user) == {"credit_balance": 0, "last_entry_number": 0}
    assert value(conn, "select tier::text from users where id = %s", [user]) == "free"


def test_billing_purchases_need_a_payment_and_the_right_tier(conn: Conn, billing_url: str) -> None:
    user = make_user(conn)
    enterprise = value(conn, "insert into credit_packages (name, credits, price_cents, tier_restriction)"
                             " values ('E', 20000, 1, 'enterprise_only') returning id")
    with as_role(billing_url) as billing:
        assert sqlstate_of(billing, "insert into credit_transactions (user_id, type, amount)"
                                    " values (%s, 'purchase', 10)", [user]) == "23514"
        assert sqlstate_of(billing, "insert into credit_transactions (user_id, type, amount, package_id,"
                                    " stripe_payment_id) values (%s, 'purchase', 20000, %s, 'pi_1')",
                           [user, enterprise]) == "23514"
        assert sqlstate_of(billing, "delete from credit_transactions") == "42501"
        assert sqlstate_of(billing, "update users set credit_balance = 5") == "42501"
    assert balance(conn, user) == {"credit_balance": 0, "last_entry_number": 0}


# 6. One lock order: the two-transaction interleavings that used to deadlock now queue.

def test_charging_then_cancelling_beside_a_worker_failing_the_job_queues(conn: Conn, app_url: str,
                                                                          worker_url: str) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    running = make_job(conn, user, status="queued", cost=10)
    conn.execute("update jobs set status = 'running', worker_id = 'w' where id = %s", [running])
    snapshot = value(conn, "select workflow_snapshot_id from jobs where id = %s", [running])
    with as_role(app_url, user) as app, as_role(worker_url, user) as worker, background() as run:
        app.execute("begin")
        app.execute("insert into jobs (user_id, workflow_snapshot_id, status, credit_cost)"
                    " values (%s, %s, 'queued', 5)", [user, snapshot])  # charged: app holds the users row
        fail = run(lambda: sqlstate_of(worker, "update jobs set status = 'failed' where id = %s", [running]))
        assert blocked(fail)  # the worker waits on the users row, before locking the job
        app.execute("update jobs set status = 'cancelled' where id = %s", [running])  # no deadlock
        app.execute("commit")
        assert fail.result(timeout=10) == "AM003"  # it ran after, and found the job cancelled
    assert value(conn, "select status::text from jobs where id = %s", [running]) == "cancelled"
    assert balance(conn, user)["credit_balance"] == 95


def test_posting_then_uploading_beside_another_upload_queues(conn: Conn, app_url: str) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)
    upload = "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 10)"
    with as_role(conn.info.dsn) as first, as_role(app_url, user) as second, background() as run:
        first.execute("begin")
        first.execute("insert into credit_transactions (user_id, type, amount) values (%s, 'adjustment', 5)",
                      [user])  # the users row
        other = run(lambda: sqlstate_of(second, upload, [dataset]))
        assert blocked(other)  # the other upload waits on the users row before taking the dataset's
        first.execute(upload, [dataset])
        first.execute("commit")
        assert other.result(timeout=10) == "ok"
    assert value(conn, "select last_version_number from datasets where id = %s", [dataset]) == 2


# 8. Lifecycles live in the database.

def test_ingestion_runs_and_versions_refuse_illegal_moves(conn: Conn) -> None:
    dataset = make_dataset(conn, make_user(conn))
    version = value(conn, "insert into dataset_versions (dataset_id) values (%s) returning id", [dataset])
    run_id = value(conn, "insert into ingestion_jobs (dataset_version_id) values (%s) returning id", [version])
    conn.execute("update ingestion_jobs set status = 'running' where id = %s", [run_id])
    conn.execute("update ingestion_jobs set status = 'completed' where id = %s", [run_id])
    for status in ("pending", "running", "failed"):
        assert sqlstate_of(conn, "update ingestion_jobs set status = %s where id = %s", [status, run_id]) == "AM003"
    assert sqlstate_of(conn, "insert into ingestion_jobs (dataset_version_id, status) values (%s, 'completed')",
                       [version]) == "AM003"
    stamps = one(conn, "select created_at, started_at, completed_at from ingestion_jobs where id = %s", [run_id])
    assert stamps["created_at"] <= stamps["started_at"] <= stamps["completed_at"]
    conn.execute("update dataset_versions set status = 'failed' where id = %s", [version])
    for status in ("pending", "processing", "completed"):
        assert sqlstate_of(conn, "update dataset_versions set status = %s where id = %s",
                           [status, version]) == "AM003"
    assert value(conn, "select processed_at is not null from dataset_versions where id = %s", [version])


def test_lifecycle_stamps_are_the_databases(conn: Conn) -> None:
    user = make_user(conn)
    snapshot = make_snapshot(conn, user)
    job = value(conn, "insert into jobs (user_id, workflow_snapshot_id, created_at, completed_at)"
                      " values (%s, %s, now() + interval '1 day', '2000-01-01') returning id", [user, snapshot])
    conn.execute("update jobs set status = 'queued', completed_at = '2000-01-01', created_at = '1999-01-01'"
                 " where id = %s", [job])
    stamps = one(conn, "select created_at, queued_at, started_at, completed_at, now() as now from jobs"
                       " where id = %s", [job])
    assert stamps["created_at"] <= stamps["queued_at"] <= stamps["now"]
    assert (stamps["started_at"], stamps["completed_at"]) == (None, None)
    dataset = make_dataset(conn, user)
    version = value(conn, "insert into dataset_versions (dataset_id, created_at, processed_at)"
                          " values (%s, '2000-01-01', '2000-01-01') returning id", [dataset])
    assert one(conn, "select created_at > '2001-01-01' as fresh, processed_at from dataset_versions"
                     " where id = %s", [version]) == {"fresh": True, "processed_at": None}


@pytest.mark.parametrize(("statement", "constraint"), [
    ("update dataset_versions set upload_id = gen_random_uuid() where id = %(version)s",
     "dataset_versions_identity_immutable"),
    ("update ingestion_jobs set dataset_version_id = %(other_version)s where id = %(run)s",
     "ingestion_jobs_identity_immutable"),
    ("update job_nodes set node_id = 'other' where job_id = %(job)s", "job_nodes_identity_immutable"),
    ("update jobs set workflow_snapshot_id = %(other_snapshot)s where id = %(job)s", "jobs_terms_immutable"),
    ("update workflow_snapshots set snapshot_data = '{\"nodes\": [], \"edges\": []}' where id = %(snapshot)s",
     "workflow_snapshots_immutable"),
    ("update credit_transactions set description = 'x' where user_id = %(user)s", "credit_transactions_immutable"),
    ("update datasets set user_id = %(other)s where id = %(dataset)s", "datasets_owner_immutable"),
])
def test_every_immutability_refusal_is_am004(conn: Conn, statement: str, constraint: str) -> None:
    user, other = make_user(conn), make_user(conn)
    give_credits(conn, user, 10)
    dataset = make_dataset(conn, user)
    version = value(conn, "insert into dataset_versions (dataset_id) values (%s) returning id", [dataset])
    other_version = value(conn, "insert into dataset_versions (dataset_id) values (%s) returning id", [dataset])
    run_id = value(conn, "insert into ingestion_jobs (dataset_version_id) values (%s) returning id", [version])
    snapshot = make_snapshot(conn, user)
    job = make_job(conn, user, snapshot_id=snapshot)
    conn.execute("insert into job_nodes (job_id, node_id) values (%s, 'n')", [job])
    params = {"user": user, "other": other, "dataset": dataset, "version": version, "other_version": other_version,
              "run": run_id, "job": job, "snapshot": snapshot, "other_snapshot": make_snapshot(conn, user)}
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(statement, params)
    assert (refused.value.sqlstate, refused.value.diag.constraint_name) == ("AM004", constraint)


def test_the_package_rule_is_written_once(conn: Conn) -> None:
    """Only credit_package_on_sale() spells out which tier may buy what; everything else calls it."""
    functions = [r["proname"] for r in conn.execute(
        "select proname from pg_proc where pronamespace = 'automl'::regnamespace"
        " and pg_get_functiondef(oid) like '%%pro_only%%'")]
    assert functions == ["credit_package_on_sale"]
    for path in [*schema_files(), *queries_dir().glob("*.sql")]:
        assert "tier_restriction =" not in path.read_text(), path.name
    assert (queries_dir() / "credits.sql").read_text().count("credit_package_on_sale(") == 2


# Beyond the schema: no large objects or advisory locks for the runtime roles.

@pytest.mark.parametrize("statement", ["select lo_create(0)", "select lo_from_bytea(0, 'x')",
                                       "select pg_advisory_lock(1)", "select pg_advisory_xact_lock(1, 2)",
                                       "select pg_try_advisory_lock(1)",
                                       "select pg_logical_emit_message(false, 'x', 'y')"])
def test_the_runtime_roles_have_no_ambient_powers(
        app_url: str, worker_url: str, billing_url: str, readonly_url: str, statement: str) -> None:
    for url in (app_url, worker_url, billing_url, readonly_url):
        with as_role(url) as c:
            assert sqlstate_of(c, statement) == "42501", url


def test_the_typed_api_cannot_be_talked_into_another_tenant(conn: Conn, app_url: str) -> None:
    """The typed functions take user_id as a parameter; row-level security, not the parameter, decides."""
    a, b = make_user(conn), make_user(conn)
    dataset_b = make_dataset(conn, b)
    with (Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db,
          db.transaction(user_id=a) as c):
        assert q.get_dataset(c, user_id=b, id=dataset_b) is None
        assert q.rename_dataset(c, user_id=b, id=dataset_b, name="pwned") is None
        assert q.delete_dataset(c, user_id=b, id=dataset_b) == 0
    assert value(conn, "select name from datasets where id = %s", [dataset_b]) == "iris"


# Found by a second look (review of the first version of these rules).

def test_a_reused_job_id_is_not_refunded_a_purged_accounts_charge(
        conn: Conn, app_url: str, worker_url: str) -> None:
    a, b = make_user(conn), make_user(conn)
    give_credits(conn, a, 100)
    give_credits(conn, b, 100)
    job = uuid.uuid4()
    with as_role(app_url, a) as app:
        app.execute("insert into jobs (id, user_id, workflow_snapshot_id, status, credit_cost)"
                    " values (%s, %s, %s, 'queued', 50)", [job, a, make_snapshot(conn, a)])
    with as_role(worker_url) as worker:
        worker.execute("select from claim_jobs('w1', 5)")
        worker.execute("update jobs set status = 'completed' where id = %s", [job])  # keeps its charge
    conn.execute("update users set is_deleted = true where id = %s", [a])
    conn.execute("select * from purge_soft_deleted('-1 day')")  # the job is gone, its ledger entry stays
    with as_role(app_url, b) as app:
        app.execute("insert into jobs (id, user_id, workflow_snapshot_id, status, credit_cost)"
                    " values (%s, %s, %s, 'queued', 0)", [job, b, make_snapshot(conn, b)])
        app.execute("update jobs set status = 'cancelled' where id = %s", [job])
        assert sqlstate_of(app, "insert into credit_transactions (user_id, type, amount, job_id)"
                                " values (%s, 'refund', 50, %s)", [b, job]) == "23514"
    assert balance(conn, b)["credit_balance"] == 100


def test_the_runtime_roles_cannot_lock_the_queue(app_url: str, worker_url: str) -> None:
    for url in (app_url, worker_url):
        with as_role(url) as c:
            for table in ("jobs", "job_nodes"):
                c.execute("begin")
                assert sqlstate_of(c, f"lock table {table} in access exclusive mode") == "42501", (url, table)
                c.execute("rollback")


def test_no_client_can_make_a_job_unclaimable_for_every_worker(
        conn: Conn, app_url: str, worker_url: str) -> None:
    user = make_user(conn)
    snapshot = make_snapshot(conn, user)
    with as_role(app_url, user) as app:
        poison = value(app, "insert into jobs (user_id, workflow_snapshot_id, status, priority, attempt, max_attempts)"
                            " values (%s, %s, 'queued', 1000, 1, 1) returning id", [user, snapshot])
        assert value(app, "select attempt from jobs where id = %s", [poison]) == 0  # the database counts
        assert sqlstate_of(app, "update jobs set attempt = 5 where id = %s", [poison]) == "42501"
        assert sqlstate_of(app, "update jobs set worker_id = 'me' where id = %s", [poison]) == "42501"
    other = make_job(conn, make_user(conn), status="queued")
    with as_role(worker_url) as worker:
        claimed = {r["id"] for r in worker.execute("select id from claim_jobs('w1', 5)")}
        assert claimed == {poison, other}
        assert sqlstate_of(worker, "update jobs set max_attempts = 9 where id = %s", [poison]) == "42501"
    with pytest.raises(psycopg.Error) as refused:
        conn.execute("update jobs set max_attempts = 9 where id = %s", [poison])
    assert refused.value.diag.constraint_name == "jobs_terms_immutable"


def test_the_app_cannot_burn_a_payment_id_or_backdate_the_ledger(
        conn: Conn, app_url: str, billing_url: str) -> None:
    user = make_user(conn)
    give_credits(conn, user, 10)
    job = make_job(conn, user, status="queued", cost=1)
    with as_role(app_url, user) as app, as_role(billing_url) as billing:
        app.execute("begin")
        state = sqlstate_of(app, "with j as (update jobs set status = 'cancelled' where id = %s returning id, user_id)"
                                 " insert into credit_transactions (user_id, type, amount, job_id, stripe_payment_id)"
                                 " select user_id, 'refund', 1, id, 'pi_victim' from j", [job])
        assert state == "42501"
        # The attacker's transaction stays open (aborted): billing's payment must not wait on it.
        billing.execute("set lock_timeout = '1s'")
        billing.execute("insert into credit_transactions (user_id, type, amount, stripe_payment_id)"
                        " values (%s, 'purchase', 5, 'pi_victim')", [user])
        app.execute("rollback")
        app.execute("update jobs set status = 'cancelled' where id = %s", [job])  # refunded by the database
    stamps = [r["created_at"] for r in conn.execute(
        "select created_at from credit_transactions where user_id = %s", [user])]
    assert all(s.year > 2020 for s in stamps)
    with pytest.raises(psycopg.Error) as backdated:
        conn.execute("insert into credit_transactions (user_id, type, amount, stripe_payment_id, created_at)"
                     " values (%s, 'adjustment', 1, 'pi_x', '2001-01-01')", [user])
    assert backdated.value.diag.constraint_name == "credit_transactions_payment_only_purchases"
    assert value(conn, "insert into credit_transactions (user_id, type, amount, created_at)"
                       " values (%s, 'adjustment', 1, '2001-01-01') returning created_at", [user]).year > 2020


def test_a_payment_credited_to_one_account_is_refused_for_another(conn: Conn, billing_url: str) -> None:
    a, b = make_user(conn), make_user(conn)
    package = value(conn, "insert into credit_packages (name, credits, price_cents) values ('p', 5, 1) returning id")
    with Database(billing_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as billing:
        with billing.transaction() as c:
            assert q.purchase_credits(c, user_id=a, package_id=package, stripe_payment_id="pi_1") is not None
        with pytest.raises(AlreadyExists), billing.transaction() as c:
            q.purchase_credits(c, user_id=b, package_id=package, stripe_payment_id="pi_1")
    assert balance(conn, b)["credit_balance"] == 0


def test_retention_and_rescue_intervals_cannot_be_shortened_by_a_worker(conn: Conn, worker_url: str) -> None:
    user = make_user(conn)
    conn.execute("update users set is_deleted = true where id = %s", [user])
    with as_role(worker_url) as worker:
        for retention in ("0 seconds", "-1 day", "29 days"):
            assert sqlstate_of(worker, "select * from purge_soft_deleted(%s)", [retention]) == "22023"
        assert sqlstate_of(worker, "select * from rescue_stalled_jobs('-1 hour')") == "22023"
    assert value(conn, "select purged_at is null from users where id = %s", [user])


def test_a_purged_account_is_final_and_a_closed_one_takes_nothing_new(conn: Conn, app_url: str) -> None:
    user = make_user(conn)
    give_credits(conn, user, 10)
    conn.execute("update users set is_deleted = true where id = %s", [user])
    with as_role(app_url, user) as app:  # closed, not yet purged
        assert sqlstate_of(app, "insert into datasets (user_id, name) values (%s, 'd')", [user]) == "AM004"
    conn.execute("select * from purge_soft_deleted('-1 day')")
    with as_role(app_url, user) as app:
        for statement in ("update users set email = 'back@example.com' where id = %s",
                          "update users set is_deleted = false where id = %s"):
            assert sqlstate_of(app, statement, [user]) == "AM004"
    assert sqlstate_of(conn, "insert into credit_transactions (user_id, type, amount)"
                             " values (%s, 'adjustment', 5)", [user]) == "AM004"
    assert one(conn, "select email, credit_balance from users where id = %s", [user]) == {
        "email": None, "credit_balance": 10}


def test_a_datasets_version_sequence_starts_at_zero(conn: Conn, app_url: str) -> None:
    user = make_user(conn)
    with as_role(app_url, user) as app:
        assert sqlstate_of(app, "insert into datasets (user_id, name, last_version_number)"
                                " values (%s, 'd', 41)", [user]) == "AM005"


def test_replica_mode_does_not_open_the_ledger(conn: Conn) -> None:
    user = make_user(conn)
    give_credits(conn, user, 10)
    conn.execute("set session_replication_role = replica")
    try:
        for statement in ("update credit_transactions set amount = amount + 1000", "delete from credit_transactions",
                          "truncate credit_transactions"):
            assert sqlstate_of(conn, statement) == "AM004", statement
    finally:
        conn.execute("set session_replication_role = origin")
