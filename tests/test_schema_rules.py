"""Every table accepts a minimal row and refuses each malformed one, changing nothing."""

import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from tests.helpers import (
    GRAPH,
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


@pytest.fixture
def world(conn: Conn) -> dict[str, Any]:
    """Two tenants, a and b, each with one of everything."""
    ids: dict[str, Any] = {}
    for who in ("a", "b"):
        user = make_user(conn, email=f"{who}@example.com")
        dataset = make_dataset(conn, user)
        version = make_version(conn, dataset)["id"]
        workflow = make_workflow(conn, user)
        snapshot = make_snapshot(conn, user, workflow)
        job = make_job(conn, user, snapshot_id=snapshot)
        model = make_model(conn, user, job)
        experiment = value(conn, "insert into experiments (user_id, name) values (%s, 'exp') returning id", [user])
        ids |= {f"{who}_user": user, f"{who}_dataset": dataset, f"{who}_version": version,
                f"{who}_workflow": workflow, f"{who}_snapshot": snapshot, f"{who}_job": job,
                f"{who}_model": model, f"{who}_experiment": experiment}
    ids["tutorial"] = value(conn, "insert into tutorials (slug, title) values ('t-one', 'T') returning id")
    return ids


def test_minimal_inserts_naming_only_essential_columns(conn: Conn) -> None:
    user = value(conn, "insert into users (email) values ('min@example.com') returning id")
    assert one(conn, "select tier, credit_balance, is_deleted, email_verified from users where id = %s", [user]) == {
        "tier": "free", "credit_balance": 0, "is_deleted": False, "email_verified": False}
    value(conn, "insert into users (full_name, email) values ('Ada', 'ada@example.com') returning id")
    dataset = value(conn, "insert into datasets (user_id, name) values (%s, 'd') returning id", [user])
    version = one(conn, "insert into dataset_versions (dataset_id) values (%s) returning *", [dataset])
    assert (version["version_number"], version["status"], version["user_id"]) == (1, "pending", user)
    value(conn, "insert into dataset_profiles (dataset_version_id) values (%s) returning id", [version["id"]])
    value(conn, "insert into ingestion_jobs (dataset_version_id) values (%s) returning id", [version["id"]])
    workflow = value(conn, "insert into workflows (user_id, name) values (%s, 'w') returning id", [user])
    snapshot = value(conn, "insert into workflow_snapshots (user_id, snapshot_data)"
                           " values (%s, '{\"nodes\": [], \"edges\": []}') returning id", [user])
    job = value(conn, "insert into jobs (user_id, workflow_snapshot_id) values (%s, %s) returning id",
                [user, snapshot])
    value(conn, "insert into job_nodes (job_id, node_id) values (%s, 'n1') returning id", [job])
    model = value(conn, "insert into models (user_id, job_id, name) values (%s, %s, 'm') returning id", [user, job])
    experiment = value(conn, "insert into experiments (user_id, name) values (%s, 'e') returning id", [user])
    value(conn, "insert into experiment_runs (experiment_id, model_id) values (%s, %s) returning id",
          [experiment, model])
    value(conn, "insert into credit_packages (name, credits, price_cents) values ('p', 10, 100) returning id")
    tutorial = value(conn, "insert into tutorials (slug, title) values ('intro', 'Intro') returning id")
    value(conn, "insert into user_tutorial_progress (user_id, tutorial_id) values (%s, %s) returning id",
          [user, tutorial])
    assert workflow is not None
    counts = one(conn, "select dataset_count, workflow_count, model_count from users where id = %s", [user])
    assert counts == {"dataset_count": 1, "workflow_count": 1, "model_count": 1}


BAD_GRAPHS = [
    {"nodes": []},                                        # edges missing: a naive CHECK passes by NULL
    {"edges": []},
    {"nodes": {}, "edges": []},
    {"nodes": [{"type": "model"}], "edges": []},          # node without id
    {"nodes": [{"id": "a"}, {"id": "a"}], "edges": []},   # duplicate ids
    {"nodes": [{"id": "a"}], "edges": [{"source": "a", "target": "zz"}]},  # dangling edge
    {"nodes": [{"id": "a"}], "edges": [{"source": "a"}]},
    ["nodes", "edges"],
]


@pytest.mark.parametrize("graph", BAD_GRAPHS, ids=[f"graph{i}" for i in range(len(BAD_GRAPHS))])
def test_workflow_and_snapshot_graph_shape(conn: Conn, world: dict[str, Any], graph: Any) -> None:
    assert_refused(conn, "insert into workflows (user_id, name, definition) values (%s, 'w', %s)",
                   [world["a_user"], json.dumps(graph)], sqlstate="23514", constraint="workflows_definition_shape")
    assert_refused(conn, "update workflows set definition = %s where id = %s",
                   [json.dumps(graph), world["a_workflow"]], sqlstate="23514",
                   constraint="workflows_definition_shape")
    assert_refused(conn, "insert into workflow_snapshots (user_id, snapshot_data) values (%s, %s)",
                   [world["a_user"], json.dumps(graph)], sqlstate="23514",
                   constraint="workflow_snapshots_data_shape")


# (statement, sqlstate, constraint). %(x)s placeholders name rows of the `world` fixture.
BAD_WRITES: list[tuple[str, str, str | None]] = [
    # users
    ("insert into users (email) values ('A@Example.COM')", "23505", "users_email_lower_key"),
    ("insert into users (email) values ('not-an-address')", "23514", "users_email_format"),
    ("insert into users (email) values ('two@@example.com')", "23514", "users_email_format"),
    ("insert into users (email) values (null)", "23514", "users_email_required"),
    ("insert into users (email, full_name) values ('x@example.com', '   ')", "23514", "users_full_name_length"),
    ("insert into users (email, oauth_provider) values ('x@example.com', 'google')", "23514", "users_oauth_pair"),
    ("insert into users (email, oauth_id) values ('x@example.com', '42')", "23514", "users_oauth_pair"),
    ("insert into users (email, tier) values ('x@example.com', 'platinum')", "22P02", None),
    ("insert into users (email, oauth_provider, oauth_id) values ('x@example.com', 'gitlab', '1')", "22P02", None),
    # datasets and versions
    ("insert into datasets (user_id, name) values (%(a_user)s, '')", "23514", "datasets_name_length"),
    ("insert into datasets (user_id, name, problem_type) values (%(a_user)s, 'd', 'ranking')", "22P02", None),
    ("insert into datasets (user_id, name) values (gen_random_uuid(), 'd')", "23503", "datasets_user_id_fkey"),
    ("update datasets set current_version_id = %(b_version)s where id = %(a_dataset)s",
     "23503", "datasets_current_version_fkey"),
    ("insert into dataset_versions (dataset_id, original_size_bytes) values (%(a_dataset)s, -1)",
     "23514", "dataset_versions_sizes_nonnegative"),
    ("insert into dataset_versions (dataset_id, parquet_size_bytes) values (%(a_dataset)s, -5)",
     "23514", "dataset_versions_sizes_nonnegative"),
    ("insert into dataset_versions (dataset_id, row_count) values (%(a_dataset)s, -1)",
     "23514", "dataset_versions_counts_nonnegative"),
    ("insert into dataset_versions (dataset_id, status) values (%(a_dataset)s, 'done')", "22P02", None),
    ("insert into dataset_versions (dataset_id, status) values (%(a_dataset)s, 'completed')",
     "AM003", "dataset_versions_status_transition"),
    ("update dataset_versions set status = 'completed' where id = %(a_version)s",
     "AM003", "dataset_versions_status_transition"),
    ("insert into dataset_versions (dataset_id, original_format) values (%(a_dataset)s, 'xml')", "22P02", None),
    ("insert into dataset_versions (dataset_id, columns_metadata) values (%(a_dataset)s, '\"x\"')",
     "23514", "dataset_versions_columns_metadata_shape"),
    ("insert into dataset_versions (dataset_id, user_id) values (%(a_dataset)s, %(b_user)s)",
     "23503", "dataset_versions_dataset_fkey"),
    ("insert into dataset_versions (dataset_id) values (gen_random_uuid())", "23503", "dataset_versions_dataset_fkey"),
    ("insert into dataset_versions (dataset_id, upload_id) select %(a_dataset)s, upload_id from dataset_versions"
     " where id = %(a_version)s", "23505", "dataset_versions_upload_key"),
    ("update dataset_versions set version_number = 7 where id = %(a_version)s",
     "AM004", "dataset_versions_identity_immutable"),
    ("insert into dataset_profiles (dataset_version_id, columns) values (%(a_version)s, '[]')",
     "23514", "dataset_profiles_columns_shape"),
    ("insert into dataset_profiles (dataset_version_id, user_id) values (%(a_version)s, %(b_user)s)",
     "23503", "dataset_profiles_version_fkey"),
    ("insert into ingestion_jobs (dataset_version_id, progress_percent) values (%(a_version)s, 101)",
     "23514", "ingestion_jobs_progress_range"),
    ("insert into ingestion_jobs (dataset_version_id, stage) values (%(a_version)s, 'dance')",
     "23514", "ingestion_jobs_stage_valid"),
    # workflows and snapshots
    ("insert into workflows (user_id, name) values (%(a_user)s, ' ')", "23514", "workflows_name_length"),
    ("insert into workflow_snapshots (workflow_id, user_id, snapshot_data)"
     " select %(b_workflow)s, %(a_user)s, definition from workflows where id = %(a_workflow)s",
     "23503", "workflow_snapshots_workflow_fkey"),
    ("delete from workflow_snapshots where id = %(a_snapshot)s", "23503", "jobs_snapshot_fkey"),
    # jobs, nodes, models
    ("insert into jobs (user_id, workflow_snapshot_id) values (%(a_user)s, %(b_snapshot)s)",
     "23503", "jobs_snapshot_fkey"),
    ("insert into jobs (user_id, workflow_snapshot_id, credit_cost) values (%(a_user)s, %(a_snapshot)s, -1)",
     "23514", "jobs_credit_cost_nonnegative"),
    ("insert into jobs (user_id, workflow_snapshot_id, priority) values (%(a_user)s, %(a_snapshot)s, 5000)",
     "23514", "jobs_priority_range"),
    ("insert into jobs (user_id, workflow_snapshot_id, results) values (%(a_user)s, %(a_snapshot)s, '[1]')",
     "23514", "jobs_results_shape"),
    ("insert into jobs (user_id, workflow_snapshot_id, status) values (%(a_user)s, %(a_snapshot)s, 'stuck')",
     "22P02", None),
    ("insert into job_nodes (job_id, node_id) values (%(a_job)s, 'n'), (%(a_job)s, 'n')",
     "23505", "job_nodes_node_key"),
    ("insert into job_nodes (job_id, node_id) values (%(a_job)s, '')", "23514", "job_nodes_node_id_length"),
    ("insert into job_nodes (job_id, node_id, node_type) values (%(a_job)s, 'n', 'robot')", "22P02", None),
    ("insert into job_nodes (job_id, node_id, user_id) values (%(a_job)s, 'n', %(b_user)s)",
     "23503", "job_nodes_job_fkey"),
    ("insert into models (user_id, job_id, name) values (%(a_user)s, %(b_job)s, 'm')", "23503", "models_job_fkey"),
    ("insert into models (user_id, job_id, name, metrics) values (%(a_user)s, %(a_job)s, 'm', '{\"acc\": \"high\"}')",
     "23514", "models_metrics_shape"),
    ("insert into models (user_id, job_id, name, hyperparameters) values (%(a_user)s, %(a_job)s, 'm', '[]')",
     "23514", "models_hyperparameters_shape"),
    ("update models set user_id = %(b_user)s where id = %(a_model)s", "AM004", "models_owner_immutable"),
    # credits
    ("insert into credit_packages (name, credits, price_cents) values ('free lunch', 0, 0)",
     "23514", "credit_packages_credits_positive"),
    ("insert into credit_packages (name, credits, price_cents) values ('neg', 10, -1)",
     "23514", "credit_packages_price_nonnegative"),
    ("insert into credit_packages (name, credits, price_cents, tier_restriction) values ('x', 1, 1, 'gold')",
     "22P02", None),
    # experiments
    ("insert into experiments (user_id, name) values (%(a_user)s, 'exp')", "23505", "experiments_name_key"),
    ("insert into experiments (user_id, name, dataset_id) values (%(a_user)s, 'e2', %(b_dataset)s)",
     "23503", "experiments_dataset_fkey"),
    ("insert into experiment_runs (experiment_id, job_id) values (%(a_experiment)s, %(b_job)s)",
     "23503", "experiment_runs_job_fkey"),
    ("insert into experiment_runs (experiment_id, model_id) values (%(a_experiment)s, %(b_model)s)",
     "23503", "experiment_runs_model_fkey"),
    ("insert into experiment_runs (experiment_id, metrics) values (%(a_experiment)s, '{\"f1\": null}')",
     "23514", "experiment_runs_metrics_shape"),
    # tutorials
    ("insert into tutorials (slug, title) values ('Bad Slug', 'T')", "23514", "tutorials_slug_format"),
    ("insert into tutorials (slug, title, steps) values ('s', 'T', '[{\"title\": \"no id\"}]')",
     "23514", "tutorials_steps_shape"),
    ("insert into tutorials (slug, title, steps) values ('s', 'T', '{\"id\": \"x\"}')",
     "23514", "tutorials_steps_shape"),
    ("insert into user_tutorial_progress (user_id, tutorial_id) values (%(a_user)s, %(tutorial)s),"
     " (%(a_user)s, %(tutorial)s)", "23505", "user_tutorial_progress_user_tutorial_key"),
    ("insert into user_tutorial_progress (user_id, tutorial_id, current_step) values (%(a_user)s, %(tutorial)s, -1)",
     "23514", "user_tutorial_progress_current_step_nonnegative"),
]


@pytest.mark.parametrize(("statement", "sqlstate", "constraint"), BAD_WRITES,
                         ids=[f"{i:02d}-{c or s}" for i, (_, s, c) in enumerate(BAD_WRITES)])
def test_bad_write_is_refused_and_changes_nothing(
        conn: Conn, world: dict[str, Any], statement: str, sqlstate: str, constraint: str | None) -> None:
    assert_refused(conn, statement, world, sqlstate=sqlstate, constraint=constraint)


def test_deleting_a_dataset_cascades_to_versions_profiles_and_ingestion(conn: Conn, world: dict[str, Any]) -> None:
    version = world["a_version"]
    conn.execute("insert into dataset_profiles (dataset_version_id) values (%s)", [version])
    conn.execute("insert into ingestion_jobs (dataset_version_id) values (%s)", [version])
    conn.execute("update datasets set current_version_id = %s where id = %s", [version, world["a_dataset"]])
    conn.execute("delete from datasets where id = %s", [world["a_dataset"]])
    for table in ("dataset_versions", "dataset_profiles", "ingestion_jobs"):
        assert value(conn, f"select count(*) from {table} where user_id = %s", [world["a_user"]]) == 0
    assert value(conn, "select count(*) from dataset_versions where user_id = %s", [world["b_user"]]) == 1


def test_deleting_a_workflow_keeps_snapshots_and_jobs(conn: Conn, world: dict[str, Any]) -> None:
    conn.execute("delete from models where id = %s", [world["a_model"]])
    conn.execute("delete from workflows where id = %s", [world["a_workflow"]])
    snapshot = one(conn, "select workflow_id, snapshot_data from workflow_snapshots where id = %s",
                   [world["a_snapshot"]])
    assert snapshot == {"workflow_id": None, "snapshot_data": GRAPH}
    assert value(conn, "select count(*) from jobs where id = %s", [world["a_job"]]) == 1


def test_deleting_the_current_version_clears_the_pointer(conn: Conn, world: dict[str, Any]) -> None:
    conn.execute("update datasets set current_version_id = %s where id = %s", [world["a_version"], world["a_dataset"]])
    conn.execute("delete from dataset_versions where id = %s", [world["a_version"]])
    assert value(conn, "select current_version_id from datasets where id = %s", [world["a_dataset"]]) is None


def test_updated_at_is_set_by_the_database(conn: Conn, world: dict[str, Any]) -> None:
    tables = [r["table_name"] for r in conn.execute(
        "select table_name from information_schema.columns where table_schema = 'automl'"
        " and column_name = 'updated_at' order by 1")]
    assert len(tables) >= 12
    forged = "2001-01-01T00:00:00Z"
    conn.execute("update datasets set name = 'renamed', updated_at = %s where id = %s", [forged, world["a_dataset"]])
    row = one(conn, "select updated_at > created_at as moved, updated_at::text like '2001%%' as forged"
                    " from datasets where id = %s", [world["a_dataset"]])
    assert row == {"moved": True, "forged": False}
    stamping = {r["relname"] for r in conn.execute(
        "select c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_proc p on p.oid = t.tgfoid"
        " where not t.tgisinternal and t.tgtype & 2 = 2 and t.tgtype & 16 = 16"  # BEFORE, UPDATE
        " and (p.proname = 'set_updated_at' or p.prosrc like '%%new.updated_at := now()%%')")}
    assert set(tables) <= stamping, set(tables) - stamping


def test_dataset_versions_are_numbered_per_dataset(conn: Conn, world: dict[str, Any]) -> None:
    numbers = [make_version(conn, world["a_dataset"])["version_number"] for _ in range(3)]
    assert numbers == [2, 3, 4]
    assert make_version(conn, world["b_dataset"])["version_number"] == 2
    conn.execute("delete from dataset_versions where dataset_id = %s and version_number = 4", [world["a_dataset"]])
    assert make_version(conn, world["a_dataset"], version_number=1)["version_number"] == 5  # never reused nor chosen
