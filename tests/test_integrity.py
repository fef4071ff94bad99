"""check_integrity() is silent on a healthy database and names every kind of drift."""

from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from tests.helpers import (
    give_credits,
    make_dataset,
    make_job,
    make_model,
    make_user,
    make_version,
    make_workflow,
)

Conn = psycopg.Connection[DictRow]


@pytest.fixture
def healthy(conn: Conn) -> dict[str, Any]:
    a, b = make_user(conn), make_user(conn)
    give_credits(conn, a, 100)
    dataset = make_dataset(conn, a)
    version = make_version(conn, dataset, size=100)
    workflow = make_workflow(conn, a)
    job = make_job(conn, a, cost=10)
    conn.execute("update jobs set status = 'queued' where id = %s", [job])
    model = make_model(conn, a, job)
    conn.execute("insert into job_nodes (job_id, node_id) values (%s, 'n')", [job])
    assert conn.execute("select * from check_integrity()").fetchall() == []
    conn.execute("set session_replication_role = replica")  # bypass triggers (and FK triggers): drift
    return {"a": a, "b": b, "dataset": dataset, "version": version["id"], "workflow": workflow, "job": job,
           "model": model}


DRIFT = [
    ("update users set credit_balance = 5 where id = %(a)s", "users.credit_balance = ledger"),
    ("insert into credit_transactions (id, user_id, entry_number, type, amount, balance_after)"
     " values (gen_random_uuid(), %(a)s, 3, 'adjustment', 5, 500)", "credit_transactions chain"),
    ("update users set dataset_count = 9 where id = %(a)s", "users counters and storage"),
    ("update users set workflow_count = 0 where id = %(a)s", "users counters and storage"),
    ("update users set model_count = 0 where id = %(a)s", "users counters and storage"),
    ("update users set storage_used_bytes = 1 where id = %(a)s", "users counters and storage"),
    ("update dataset_versions set version_number = 40 where id = %(version)s", "dataset_versions numbering"),
    ("update jobs set status = 'completed' where id = %(job)s", "jobs timestamps match status"),
    ("update jobs set status = 'cancelled' where id = %(job)s", "jobs credits follow policy"),
    ("update jobs set credit_cost = 3 where id = %(job)s", "jobs credits follow policy"),
    ("update job_nodes set status = 'success' where job_id = %(job)s", "job_nodes timestamps match status"),
    ("update models set user_id = %(b)s where id = %(model)s", "owner links"),
    ("delete from jobs where id = %(job)s", "credit_transactions job rules"),
]


@pytest.mark.drift
@pytest.mark.parametrize(("statement", "invariant"), DRIFT, ids=[d[1] + f"-{i}" for i, d in enumerate(DRIFT)])
def test_drift_behind_the_triggers_back_is_reported(
        conn: Conn, healthy: dict[str, Any], statement: str, invariant: str) -> None:
    conn.execute(statement, healthy)
    conn.execute("set session_replication_role = origin")
    found = {r["invariant"] for r in conn.execute("select * from check_integrity()")}
    assert invariant in found
