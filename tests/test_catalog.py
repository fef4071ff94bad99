"""The schema as a DBA and CI see it: schema/ and migrations/ agree, and the catalog is complete."""

import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import DictRow

from automl_db.tools import migrate
from automl_db.tools.catalog import build_from_migrations, build_from_schema
from automl_db.tools.paths import migrations_dir, schema_files
from tests.catalog import snapshot
from tests.conftest import scratch_database

SEED_TABLES = {
    "users": ["id", "email", "full_name", "oauth_provider", "oauth_id", "tier", "credit_balance",
              "email_verified", "is_deleted", "dataset_count", "workflow_count", "model_count",
              "storage_used_bytes", "created_at", "updated_at"],
    "datasets": ["id", "user_id", "name", "description", "problem_type", "target_column",
                 "current_version_id", "created_at", "updated_at"],
    "dataset_versions": ["id", "dataset_id", "upload_id", "version_number", "version_label",
                         "original_filename", "original_format", "original_size_bytes", "s3_path",
                         "parquet_size_bytes", "row_count", "column_count", "columns_metadata", "status",
                         "created_at"],
    "dataset_profiles": ["id", "dataset_version_id"],
    "ingestion_jobs": ["id", "dataset_version_id", "status"],
    "workflows": ["id", "user_id", "name", "description", "definition", "is_deleted", "created_at", "updated_at"],
    "workflow_snapshots": ["id", "workflow_id", "user_id", "snapshot_data", "created_at"],
    "jobs": ["id", "user_id", "workflow_snapshot_id", "status", "credit_cost", "priority", "celery_task_id",
             "results", "error_message", "error_traceback", "created_at", "started_at", "completed_at"],
    "job_nodes": ["id", "job_id", "node_id", "node_type", "status", "output_data", "error_message",
                  "started_at", "completed_at"],
    "models": ["id", "user_id", "job_id", "name", "algorithm", "problem_type", "metrics", "hyperparameters",
               "s3_path", "is_deployed", "created_at"],
    "credit_transactions": ["id", "user_id", "type", "amount", "balance_after", "description", "job_id",
                            "package_id", "stripe_payment_id", "created_at"],
    "credit_packages": ["id", "name", "credits", "price_cents", "stripe_price_id", "is_active",
                        "tier_restriction"],
    "experiments": ["id", "user_id", "name"],
    "experiment_runs": ["id", "experiment_id", "job_id", "model_id"],
    "tutorials": ["id", "title"],
    "user_tutorial_progress": ["id", "user_id", "tutorial_id"],
}

SEED_ENUMS = {
    "user_tier": ["free", "pro", "enterprise"],
    "oauth_provider": ["google", "github"],
    "file_format": ["csv", "json", "parquet", "excel", "unknown"],
    "problem_type": ["classification", "regression", "clustering", "other"],
    "job_status": ["pending", "queued", "running", "completed", "failed", "cancelled"],
    "node_status": ["pending", "running", "success", "failed", "skipped"],
    "transaction_type": ["purchase", "consumption", "refund", "adjustment"],
    "tier_restriction": ["none", "pro_only", "enterprise_only"],
}

SEED_TYPES = {"uuid": "uuid", "timestamptz": "timestamp with time zone", "bigint": "bigint"}

# Ledger ids have no column default on purpose: the posting trigger draws one when none is given,
# so that only a client-chosen id pays for the duplicate check (070_credits.sql).
ID_DRAWN_BY_TRIGGER = {"credit_transactions"}


@pytest.fixture(scope="module")
def from_schema(server_url: str) -> Iterator[str]:
    """A database built by running every schema/ file in lexical path order, nothing else."""
    with scratch_database(server_url, "from_schema") as url:
        build_from_schema(url)
        yield url


@pytest.fixture(scope="module")
def from_migrations(server_url: str) -> Iterator[str]:
    with scratch_database(server_url, "from_migrations") as url:
        build_from_migrations(url)
        yield url


def test_schema_and_migrations_build_the_same_catalog(from_schema: str, from_migrations: str) -> None:
    schema, migrations = snapshot(from_schema), snapshot(from_migrations)
    for part in schema:
        only_schema = sorted(schema[part] - migrations[part])
        only_migrations = sorted(migrations[part] - schema[part])
        assert (only_schema, only_migrations) == ([], []), f"{part} differ"
    assert len(schema["tables"]) >= 16


def test_rollback_all_then_apply_again(server_url: str) -> None:
    with scratch_database(server_url, "roundtrip") as url:
        migrate.apply(url)
        first = snapshot(url)
        rolled = migrate.rollback_all(url)
        assert len(rolled) == len(list(migrations_dir().glob("*.rollback.sql")))
        empty = snapshot(url)
        assert empty["tables"] == set()
        assert empty["functions"] == set()
        assert empty["types"] == set()
        migrate.apply(url)
        snapshot_after_apply = snapshot(url)
        assert snapshot_after_apply == first


def test_every_migration_has_a_rollback() -> None:
    forward = {p.name.removesuffix(".sql") for p in migrations_dir().glob("*.sql")
               if not p.name.endswith(".rollback.sql") and not p.name.startswith("post-apply")}
    backward = {p.name.removesuffix(".rollback.sql") for p in migrations_dir().glob("*.rollback.sql")}
    assert forward
    assert forward == backward


def test_schema_files_are_plain_sql_with_a_header() -> None:
    for path in schema_files():
        text = path.read_text()
        assert re.match(r"\d{3}_[a-z_]+\.sql$", path.name), path.name
        assert text.startswith(f"-- {path.name} — "), f"{path.name} lacks its header"
        assert not re.search(r"^\s*\\", text, re.MULTILINE), f"{path.name} uses a psql meta-command"


def test_seed_tables_columns_and_types(conn: psycopg.Connection[DictRow]) -> None:
    columns = {(r["table_name"], r["column_name"]): r for r in conn.execute(
        "select table_name, column_name, data_type, udt_name from information_schema.columns"
        " where table_schema = 'automl'")}
    for table, names in SEED_TABLES.items():
        for name in names:
            assert (table, name) in columns, f"{table}.{name} missing"
        assert columns[(table, "id")]["udt_name"] == "uuid"
        default = conn.execute(
            "select pg_get_expr(adbin, adrelid) as d from pg_attrdef where adrelid = %s::regclass and adnum = 1",
            [table]).fetchone()
        assert default == (None if table in ID_DRAWN_BY_TRIGGER else {"d": "gen_random_uuid()"}), table
    for (table, name), col in columns.items():
        if name.endswith("_at"):
            assert col["data_type"] == SEED_TYPES["timestamptz"], f"{table}.{name}"
    for table, name in [("users", "storage_used_bytes"), ("dataset_versions", "original_size_bytes"),
                        ("dataset_versions", "parquet_size_bytes")]:
        assert columns[(table, name)]["data_type"] == "bigint"
    for table, name in [("users", "credit_balance"), ("jobs", "credit_cost"), ("jobs", "priority"),
                        ("credit_transactions", "amount"), ("dataset_versions", "row_count")]:
        assert columns[(table, name)]["data_type"] == "integer"
    for table, name in [("dataset_versions", "columns_metadata"), ("workflows", "definition"),
                        ("jobs", "results"), ("models", "metrics"), ("job_nodes", "output_data")]:
        assert columns[(table, name)]["data_type"] == "jsonb"


def test_seed_enum_labels(conn: psycopg.Connection[DictRow]) -> None:
    for enum, labels in SEED_ENUMS.items():
        found = [r["l"] for r in conn.execute(
            "select enumlabel as l from pg_enum where enumtypid = %s::regtype order by enumsortorder", [enum])]
        assert found == labels, enum
    node_types = {r["l"] for r in conn.execute("select unnest(enum_range(null::node_type))::text as l")}
    assert {"dataset", "preprocess", "model"} <= node_types
    # The seed's dataset version status is a string of four values: here an enum of the same labels.
    assert [r["l"] for r in conn.execute("select unnest(enum_range(null::version_status))::text as l")] == [
        "pending", "processing", "completed", "failed"]


def test_every_table_column_and_function_is_commented(conn: psycopg.Connection[DictRow]) -> None:
    missing = conn.execute("""
        select c.relname || coalesce('.' || a.attname, '') as what
          from pg_class c
          left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
         where c.relnamespace = 'automl'::regnamespace and c.relkind = 'r'
           and (obj_description(c.oid, 'pg_class') is null
                or (a.attname is not null and col_description(c.oid, a.attnum) is null))
        union all
        select p.proname from pg_proc p
         where p.pronamespace = 'automl'::regnamespace and obj_description(p.oid, 'pg_proc') is null
        union all
        select t.typname from pg_type t
         where t.typnamespace = 'automl'::regnamespace and t.typtype = 'e'
           and obj_description(t.oid, 'pg_type') is null""").fetchall()
    assert missing == []


def test_every_foreign_key_is_indexed(conn: psycopg.Connection[DictRow]) -> None:
    """Some index of the referencing table leads with the key's first (most selective) column,
    so deleting or re-keying a parent never scans the child table."""
    unindexed = conn.execute("""
        select k.conname from pg_constraint k
         where k.contype = 'f' and k.connamespace = 'automl'::regnamespace
           and not exists (select from pg_index i
                            where i.indrelid = k.conrelid and i.indkey[0] = k.conkey[1])""").fetchall()
    assert unindexed == []


def test_no_extensions_needed(conn: psycopg.Connection[DictRow]) -> None:
    assert conn.execute("select extname from pg_extension where extname <> 'plpgsql'").fetchall() == []
    for path in schema_files():
        assert "create extension" not in path.read_text().lower()
