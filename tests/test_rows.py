"""How the typed API reads rows: built from the values psycopg loaded (automl_db.runtime._Rows) and
JSON read by pydantic-core, not by pydantic validation and json.loads. These tests hold that to
what validation and json.loads would have made, value by value, and check that what validation
would have refused is still refused."""

import json
import pickle
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg.types.string import TextLoader
from pydantic import BaseModel, Field, field_validator

from automl_db import queries as q
from automl_db import rows, runtime
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import DataUnreadable
from automl_db.rows import Job, JobStatus, Model, Workflow
from automl_db.runtime import Row, fetch_all, fetch_one
from automl_db.shapes import Json, WorkflowGraph
from automl_db.tools import codegen, demo
from tests.helpers import make_dataset, make_job, make_model, make_user, make_version, make_workflow, value

Conn = psycopg.Connection[DictRow]
SMALL = Settings(pool_min_size=1, pool_max_size=2, pool_timeout=5)

#: Every generated model of a table's rows, by table ("A row of jobs." is how codegen names them).
TABLE_MODELS = {model.__doc__.removeprefix("A row of ").removesuffix("."): model
                for model in vars(rows).values()
                if isinstance(model, type) and issubclass(model, Row) and model is not Row
                and model.__doc__ and not model.__doc__.startswith("A row of query")}


@pytest.fixture
def admin(db_url: str) -> Iterator[Database]:
    with Database(db_url, settings=SMALL) as database:
        yield database


def same(read: BaseModel, validated: BaseModel) -> None:
    """Equal as models, and every field's value of the very same type (a float is not an int here,
    a label is its enum member, a shaped JSON column its model)."""
    assert read == validated
    assert read.model_dump() == validated.model_dump()
    assert read.model_fields_set == validated.model_fields_set
    for name in type(validated).model_fields:
        assert type(getattr(read, name)) is type(getattr(validated, name)), name


def validated(conn: psycopg.Connection[Any], query: Any, params: Any, model: type[BaseModel]) -> list[Any]:
    """What pydantic validation makes of the rows psycopg reads with its own loaders (json.loads)."""
    found = conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
    return [model.model_validate(row) for row in found]


def test_every_tables_rows_read_as_validation_would_make_them(db_url: str, app_url: str, worker_url: str,
                                                              billing_url: str, admin: Database) -> None:
    assert {"jobs", "users", "models", "workflows", "credit_transactions"} <= set(TABLE_MODELS)
    with Database(app_url, settings=SMALL) as app, Database(worker_url, settings=SMALL) as workers, \
            Database(billing_url, settings=SMALL) as billing:
        demo.story(app, workers, billing)
    with admin.transaction() as conn:
        conn.execute("update models set metrics = '{\"accuracy\": 1, \"loss\": 0.25}'")  # an int read as float
        for table, model in TABLE_MODELS.items():
            query = f"select * from {table}"
            read = fetch_all(conn, query, None, model, table)
            expected = validated(conn, query, None, model)
            assert read, f"the demo wrote no {table}"
            assert len(read) == len(expected)
            for got, want in zip(read, expected, strict=True):
                same(got, want)
            one = fetch_one(conn, query, None, model, table)
            assert one is not None
            same(one, expected[0])


def test_a_shaped_json_column_and_labels_are_typed(conn: Conn, admin: Database) -> None:
    user = make_user(conn)
    workflow = make_workflow(conn, user, {"nodes": [{"id": "a", "type": "model", "seed": 7}], "edges": []})
    make_model(conn, user)
    conn.execute("update models set metrics = '{\"accuracy\": 1}' where user_id = %s", [user])
    with admin.transaction() as c:
        (read,) = fetch_all(c, "select * from workflows where id = %(id)s", {"id": workflow}, Workflow, "w")
        (model,) = fetch_all(c, "select * from models where user_id = %(u)s", {"u": user}, Model, "m")
        jobs = q.list_jobs(c, user_id=user, page_size=10)
    assert isinstance(read.definition, WorkflowGraph)
    assert read.definition.nodes[0].model_extra == {"seed": 7}
    assert model.metrics == {"accuracy": 1.0}
    assert type(model.metrics["accuracy"]) is float
    assert jobs
    assert all(type(job.status) is JobStatus for job in jobs)


class Document(Row):
    id: int
    doc: Json


def test_json_reads_as_json_loads_reads_it(admin: Database) -> None:
    """pydantic-core's parser, with json.loads behind it where it refuses (nesting past its limit);
    on a table of the test's own, which bounds nothing."""
    documents: list[Any] = [
        {"big": 123456789012345678901234567890, "tiny": 1e-300, "third": 0.1 + 0.2, "neg0": -0.0, "exp": 1e300},
        {"text": "é😀\u2028\\\"\t", "empty": "", "nested": [[], {}, [None, True, False]]},
        "0.1000000000000000000001", 12.5, None,
    ]
    deep: Any = 1
    for _ in range(300):  # beyond pydantic-core's nesting limit
        deep = {"d": deep}
    documents.append(deep)
    with admin.transaction() as c:
        c.execute("create temp table documents (id int primary key, doc jsonb, plain json)")
        for n, document in enumerate(documents):
            c.execute("insert into documents values (%s, %s::jsonb, %s::json)",
                      [n, json.dumps(document), json.dumps(document)])
        c.execute("insert into documents values (100, '{\"a\": 1, \"a\": 2}', '{\"a\": 1, \"a\": 2}')")
        c.execute("insert into documents values (101, '1e400', '[0.1000000000000000000001, -0, 1E+2]')")
        for n in [*range(len(documents)), 100, 101]:
            for column in ("doc", "plain"):
                query = f"select id, {column} as doc from documents where id = %(n)s"
                read = fetch_one(c, query, {"n": n}, Document, "documents")
                text = c.execute(f"select {column}::text from documents where id = %s", [n]).fetchone()
                assert read is not None
                assert text is not None
                assert json.dumps(read.doc) == json.dumps(json.loads(text[0])), (n, column)


def test_a_null_where_the_model_has_none_is_refused(conn: Conn, admin: Database) -> None:
    make_job(conn, make_user(conn))
    columns = ", ".join("null::uuid as workflow_snapshot_id" if name == "workflow_snapshot_id" else name
                        for name in Job.model_fields)
    with admin.transaction() as c, pytest.raises(DataUnreadable, match="workflow_snapshot_id is NULL"):
        fetch_all(c, f"select {columns} from jobs", None, Job, "nulled")


def test_columns_that_are_not_the_models_are_refused(conn: Conn, admin: Database) -> None:
    user = make_user(conn)
    make_job(conn, user)
    with admin.transaction() as c:
        with pytest.raises(DataUnreadable, match="validation errors for Job"):
            fetch_all(c, "select id, status from jobs", None, Job, "narrow")
        with pytest.raises(DataUnreadable, match="validation error for Job"):
            fetch_all(c, "select j.*, 1 as status from jobs j", None, Job, "twice")


def test_a_loader_the_service_registered_does_not_change_the_rows_types(conn: Conn, admin: Database) -> None:
    """A block may register loaders on its connection (uuid read as text, say): the typed rows are
    validated then, and come out as declared."""
    user = make_user(conn)
    make_job(conn, user)
    with admin.transaction() as c:
        c.adapters.register_loader("uuid", TextLoader)
        assert type(c.execute("select id from jobs limit 1").fetchone()[0]) is str  # type: ignore[index]
        jobs = q.list_jobs(c, user_id=user, page_size=10)
    assert jobs
    assert all(type(job.id) is uuid.UUID and type(job.user_id) is uuid.UUID for job in jobs)


def test_rows_behave_as_pydantic_models(conn: Conn, admin: Database) -> None:
    user = make_user(conn)
    make_job(conn, user)
    make_job(conn, user)
    with admin.transaction() as c:
        first, second = q.list_jobs(c, user_id=user, page_size=10)
    changed = first.model_copy(update={"priority": 9})
    assert changed.priority == 9
    assert first.priority != 9
    assert first.model_fields_set == second.model_fields_set == set(Job.model_fields)
    assert Job.model_validate_json(first.model_dump_json()) == first
    with pytest.raises(ValueError, match="frozen"):
        first.priority = 3
    assert pickle.loads(pickle.dumps(first)) == first


def test_psycopg_loads_every_type_as_codegen_declares_it(conn: Conn) -> None:
    """What lets a row be built without validation: for every PostgreSQL type codegen maps
    (codegen.SCALARS), psycopg's loader yields exactly the declared Python type."""
    samples = {"uuid": "gen_random_uuid()", "timestamptz": "now()", "timestamp": "localtimestamp",
               "date": "current_date", "interval": "interval '1 day'", "bytea": "'\\x00'::bytea",
               "bool": "true", "numeric": "1.5::numeric"}
    for pg_type, annotation in codegen.SCALARS.items():
        if annotation == "Json":
            continue
        expression = samples.get(pg_type, f"'1'::{pg_type}")
        loaded = value(conn, f"select {expression}")
        assert type(loaded).__name__ == annotation, pg_type
        assert type(loaded) in runtime._LOADED_AS_DECLARED or annotation == "Decimal", pg_type


def test_a_loader_seen_only_after_a_first_null_still_gets_the_rows_validated(conn: Conn, admin: Database) -> None:
    """The newest dataset has no version (NULL version number), an older one has: with int read as
    text by the block's loader, the older row's number must still come out an int."""
    user = make_user(conn)
    older = make_dataset(conn, user, "older")
    version = make_version(conn, older)
    conn.execute("update datasets set current_version_id = %s where id = %s", [version["id"], older])
    make_dataset(conn, user, "newer")
    with admin.transaction() as c:
        for int_type in ("int2", "int4", "int8"):
            c.adapters.register_loader(int_type, TextLoader)
        listed = q.list_datasets(c, user_id=user)
    assert [row.name for row in listed] == ["newer", "older"]
    assert listed[0].current_version_number is None
    assert listed[1].current_version_number == 1
    assert type(listed[1].current_version_number) is int


def test_a_json_loader_the_service_set_is_kept(conn: Conn, admin: Database) -> None:
    user = make_user(conn)
    job = make_job(conn, user)
    conn.execute("update jobs set results = '{\"score\": 1.5}' where id = %s", [job])
    with admin.transaction() as c:
        set_json_loads(partial(json.loads, parse_float=Decimal), c)
        (read,) = q.list_jobs(c, user_id=user, page_size=10)
    assert read.results == {"score": Decimal("1.5")}


class Counted(Row):
    """Not generated: its own constraints and validators must run."""

    n: Annotated[int, Field(ge=0)]
    label: str

    @field_validator("label")
    @classmethod
    def shout(cls, value: str) -> str:
        return value.upper()


def test_a_model_that_is_not_generated_is_validated(admin: Database) -> None:
    with admin.transaction() as c:
        (row,) = fetch_all(c, "select 1 as n, 'a' as label", None, Counted, "counted")
        assert row.label == "A"
        with pytest.raises(DataUnreadable, match="validation error for Counted"):
            fetch_all(c, "select -1 as n, 'a' as label", None, Counted, "counted")


class Amount(Row):
    """As codegen would write a numeric column (the module is where generated models live)."""

    id: int
    amount: Decimal | None = None


Amount.__module__ = runtime._GENERATED


def test_numeric_nan_and_infinity_are_refused_as_validation_refuses_them(admin: Database) -> None:
    with admin.transaction() as c:
        (row,) = fetch_all(c, "select 1 as id, 2.5::numeric as amount", None, Amount, "amount")
        assert row.amount == Decimal("2.5")
        for special in ("NaN", "Infinity", "-Infinity"):
            with pytest.raises(DataUnreadable, match="amount"):
                fetch_all(c, f"select 1 as id, '{special}'::numeric as amount", None, Amount, "amount")
