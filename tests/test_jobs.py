"""Jobs as a state machine and a queue; their credits; their nodes; the snapshots they run."""

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from automl_db import queries as q
from tests.helpers import GRAPH as HELPER_GRAPH
from tests.helpers import as_role, assert_refused, give_credits, make_job, make_snapshot, make_user, one, value

Conn = psycopg.Connection[DictRow]

LEGAL = {("pending", "queued"), ("pending", "cancelled"), ("queued", "running"), ("queued", "cancelled"),
         ("running", "completed"), ("running", "failed"), ("running", "cancelled"), ("running", "queued")}
STATUSES = ["pending", "queued", "running", "completed", "failed", "cancelled"]
PATH = {"pending": [], "queued": ["queued"], "running": ["queued", "running"],
        "completed": ["queued", "running", "completed"], "failed": ["queued", "running", "failed"],
        "cancelled": ["cancelled"]}


def move(conn: Conn, job: Any, *statuses: str) -> None:
    for status in statuses:
        conn.execute("update jobs set status = %s where id = %s", [status, job])


def balance(conn: Conn, user: Any) -> int:
    result = value(conn, "select credit_balance from users where id = %s", [user])
    assert isinstance(result, int)
    return result


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in STATUSES for t in STATUSES if s != t])
def test_status_machine(conn: Conn, source: str, target: str) -> None:
    user = make_user(conn)
    job = make_job(conn, user)
    move(conn, job, *PATH[source])
    if (source, target) in LEGAL:
        move(conn, job, target)
        assert value(conn, "select status::text from jobs where id = %s", [job]) == target
    else:
        assert_refused(conn, "update jobs set status = %s where id = %s", [target, job],
                       sqlstate="AM003", constraint="jobs_status_transition")


@pytest.mark.parametrize("source", STATUSES)
def test_no_status_is_refused_as_a_null(conn: Conn, source: str) -> None:
    user = make_user(conn)
    job = make_job(conn, user)
    move(conn, job, *PATH[source])
    assert_refused(conn, "update jobs set status = null where id = %s", [job], sqlstate="23502")


@pytest.mark.parametrize("status", ["running", "completed", "failed", "cancelled"])
def test_a_job_is_born_pending_or_queued(conn: Conn, status: str) -> None:
    user = make_user(conn)
    snapshot = make_snapshot(conn, user)
    assert_refused(conn, "insert into jobs (user_id, workflow_snapshot_id, status) values (%s, %s, %s)",
                   [user, snapshot, status], sqlstate="AM003", constraint="jobs_status_transition")


def test_the_database_stamps_lifecycle_times(conn: Conn) -> None:
    user = make_user(conn)
    job = make_job(conn, user)
    conn.execute("update jobs set started_at = '2000-01-01', completed_at = '2000-01-02' where id = %s", [job])
    assert one(conn, "select queued_at, started_at, completed_at from jobs where id = %s", [job]) == {
        "queued_at": None, "started_at": None, "completed_at": None}
    move(conn, job, "queued")
    assert value(conn, "select queued_at is not null from jobs where id = %s", [job])
    move(conn, job, "running")
    row = one(conn, "select started_at is not null as s, completed_at is null as c from jobs where id = %s", [job])
    assert row == {"s": True, "c": True}
    move(conn, job, "completed")
    row = one(conn, "select completed_at >= started_at as ordered from jobs where id = %s", [job])
    assert row == {"ordered": True}


def test_credit_policy_charge_on_queue_refund_on_failure(conn: Conn) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    completed, failed, cancelled_pending, cancelled_running = (make_job(conn, user, cost=10) for _ in range(4))
    move(conn, completed, "queued", "running", "completed")
    move(conn, failed, "queued", "running", "failed")
    move(conn, cancelled_pending, "cancelled")
    move(conn, cancelled_running, "queued", "running", "cancelled")
    assert balance(conn, user) == 90  # only the completed job keeps its charge
    entries = conn.execute("select type::text, amount, job_id from credit_transactions"
                           " where job_id is not null order by entry_number").fetchall()
    assert [(e["type"], e["amount"]) for e in entries] == [
        ("consumption", -10), ("consumption", -10), ("refund", 10), ("consumption", -10), ("refund", 10)]
    assert {e["job_id"] for e in entries} == {completed, failed, cancelled_running}


def test_insufficient_credits_keep_a_job_out_of_the_queue(conn: Conn) -> None:
    user = make_user(conn)
    give_credits(conn, user, 5)
    job = make_job(conn, user, cost=10)
    assert_refused(conn, "update jobs set status = 'queued' where id = %s", [job],
                   sqlstate="AM001", constraint="credit_transactions_balance_nonnegative")
    assert value(conn, "select status::text from jobs where id = %s", [job]) == "pending"


def test_price_is_fixed_once_queued(conn: Conn) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    job = make_job(conn, user, cost=10)
    conn.execute("update jobs set credit_cost = 12 where id = %s", [job])  # still pending: fine
    move(conn, job, "queued")
    assert_refused(conn, "update jobs set credit_cost = 1 where id = %s", [job],
                   sqlstate="AM004", constraint="jobs_terms_immutable")


def test_claim_takes_highest_priority_then_oldest(conn: Conn) -> None:
    user = make_user(conn)
    low = make_job(conn, user, status="queued")
    high_old = value(conn, "insert into jobs (user_id, workflow_snapshot_id, status, priority)"
                           " select user_id, workflow_snapshot_id, 'queued', 5 from jobs where id = %s returning id",
                     [low])
    high_new = value(conn, "insert into jobs (user_id, workflow_snapshot_id, status, priority)"
                           " select user_id, workflow_snapshot_id, 'queued', 5 from jobs where id = %s returning id",
                     [low])
    make_job(conn, user, status="pending")  # never claimed
    claimed = [one(conn, "select id, status::text, worker_id, attempt from claim_jobs('w1')") for _ in range(3)]
    assert [c["id"] for c in claimed] == [high_old, high_new, low]
    assert {(c["status"], c["worker_id"], c["attempt"]) for c in claimed} == {("running", "w1", 1)}
    assert conn.execute("select * from claim_jobs('w1')").fetchall() == []


def test_the_typed_claims_take_jobs_in_the_order_of_claim_jobs(conn: Conn) -> None:
    """queries/jobs.sql runs claim_jobs()'s statement directly: the same jobs, in the same order."""
    user = make_user(conn)
    snapshot = make_snapshot(conn, user)
    jobs = [value(conn, "insert into jobs (user_id, workflow_snapshot_id, status, priority)"
                        " values (%s, %s, 'queued', %s) returning id", [user, snapshot, priority])
            for priority in (0, 7, -3, 7, 0, 12, -3, 0)]
    order = [r["id"] for r in conn.execute("select id from jobs where id = any (%s)"
                                            " order by priority desc, queued_at, id", [jobs])]
    claimed = [one(conn, "select id from claim_jobs('w')")["id"], *(j.id for j in q.claim_jobs(
        conn, worker_id="w", how_many=3))]
    claimed += [job.id for job in (q.claim_job(conn, worker_id="w") for _ in range(4)) if job is not None]
    assert claimed[:1] + sorted(claimed[1:4], key=order.index) + claimed[4:] == order
    assert q.claim_job(conn, worker_id="w") is None
    assert {r["status"] for r in conn.execute("select status::text from jobs where id = any (%s)", [jobs])} == {
        "running"}


def test_a_heartbeat_writes_no_index_entry(conn: Conn) -> None:
    """jobs_running_idx is keyed by worker: a heartbeat changes no indexed column, so it is a HOT update."""
    user = make_user(conn)
    job = make_job(conn, user, status="queued")
    conn.execute("select claim_jobs('w')")
    conn.commit()
    before = value(conn, "select n_tup_hot_upd from pg_stat_user_tables where relname = 'jobs'")
    for _ in range(5):
        assert value(conn, "select heartbeat_job(%s, 'w')", [job]) is True
        conn.commit()
    conn.execute("select pg_stat_force_next_flush()")
    assert value(conn, "select n_tup_hot_upd from pg_stat_user_tables where relname = 'jobs'") - before == 5


def test_claim_uses_the_partial_index(conn: Conn) -> None:
    plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
        "explain select id from jobs where status = 'queued' order by priority desc, queued_at, id limit 1"))
    assert "jobs_claimable_idx" in plan


def test_heartbeat_and_rescue(conn: Conn) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    retry = make_job(conn, user, status="queued", cost=10, max_attempts=1)
    fresh = make_job(conn, user, status="queued")
    stalled = make_job(conn, user, status="queued")
    worker_of = {row["id"]: row["worker_id"] for row in conn.execute("select * from claim_jobs('w', 3)")}
    assert set(worker_of) == {retry, fresh, stalled}
    assert value(conn, "select heartbeat_job(%s, 'w')", [fresh]) is True
    assert value(conn, "select heartbeat_job(%s, 'someone-else')", [fresh]) is None
    conn.execute("update jobs set heartbeat_at = now() - interval '1 hour' where id in (%s, %s)", [retry, stalled])
    actions = {r["job_id"]: r["action"] for r in conn.execute("select * from rescue_stalled_jobs('5 minutes')")}
    assert actions == {stalled: "requeued", retry: "failed"}
    assert one(conn, "select status::text, worker_id, attempt from jobs where id = %s", [stalled]) == {
        "status": "queued", "worker_id": None, "attempt": 1}
    assert value(conn, "select heartbeat_job(%s, 'w')", [stalled]) is None  # the old worker must stop
    assert value(conn, "select error_message from jobs where id = %s", [retry]).startswith("worker stopped")
    assert balance(conn, user) == 100  # the failed job was refunded
    assert one(conn, "select id from claim_jobs('w2')")["id"] == stalled
    assert value(conn, "select attempt from jobs where id = %s", [stalled]) == 2


def test_requeue_is_refused_once_attempts_are_spent(conn: Conn) -> None:
    user = make_user(conn)
    job = make_job(conn, user, status="queued", max_attempts=1)
    conn.execute("select * from claim_jobs('w')")
    assert_refused(conn, "update jobs set status = 'queued' where id = %s", [job],
                   sqlstate="AM003", constraint="jobs_status_transition")


GRAPH = {"nodes": [{"id": n} for n in ["load", "clean", "train_a", "train_b", "report", "side"]],
         "edges": [{"source": "load", "target": "clean"}, {"source": "clean", "target": "train_a"},
                   {"source": "clean", "target": "train_b"}, {"source": "train_a", "target": "report"},
                   {"source": "train_b", "target": "report"}]}


@pytest.fixture
def node_job(conn: Conn) -> Any:
    user = make_user(conn)
    snapshot = value(conn, "insert into workflow_snapshots (user_id, snapshot_data) values (%s, %s) returning id",
                     [user, json.dumps(GRAPH)])
    job = make_job(conn, user, snapshot_id=snapshot)
    for node in GRAPH["nodes"]:
        conn.execute("insert into job_nodes (job_id, node_id) values (%s, %s)", [job, node["id"]])
    return job


def node_states(conn: Conn, job: Any) -> dict[str, str]:
    return {r["node_id"]: r["status"] for r in conn.execute(
        "select node_id, status::text from job_nodes where job_id = %s", [job])}


def set_node(conn: Conn, job: Any, node: str, status: str) -> None:
    conn.execute("update job_nodes set status = %s where job_id = %s and node_id = %s", [status, job, node])


def test_a_failed_node_skips_everything_downstream(conn: Conn, node_job: Any) -> None:
    for node, status in [("load", "running"), ("load", "success"), ("clean", "running"), ("clean", "success"),
                         ("train_a", "running"), ("train_a", "failed")]:
        set_node(conn, node_job, node, status)
    assert node_states(conn, node_job) == {"load": "success", "clean": "success", "train_a": "failed",
                                           "train_b": "pending", "report": "skipped", "side": "pending"}
    set_node(conn, node_job, "train_b", "running")  # a sibling branch still runs
    set_node(conn, node_job, "train_b", "failed")
    assert node_states(conn, node_job)["report"] == "skipped"
    stamps = one(conn, "select bool_and(completed_at is not null) filter (where status in ('success', 'failed',"
                       " 'skipped')) as ended, bool_and(started_at is null) filter (where status = 'skipped')"
                       " as never_started from job_nodes where job_id = %s", [node_job])
    assert stamps == {"ended": True, "never_started": True}


@pytest.mark.parametrize(("path", "target"), [
    ([], "success"), ([], "failed"), (["running"], "pending"), (["running", "success"], "failed"),
    (["skipped"], "running"), (["running", "failed"], "running")])
def test_node_status_machine_refusals(conn: Conn, node_job: Any, path: list[str], target: str) -> None:
    for status in path:
        set_node(conn, node_job, "side", status)
    assert_refused(conn, "update job_nodes set status = %s where job_id = %s and node_id = 'side'",
                   [target, node_job], sqlstate="AM003", constraint="job_nodes_status_transition")


def test_snapshots_are_immutable(conn: Conn) -> None:
    user, other = make_user(conn), make_user(conn)
    snapshot = make_snapshot(conn, user)
    for statement, params in [
        ("update workflow_snapshots set snapshot_data = '{\"nodes\": [], \"edges\": []}' where id = %s", [snapshot]),
        ("update workflow_snapshots set user_id = %s where id = %s", [other, snapshot]),
        ("update workflow_snapshots set created_at = now() - interval '1 day' where id = %s", [snapshot]),
    ]:
        assert_refused(conn, statement, params, sqlstate="AM004", constraint="workflow_snapshots_immutable")
    make_job(conn, user, snapshot_id=snapshot)
    assert_refused(conn, "delete from workflow_snapshots where id = %s", [snapshot],
                   sqlstate="23503", constraint="jobs_snapshot_fkey")
    unused = make_snapshot(conn, user)
    conn.execute("delete from workflow_snapshots where id = %s", [unused])  # no job: may go


# ---- Who moves a job (review of 0006, fixed by 0007) ----

def _ledger(conn: Conn, user: Any) -> list[tuple[str, int]]:
    return [(r["type"], r["amount"]) for r in conn.execute(
        "select type::text, amount from credit_transactions where user_id = %s order by entry_number", [user])]


def _post_charge(app_url: str, user: Any, job: Any) -> None:
    """The seed-style service charges its pending job itself (accepted since 0006)."""
    with as_role(app_url, user) as app:
        app.execute("insert into credit_transactions (user_id, type, amount, job_id)"
                    " values (%s, 'consumption', -10, %s)", [user, job])


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
@pytest.mark.parametrize("change", ["set status = 'cancelled'", "set credit_cost = 1"])
def test_a_snapshot_older_than_a_pending_charge_cannot_cancel_or_reprice_the_job(
        conn: Conn, app_url: str, db_url: str, isolation: str, change: str) -> None:
    """The charge writes the job row, so a transaction whose snapshot predates it (and which reads no
    ledger entry through that snapshot) fails instead of cancelling unrefunded or repricing."""
    user = make_user(conn)
    give_credits(conn, user, 100)
    job = make_job(conn, user, cost=10)
    stale = psycopg.connect(db_url)  # an owner/DBA session: row-level security does not filter it
    stale.execute(f"set transaction isolation level {isolation}")
    stale.execute("select 1")  # the snapshot is taken now, before the charge
    _post_charge(app_url, user, job)
    with pytest.raises(psycopg.errors.SerializationFailure):
        stale.execute(f"update jobs {change} where id = %s", [job])
    stale.close()
    assert one(conn, "select status::text, credit_cost from jobs where id = %s", [job]) == \
        {"status": "pending", "credit_cost": 10}
    assert _ledger(conn, user) == [("adjustment", 100), ("consumption", -10)]


def test_a_worker_touches_only_queued_and_running_jobs_of_other_users(conn: Conn, app_url: str,
                                                                     worker_url: str) -> None:
    """A pending job's price may still change: only its owner may reprice, queue or cancel it."""
    user = make_user(conn)
    give_credits(conn, user, 100)
    job = make_job(conn, user, cost=10)
    with as_role(worker_url) as worker:
        for change in ("set credit_cost = 95", "set status = 'queued'", "set status = 'cancelled'"):
            assert worker.execute(f"update jobs {change} where id = %s", [job]).rowcount == 0
    assert one(conn, "select status::text, credit_cost from jobs where id = %s", [job]) == \
        {"status": "pending", "credit_cost": 10}
    assert _ledger(conn, user) == [("adjustment", 100)]
    with as_role(worker_url, user) as worker:  # acting for the owner, it may (as the owner may)
        assert worker.execute("update jobs set status = 'queued' where id = %s", [job]).rowcount == 1
    assert _ledger(conn, user) == [("adjustment", 100), ("consumption", -10)]


def test_a_concurrent_retry_of_a_submission_returns_the_first_job(conn: Conn, app_url: str) -> None:
    """The retry waits for the first submission to commit, then returns that job: not None, not a
    second job, one set of nodes, one charge."""
    user = make_user(conn)
    give_credits(conn, user, 100)
    snapshot = make_snapshot(conn, user)
    first, retry = psycopg.connect(app_url), psycopg.connect(app_url)
    for c in (first, retry):
        c.execute("select set_config('automl.user_id', %s, false)", [str(user)])
        c.commit()
    got: dict[str, Any] = {}
    submitted = threading.Event()

    def submit_then_hold() -> None:
        got["first"] = q.submit_job(first, user_id=user, workflow_snapshot_id=snapshot, credit_cost=10,
                                    idempotency_key="k")
        submitted.set()
        time.sleep(0.5)  # the retry is waiting on the unique index meanwhile
        first.commit()

    def submit_again() -> None:
        submitted.wait()
        got["retry"] = q.submit_job(retry, user_id=user, workflow_snapshot_id=snapshot, credit_cost=10,
                                    idempotency_key="k")
        retry.commit()

    threads = [threading.Thread(target=submit_then_hold), threading.Thread(target=submit_again)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.close()
    retry.close()
    assert got["first"] is not None
    assert got["retry"] is not None
    assert got["retry"] == got["first"]
    assert value(conn, "select count(*) from jobs where user_id = %s", [user]) == 1
    nodes = value(conn, "select count(*) from job_nodes where job_id = %s", [got["first"].id])
    assert nodes == len(HELPER_GRAPH["nodes"])
    assert _ledger(conn, user) == [("adjustment", 100), ("consumption", -10)]
