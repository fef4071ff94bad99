"""Least privilege and row-level security, as automl_app, automl_worker and automl_readonly see them."""

import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from tests.helpers import (
    GRAPH,
    as_role,
    give_credits,
    make_dataset,
    make_job,
    make_model,
    make_snapshot,
    make_user,
    value,
)

Conn = psycopg.Connection[DictRow]

TENANT_TABLES = ["datasets", "dataset_versions", "dataset_profiles", "ingestion_jobs", "workflows",
                 "workflow_snapshots", "jobs", "job_nodes", "models", "credit_transactions", "experiments",
                 "experiment_runs", "user_tutorial_progress"]


@pytest.fixture
def tenants(conn: Conn) -> dict[str, Any]:
    """Users a and b with at least one row each in every tenant table (written as the superuser)."""
    ids: dict[str, Any] = {}
    tutorial = value(conn, "insert into tutorials (slug, title, is_published) values ('t', 'T', true) returning id")
    for who in ("a", "b"):
        user = make_user(conn)
        give_credits(conn, user, 100)
        dataset = make_dataset(conn, user)
        version = value(conn, "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 10)"
                              " returning id", [dataset])
        conn.execute("insert into dataset_profiles (dataset_version_id) values (%s)", [version])
        conn.execute("insert into ingestion_jobs (dataset_version_id) values (%s)", [version])
        snapshot = make_snapshot(conn, user)
        job = make_job(conn, user, status="queued", cost=10, snapshot_id=snapshot)
        conn.execute("insert into job_nodes (job_id, node_id) values (%s, 'data')", [job])
        model = make_model(conn, user, job)
        experiment = value(conn, "insert into experiments (user_id, name) values (%s, 'e') returning id", [user])
        conn.execute("insert into experiment_runs (experiment_id, model_id) values (%s, %s)", [experiment, model])
        conn.execute("insert into user_tutorial_progress (user_id, tutorial_id) values (%s, %s)", [user, tutorial])
        ids |= {who: user, f"{who}_dataset": dataset, f"{who}_version": version, f"{who}_snapshot": snapshot,
                f"{who}_job": job, f"{who}_model": model, f"{who}_experiment": experiment}
    ids["tutorial"] = tutorial
    return ids


# A row owned by b, inserted while acting for a: row-level security must refuse it.
FOREIGN_INSERTS = {
    "users": "insert into users (id, email) values (%(b_new)s, 'x@example.com')",
    "datasets": "insert into datasets (user_id, name) values (%(b)s, 'x')",
    "dataset_versions": "insert into dataset_versions (dataset_id, user_id) values (%(b_dataset)s, %(b)s)",
    "dataset_profiles": "insert into dataset_profiles (dataset_version_id, user_id) values (%(b_version)s, %(b)s)",
    "ingestion_jobs": "insert into ingestion_jobs (dataset_version_id, user_id) values (%(b_version)s, %(b)s)",
    "workflows": "insert into workflows (user_id, name) values (%(b)s, 'x')",
    "workflow_snapshots": "insert into workflow_snapshots (user_id, snapshot_data) values (%(b)s, %(graph)s)",
    "jobs": "insert into jobs (user_id, workflow_snapshot_id) values (%(b)s, %(b_snapshot)s)",
    "job_nodes": "insert into job_nodes (job_id, user_id, node_id) values (%(b_job)s, %(b)s, 'x')",
    "models": "insert into models (user_id, job_id, name) values (%(b)s, %(b_job)s, 'x')",
    "credit_transactions": "insert into credit_transactions (user_id, type, amount, job_id)"
                           " values (%(b)s, 'consumption', -1, %(b_job)s)",
    "experiments": "insert into experiments (user_id, name) values (%(b)s, 'x')",
    "experiment_runs": "insert into experiment_runs (experiment_id, user_id) values (%(b_experiment)s, %(b)s)",
    "user_tutorial_progress": "insert into user_tutorial_progress (user_id, tutorial_id) values (%(b)s, %(tutorial)s)",
}
UPDATED_COLUMN = {"users": "full_name", "datasets": "name"}  # else: id = id


@pytest.mark.parametrize("table", ["users", *TENANT_TABLES])
def test_each_tenant_table_is_walled(conn: Conn, app_url: str, tenants: dict[str, Any], table: str) -> None:
    conn.execute("insert into credit_packages (name, credits, price_cents) values ('p', 5, 100)")
    owner = "id" if table == "users" else "user_id"
    own = value(conn, f"select count(*) from {table} where {owner} = %s", [tenants["a"]])
    assert own >= 1
    with as_role(app_url, tenants["a"]) as app:
        seen = app.execute(f"select {owner} as owner from {table}").fetchall()
        assert len(seen) == own
        assert {r["owner"] for r in seen} == {tenants["a"]}
        column = UPDATED_COLUMN.get(table, "id")
        for statement in (f"update {table} set {column} = {column} where {owner} = %s",
                          f"delete from {table} where {owner} = %s"):
            try:
                touched = app.execute(statement, [tenants["b"]]).rowcount
            except psycopg.errors.InsufficientPrivilege:
                continue  # this role may not do that to any row: even stronger
            assert touched == 0, statement
        params = {**tenants, "b_new": tenants["b"], "graph": json.dumps(GRAPH)}
        # Refused by row-level security, or (a version naming b's dataset) as a dataset a cannot see.
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ForeignKeyViolation)):
            app.execute(FOREIGN_INSERTS[table], params)
        with pytest.raises(psycopg.Error) as moved:  # nor move a row to b: RLS or the owner-immutable rule
            app.execute(f"update {table} set {owner} = %s where {owner} = %s", [tenants["b"], tenants["a"]])
        assert moved.value.sqlstate in ("42501", "AM004", "23000"), moved.value
    with as_role(app_url) as nobody:
        assert nobody.execute(f"select count(*) as n from {table}").fetchone() == {"n": 0}
    assert value(conn, f"select count(*) from {table} where {owner} = %s", [tenants["b"]]) >= 1


def test_the_user_setting_does_not_outlive_its_transaction(app_url: str, tenants: dict[str, Any]) -> None:
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with db.transaction(user_id=tenants["a"]) as c:
            assert len(q.list_datasets(c, user_id=tenants["a"])) == 1
        with db.transaction() as c:  # the same pooled connection
            assert c.execute("select count(*) from datasets").fetchone() == (0,)
            assert c.execute("select app_user_id()").fetchone() == (None,)


def test_readonly_reads_everything_and_writes_nothing(readonly_url: str, tenants: dict[str, Any]) -> None:
    with as_role(readonly_url) as ro:
        for table in TENANT_TABLES:
            owners = {r["user_id"] for r in ro.execute(f"select user_id from {table}")}
            assert {tenants["a"], tenants["b"]} <= owners, table
        assert ro.execute("select count(*) as n from check_integrity()").fetchone() == {"n": 0}
        for statement in ("update datasets set name = 'x'", "delete from jobs", "insert into tutorials"
                          " (slug, title) values ('x', 'x')", "select * from claim_jobs('ro')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ro.execute(statement)


def test_only_workers_take_from_the_queue(app_url: str, worker_url: str, tenants: dict[str, Any]) -> None:
    with as_role(app_url, tenants["a"]) as app:
        for statement in ("select * from claim_jobs('w')", "select * from rescue_stalled_jobs()",
                          "select * from purge_soft_deleted()", "select * from check_integrity()",
                          "select users_adjust_usage(app_user_id(), storage_bytes => -10)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    with as_role(worker_url) as worker:
        claimed = {r["user_id"] for r in worker.execute("select user_id from claim_jobs('w', 10)")}
        assert claimed == {tenants["a"], tenants["b"]}  # across users, by design


def test_the_app_cannot_write_derived_or_billing_columns(app_url: str, tenants: dict[str, Any]) -> None:
    with as_role(app_url, tenants["a"]) as app:
        for column, new in [("credit_balance", "1000000"), ("tier", "'enterprise'"), ("dataset_count", "0"),
                            ("storage_used_bytes", "0"), ("oauth_id", "'x'")]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(f"update users set {column} = {new} where id = %s", [tenants["a"]])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("update datasets set last_version_number = 0")
        for statement, params in [
            ("insert into credit_transactions (user_id, type, amount) values (%s, 'adjustment', 500)", [tenants["a"]]),
            ("insert into credit_transactions (user_id, type, amount) values (%s, 'purchase', 500)", [tenants["a"]]),
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement, params)
        for statement in ("update credit_transactions set amount = 1", "delete from credit_transactions",
                          "truncate credit_transactions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)


def test_a_purchase_credits_exactly_its_package(conn: Conn, billing_url: str, tenants: dict[str, Any]) -> None:
    package = value(conn, "insert into credit_packages (name, credits, price_cents) values ('p', 50, 100)"
                          " returning id")
    pro_only = value(conn, "insert into credit_packages (name, credits, price_cents, tier_restriction)"
                           " values ('pro', 500, 100, 'pro_only') returning id")
    buy = ("insert into credit_transactions (user_id, type, amount, package_id, stripe_payment_id)"
           " values (%s, 'purchase', %s, %s, %s) returning balance_after")
    with as_role(billing_url) as billing:
        with pytest.raises(psycopg.errors.CheckViolation) as inflated:
            billing.execute(buy, [tenants["a"], 5000, package, "pi_1"])
        assert inflated.value.diag.constraint_name == "credit_transactions_purchase_matches_package"
        with pytest.raises(psycopg.errors.CheckViolation) as wrong_tier:
            billing.execute(buy, [tenants["a"], 500, pro_only, "pi_2"])
        assert wrong_tier.value.diag.constraint_name == "credit_transactions_package_for_tier"
        with pytest.raises(psycopg.errors.CheckViolation) as unpaid:
            billing.execute(buy, [tenants["a"], 50, package, None])
        assert unpaid.value.diag.constraint_name == "credit_transactions_purchase_payment"
        row = billing.execute(buy, [tenants["a"], 50, package, "pi_3"]).fetchone()
        assert row == {"balance_after": 140}  # 100 granted by the fixture - 10 charged + 50


def test_catalog_security_invariants(conn: Conn) -> None:
    with_owner = {r["table_name"] for r in conn.execute(
        "select table_name from information_schema.columns where table_schema = 'automl'"
        " and column_name = 'user_id'")}
    assert with_owner == set(TENANT_TABLES)
    unguarded = conn.execute("""
        select c.relname from pg_class c
         where c.relname = any (%s) and not (c.relrowsecurity and c.relforcerowsecurity
               and exists (select from pg_policy p where p.polrelid = c.oid))""", [[*TENANT_TABLES, "users"]])
    assert unguarded.fetchall() == []
    unpinned = conn.execute("""
        select p.proname from pg_proc p
         where p.pronamespace = 'automl'::regnamespace and p.prosecdef
           and not exists (select from unnest(p.proconfig) c where c like 'search_path=%%')""")
    assert unpinned.fetchall() == []
    public_execute = conn.execute("""
        select p.proname from pg_proc p
         where p.pronamespace = 'automl'::regnamespace
           and (p.proacl is null or exists (select from unnest(p.proacl) a where a::text like '=%%'))""")
    assert public_execute.fetchall() == []
    not_owner = conn.execute("""
        select relname as name from pg_class where relnamespace = 'automl'::regnamespace
           and relkind in ('r', 'v', 'S') and relowner <> 'automl_owner'::regrole
        union all
        select proname from pg_proc where pronamespace = 'automl'::regnamespace and proowner <> 'automl_owner'::regrole
        union all
        select typname from pg_type where typnamespace = 'automl'::regnamespace and typtype = 'e'
           and typowner <> 'automl_owner'::regrole""")
    assert not_owner.fetchall() == []
    app = conn.execute("select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles"
                       " where rolname = 'automl_app'").fetchone()
    assert app == {"rolsuper": False, "rolbypassrls": False, "rolcreaterole": False, "rolcreatedb": False}
    for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        assert value(conn, "select has_table_privilege('automl_app', 'credit_transactions', %s)", [privilege]) is False


@pytest.fixture
def crowd(conn: Conn) -> list[uuid.UUID]:
    """100 users with 1,000 jobs, datasets and ledger entries each: 100k rows per table."""
    conn.execute("insert into users (id, email) select gen_random_uuid(), 'crowd' || g || '@example.com'"
                 " from generate_series(1, 100) g")
    users = [r["id"] for r in conn.execute("select id from users where email like 'crowd%%'")]
    conn.execute("set session_replication_role = replica")  # bulk load; the chain is written consistently
    conn.execute("insert into workflow_snapshots (user_id, snapshot_data)"
                 " select id, '{\"nodes\": [], \"edges\": []}' from users where email like 'crowd%%'")
    conn.execute("insert into jobs (user_id, workflow_snapshot_id, created_at)"
                 " select s.user_id, s.id, now() - g * interval '1 minute'"
                 " from workflow_snapshots s, generate_series(1, 1000) g")
    conn.execute("insert into datasets (user_id, name) select id, 'd' || g from users, generate_series(1, 1000) g"
                 " where email like 'crowd%%'")
    conn.execute("insert into credit_transactions (id, user_id, entry_number, type, amount, balance_after)"
                 " select gen_random_uuid(), id, g, 'adjustment', 1, g from users, generate_series(1, 1000) g"
                 " where email like 'crowd%%'")
    conn.execute("update users set dataset_count = 1000, credit_balance = 1000, last_entry_number = 1000"
                 " where email like 'crowd%%'")
    conn.execute("set session_replication_role = origin")
    conn.execute("analyze")
    return users


def test_listings_stay_index_scans_under_rls(app_url: str, crowd: list[uuid.UUID]) -> None:
    me = crowd[42]
    listings: dict[str, tuple[str, dict[str, Any]]] = {
        "jobs": (q.LIST_JOBS, {"user_id": me, "before_created_at": None, "before_id": None, "page_size": 50}),
        "datasets": (q.LIST_DATASETS, {"user_id": me}),
        "credit_transactions": (q.CREDIT_HISTORY, {"user_id": me, "before_entry": None, "page_size": 50}),
    }
    with as_role(app_url, me) as app:
        for table, (sql, params) in listings.items():
            plan = "\n".join(r["QUERY PLAN"] for r in app.execute("explain " + sql, params))
            assert "Index" in plan, plan
            assert f"Seq Scan on {table}" not in plan, plan
        assert len(app.execute(q.LIST_JOBS, listings["jobs"][1]).fetchall()) == 50
