"""Builders for test rows and the assertion that a refused write changed nothing."""

import json
import subprocess
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

Conn = psycopg.Connection[DictRow]

GRAPH: dict[str, Any] = {
    "nodes": [{"id": "data", "type": "dataset"}, {"id": "prep", "type": "preprocess"},
              {"id": "train", "type": "model"}, {"id": "eval", "type": "evaluate"}],
    "edges": [{"source": "data", "target": "prep"}, {"source": "prep", "target": "train"},
              {"source": "train", "target": "eval"}],
}


def dead_pid() -> int:
    """The id of a process that has just ended, and so, for now, names no process (scratch names)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def one(conn: Conn, query: str, params: Any = None) -> DictRow:
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row


def value(conn: Conn, query: str, params: Any = None) -> Any:
    return next(iter(one(conn, query, params).values()))


def new_id(conn: Conn, query: str, params: Any = None) -> uuid.UUID:
    """Run an INSERT ... RETURNING id and return that id."""
    returned = value(conn, query, params)
    assert isinstance(returned, uuid.UUID)
    return returned


def make_user(conn: Conn, email: str | None = None, **columns: Any) -> uuid.UUID:
    columns = {"email": email or f"u{uuid.uuid4().hex[:12]}@example.com", **columns}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return new_id(conn, f"insert into users ({names}) values ({marks}) returning id",
                 list(columns.values()))


def give_credits(conn: Conn, user_id: uuid.UUID, amount: int) -> None:
    conn.execute("insert into credit_transactions (user_id, type, amount, description)"
                 " values (%s, 'adjustment', %s, 'test grant')", [user_id, amount])


def make_dataset(conn: Conn, user_id: uuid.UUID, name: str = "iris") -> uuid.UUID:
    return new_id(conn, "insert into datasets (user_id, name) values (%s, %s) returning id", [user_id, name])


def make_version(conn: Conn, dataset_id: uuid.UUID, size: int = 1000, **columns: Any) -> DictRow:
    columns = {"dataset_id": dataset_id, "original_size_bytes": size, **columns}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return one(conn, f"insert into dataset_versions ({names}) values ({marks}) returning *",
               list(columns.values()))


def make_workflow(conn: Conn, user_id: uuid.UUID, graph: dict[str, Any] | None = None) -> uuid.UUID:
    return new_id(conn, "insert into workflows (user_id, name, definition) values (%s, 'wf', %s) returning id",
                 [user_id, json.dumps(graph or GRAPH)])


def make_snapshot(conn: Conn, user_id: uuid.UUID, workflow_id: uuid.UUID | None = None) -> uuid.UUID:
    workflow_id = workflow_id or make_workflow(conn, user_id)
    return new_id(conn, "insert into workflow_snapshots (workflow_id, user_id, snapshot_data)"
                       " select id, user_id, definition from workflows where id = %s returning id", [workflow_id])


def make_job(conn: Conn, user_id: uuid.UUID, status: str = "pending", cost: int = 0,
             snapshot_id: uuid.UUID | None = None, max_attempts: int = 3) -> uuid.UUID:
    snapshot_id = snapshot_id or make_snapshot(conn, user_id)
    return new_id(conn, "insert into jobs (user_id, workflow_snapshot_id, status, credit_cost, max_attempts)"
                       " values (%s, %s, %s, %s, %s) returning id", [user_id, snapshot_id, status, cost, max_attempts])


def make_model(conn: Conn, user_id: uuid.UUID, job_id: uuid.UUID | None = None,
               metrics: dict[str, float] | None = None) -> uuid.UUID:
    job_id = job_id or make_job(conn, user_id)
    return new_id(conn, "insert into models (user_id, job_id, name, metrics) values (%s, %s, 'm', %s) returning id",
                 [user_id, job_id, json.dumps(metrics or {})])


def table_contents(conn: Conn) -> dict[str, list[str]]:
    """Every row of every schema table, for 'nothing changed' comparisons."""
    tables = [r["relname"] for r in conn.execute(
        "select relname from pg_class where relnamespace = 'automl'::regnamespace and relkind = 'r'"
        " order by relname")]
    return {t: sorted(repr(row) for row in conn.execute(f"select * from {t}")) for t in tables}


def assert_refused(conn: Conn, query: str, params: Any = None, *, sqlstate: str,
                   constraint: str | None = None) -> psycopg.Error:
    """The statement fails with this SQLSTATE (and constraint name) and leaves every table as it was."""
    before = table_contents(conn)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query, params)
    error = caught.value
    assert error.sqlstate == sqlstate, f"{error.sqlstate} {error.diag.message_primary}"
    if constraint is not None:
        assert error.diag.constraint_name == constraint, f"{error.diag.constraint_name}: {error}"
    assert table_contents(conn) == before
    return error


def as_role(url: str, user: Any = None) -> Conn:
    """An autocommit connection that acts for `user` in every statement (None: for nobody)."""
    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    if user is not None:
        conn.execute("select set_config('automl.user_id', %s, false)", [str(user)])
    return conn
