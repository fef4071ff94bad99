"""Counters, storage, tier quotas and soft delete, kept by the database."""

from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from tests.helpers import (
    assert_refused,
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
GIB = 1024**3


def usage(conn: Conn, user: Any) -> DictRow:
    return one(conn, "select dataset_count, workflow_count, model_count, storage_used_bytes"
                     " from users where id = %s", [user])


def test_counters_follow_inserts_deletes_soft_deletes_and_restores(conn: Conn) -> None:
    user = make_user(conn)
    datasets = [make_dataset(conn, user, f"d{i}") for i in range(3)]
    workflows = [make_workflow(conn, user) for _ in range(2)]
    job = make_job(conn, user, snapshot_id=make_snapshot(conn, user, workflows[0]))
    models = [make_model(conn, user, job) for _ in range(2)]
    assert usage(conn, user) == {"dataset_count": 3, "workflow_count": 2, "model_count": 2, "storage_used_bytes": 0}
    conn.execute("delete from datasets where id = %s", [datasets[0]])
    conn.execute("update workflows set is_deleted = true where id = %s", [workflows[0]])
    conn.execute("update workflows set is_deleted = true where id = %s", [workflows[0]])  # idempotent
    conn.execute("delete from models where id = %s", [models[0]])
    assert usage(conn, user)["dataset_count"] == 2
    assert usage(conn, user)["workflow_count"] == 1
    assert usage(conn, user)["model_count"] == 1
    conn.execute("delete from workflows where id = %s", [workflows[0]])  # deleting a soft-deleted one: no change
    assert usage(conn, user)["workflow_count"] == 1
    conn.execute("update workflows set is_deleted = true where id = %s", [workflows[1]])
    conn.execute("update workflows set is_deleted = false where id = %s", [workflows[1]])
    assert usage(conn, user)["workflow_count"] == 1


def test_soft_delete_is_stamped_by_the_database(conn: Conn) -> None:
    user = make_user(conn)
    workflow = make_workflow(conn, user)
    conn.execute("update workflows set is_deleted = true, deleted_at = '2000-01-01' where id = %s", [workflow])
    row = one(conn, "select deleted_at > now() - interval '1 minute' as recent from workflows where id = %s",
              [workflow])
    assert row["recent"] is True
    conn.execute("update workflows set is_deleted = false where id = %s", [workflow])
    assert value(conn, "select deleted_at from workflows where id = %s", [workflow]) is None
    conn.execute("update users set is_deleted = true where id = %s", [user])
    assert value(conn, "select deleted_at is not null from users where id = %s", [user]) is True
    conn.execute("update users set is_deleted = false where id = %s", [user])
    assert value(conn, "select deleted_at from users where id = %s", [user]) is None


def test_storage_follows_version_sizes_and_cascades(conn: Conn) -> None:
    user = make_user(conn)
    first, second = make_dataset(conn, user, "a"), make_dataset(conn, user, "b")
    v1 = make_version(conn, first, size=1000)
    make_version(conn, first, size=500)
    make_version(conn, second, size=250)
    assert usage(conn, user)["storage_used_bytes"] == 1750
    conn.execute("update dataset_versions set status = 'processing' where id = %s", [v1["id"]])
    conn.execute("update dataset_versions set status = 'completed', s3_path = 's3://x', parquet_size_bytes = 400,"
                 " row_count = 10, column_count = 2 where id = %s", [v1["id"]])
    assert usage(conn, user)["storage_used_bytes"] == 2150
    conn.execute("update dataset_versions set original_size_bytes = 100 where id = %s", [v1["id"]])
    assert usage(conn, user)["storage_used_bytes"] == 1250
    conn.execute("delete from datasets where id = %s", [first])
    assert usage(conn, user) == {"dataset_count": 1, "workflow_count": 0, "model_count": 0,
                                 "storage_used_bytes": 250}


def test_storage_quota_refuses_the_write_that_crosses_it(conn: Conn) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)
    make_version(conn, dataset, size=GIB - 10)
    assert_refused(conn, "insert into dataset_versions (dataset_id, original_size_bytes) values (%s, 11)",
                   [dataset], sqlstate="AM002", constraint="users_storage_within_tier")
    version = make_version(conn, dataset, size=10)  # exactly at the limit is allowed
    assert_refused(conn, "update dataset_versions set parquet_size_bytes = 1 where id = %s", [version["id"]],
                   sqlstate="AM002", constraint="users_storage_within_tier")
    conn.execute("update users set tier = 'pro' where id = %s", [user])
    make_version(conn, dataset, size=GIB)
    assert usage(conn, user)["storage_used_bytes"] == 2 * GIB


@pytest.mark.parametrize(("limit_column", "constraint"), [
    ("max_datasets", "users_datasets_within_tier"), ("max_workflows", "users_workflows_within_tier"),
    ("max_models", "users_models_within_tier")])
def test_count_quotas(conn: Conn, limit_column: str, constraint: str) -> None:
    user = make_user(conn)
    job = make_job(conn, user)  # brings a workflow along
    counted = {"max_datasets": "dataset_count", "max_workflows": "workflow_count", "max_models": "model_count"}
    allowed = usage(conn, user)[counted[limit_column]] + 2
    conn.execute(f"update tier_limits set {limit_column} = %s where tier = 'free'", [allowed])
    create = {
        "max_datasets": "insert into datasets (user_id, name) values (%(u)s, 'd')",
        "max_workflows": "insert into workflows (user_id, name) values (%(u)s, 'w')",
        "max_models": "insert into models (user_id, job_id, name) values (%(u)s, %(j)s, 'm')",
    }[limit_column]
    conn.execute(create, {"u": user, "j": job})
    conn.execute(create, {"u": user, "j": job})
    assert_refused(conn, create, {"u": user, "j": job}, sqlstate="AM002", constraint=constraint)


def test_restoring_a_workflow_respects_the_quota(conn: Conn) -> None:
    conn.execute("update tier_limits set max_workflows = 1 where tier = 'free'")
    user = make_user(conn)
    first = make_workflow(conn, user)
    conn.execute("update workflows set is_deleted = true where id = %s", [first])
    make_workflow(conn, user)
    assert_refused(conn, "update workflows set is_deleted = false where id = %s", [first],
                   sqlstate="AM002", constraint="users_workflows_within_tier")


def test_rows_never_change_owner(conn: Conn) -> None:
    a, b = make_user(conn), make_user(conn)
    dataset = make_dataset(conn, a)
    workflow = make_workflow(conn, a)
    assert_refused(conn, "update datasets set user_id = %s where id = %s", [b, dataset],
                   sqlstate="AM004", constraint="datasets_owner_immutable")
    assert_refused(conn, "update workflows set user_id = %s where id = %s", [b, workflow],
                   sqlstate="AM004", constraint="workflows_owner_immutable")
