"""Soft delete and the 30-day retention purge: content and personal data go, the ledger stays."""

import json
from typing import Any

import psycopg
from psycopg.rows import DictRow

from tests.helpers import (
    assert_refused,
    give_credits,
    make_dataset,
    make_job,
    make_model,
    make_snapshot,
    make_user,
    make_version,
    make_workflow,
    one,
    value,
)

Conn = psycopg.Connection[DictRow]


def backdate(conn: Conn, table: str, row: Any, days: int) -> None:
    """Move deleted_at into the past, as time would (the stamping trigger is bypassed on purpose)."""
    conn.execute("set session_replication_role = replica")
    conn.execute(f"update {table} set deleted_at = now() - make_interval(days => %s) where id = %s", [days, row])
    conn.execute("set session_replication_role = origin")


def test_purge_removes_content_and_personal_data_but_keeps_the_ledger(conn: Conn) -> None:
    gone = make_user(conn, email="leaving@example.com", full_name="Leaving", oauth_provider="github", oauth_id="77")
    give_credits(conn, gone, 100)
    dataset = make_dataset(conn, gone)
    make_version(conn, dataset, size=5000)
    workflow = make_workflow(conn, gone)
    job = make_job(conn, gone, cost=30, snapshot_id=make_snapshot(conn, gone, workflow))
    conn.execute("update jobs set status = 'queued' where id = %s", [job])
    model = make_model(conn, gone, job, metrics={"accuracy": 0.9})
    experiment = value(conn, "insert into experiments (user_id, name) values (%s, 'e') returning id", [gone])
    conn.execute("insert into experiment_runs (experiment_id, model_id, job_id) values (%s, %s, %s)",
                 [experiment, model, job])
    tutorial = value(conn, "insert into tutorials (slug, title) values ('t', 'T') returning id")
    conn.execute("insert into user_tutorial_progress (user_id, tutorial_id) values (%s, %s)", [gone, tutorial])
    ledger_before = conn.execute("select * from credit_transactions order by user_id, entry_number").fetchall()

    stays = make_user(conn)
    old_wf, new_wf = make_workflow(conn, stays), make_workflow(conn, stays)
    kept_snapshot = make_snapshot(conn, stays, old_wf)
    conn.execute("update workflows set is_deleted = true where id in (%s, %s)", [old_wf, new_wf])
    conn.execute("update users set is_deleted = true where id = %s", [gone])

    nothing = {r["item"]: r["removed"] for r in conn.execute("select * from purge_soft_deleted()")}
    assert set(nothing.values()) == {0}  # everything was deleted just now: inside retention

    backdate(conn, "users", gone, 31)
    backdate(conn, "workflows", old_wf, 31)
    report = {r["item"]: r["removed"] for r in conn.execute("select * from purge_soft_deleted()")}
    assert report == {"experiments": 1, "models": 1, "jobs": 1, "workflows": 2, "workflow_snapshots": 1,
                      "datasets": 1, "user_tutorial_progress": 1, "users_anonymized": 1}

    assert conn.execute("select * from credit_transactions order by user_id, entry_number").fetchall() == ledger_before
    account = one(conn, "select email, full_name, oauth_provider, oauth_id, purged_at is not null as purged,"
                        " credit_balance, dataset_count, workflow_count, model_count, storage_used_bytes"
                        " from users where id = %s", [gone])
    assert account == {"email": None, "full_name": None, "oauth_provider": None, "oauth_id": None, "purged": True,
                       "credit_balance": 70, "dataset_count": 0, "workflow_count": 0, "model_count": 0,
                       "storage_used_bytes": 0}
    for table in ("datasets", "dataset_versions", "workflows", "workflow_snapshots", "jobs", "models",
                  "experiments", "experiment_runs", "user_tutorial_progress"):
        assert value(conn, f"select count(*) from {table} where user_id = %s", [gone]) == 0, table
    assert value(conn, "select count(*) from workflows where id = %s", [new_wf]) == 1  # inside retention
    assert one(conn, "select workflow_id from workflow_snapshots where id = %s", [kept_snapshot]) == {
        "workflow_id": None}
    # The e-mail is free again, and a purged account cannot come back.
    make_user(conn, email="leaving@example.com")
    assert_refused(conn, "update users set is_deleted = false where id = %s", [gone],
                   sqlstate="AM004", constraint="users_account_closed")
    assert json.dumps(report)  # the report is plain data for logs


def test_shorter_retention_and_restore_before_purge(conn: Conn) -> None:
    user = make_user(conn)
    workflow = make_workflow(conn, user)
    conn.execute("update workflows set is_deleted = true where id = %s", [workflow])
    backdate(conn, "workflows", workflow, 2)
    kept = {r["item"]: r["removed"] for r in conn.execute("select * from purge_soft_deleted('3 days')")}
    assert kept["workflows"] == 0
    conn.execute("update workflows set is_deleted = false where id = %s", [workflow])  # restored in time
    removed = {r["item"]: r["removed"] for r in conn.execute("select * from purge_soft_deleted('1 day')")}
    assert removed["workflows"] == 0
    assert value(conn, "select workflow_count from users where id = %s", [user]) == 1
