"""The typed API's contract at its edges: bad arguments, what the database holds, lost connections,
session state, unknown commit outcomes. Each case was once a raw exception, a silent coercion, a
hang or a leak."""

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from automl_db import aqueries as aq
from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import AsyncDatabase, Database
from automl_db.errors import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    InvalidInput,
    QueryError,
    Retryable,
    TransactionFailed,
)
from automl_db.rows import JobStatus, ProblemType
from automl_db.runtime import MAX_JSON_DEPTH
from automl_db.shapes import WorkflowGraph
from tests.helpers import (
    as_role,
    give_credits,
    make_dataset,
    make_job,
    make_snapshot,
    make_user,
    one,
    table_contents,
    value,
)

Conn = psycopg.Connection[DictRow]
SMALL = Settings(pool_min_size=1, pool_max_size=2, pool_timeout=5)


@pytest.fixture
def app(app_url: str) -> Any:
    with Database(app_url, settings=SMALL) as database:
        yield database


def nested(levels: int) -> Any:
    doc: Any = 1
    for _ in range(levels):
        doc = [doc]
    return doc


# Arguments are checked before anything reaches the server.

BAD_ARGUMENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("sign_up", "full_name", {"email": "a@example.com", "full_name": "lone \ud800 surrogate"}),
    ("sign_up", "email", {"email": "nul\x00@example.com"}),
    ("create_workflow", "definition", {"name": "w", "definition": {"nodes": [], "edges": [], "cost": Decimal("1.5")}}),
    ("create_workflow", "definition", {"name": "w", "definition": {"nodes": [], "edges": [], "tags": {"a", "b"}}}),
    ("create_workflow", "definition", {"name": "w", "definition": {"nodes": [], "edges": [], "x": float("nan")}}),
    ("create_workflow", "definition", {"name": "w", "definition": nested(10_000)}),
    ("create_workflow", "definition", {"name": "w", "definition": nested(MAX_JSON_DEPTH + 1)}),
    ("create_workflow", "definition", {"name": "w", "definition": {"nodes": [], "edges": [], "\x00": 1}}),
    ("submit_job", "credit_cost", {"credit_cost": 0.4}),
    ("submit_job", "credit_cost", {"credit_cost": 9.5}),
    ("submit_job", "credit_cost", {"credit_cost": "5"}),
    ("submit_job", "credit_cost", {"credit_cost": True}),
    ("submit_job", "credit_cost", {"credit_cost": 2**31}),
    ("submit_job", "workflow_snapshot_id", {"credit_cost": 1, "workflow_snapshot_id": "not-a-uuid"}),
    ("list_jobs", "before_created_at", {"page_size": 5, "before_created_at": datetime(2030, 1, 1)}),
    ("create_dataset", "problem_type", {"name": "d", "problem_type": "classification"}),
]


@pytest.mark.parametrize(("function", "parameter", "arguments"), BAD_ARGUMENTS,
                         ids=[f"{f}-{p}-{i}" for i, (f, p, _) in enumerate(BAD_ARGUMENTS)])
def test_a_bad_argument_is_refused_by_name_and_nothing_is_written(
        conn: Conn, app: Database, function: str, parameter: str, arguments: dict[str, Any]) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    snapshot = make_snapshot(conn, user)
    before = table_contents(conn)
    defaults = {"sign_up": {}, "create_workflow": {"user_id": user}, "create_dataset": {"user_id": user},
                "submit_job": {"user_id": user, "workflow_snapshot_id": snapshot},
                "list_jobs": {"user_id": user}}[function]
    with pytest.raises(InvalidInput) as refused, app.transaction(user_id=user) as c:
        getattr(q, function)(c, **(defaults | arguments))
    assert refused.value.parameter == parameter
    assert f"argument {parameter}" in str(refused.value)
    assert table_contents(conn) == before


def test_the_async_functions_check_their_arguments_too(app_url: str, conn: Conn) -> None:
    user = make_user(conn)

    async def scenario() -> None:
        async with await AsyncDatabase.connect(app_url, settings=SMALL) as db:
            with pytest.raises(InvalidInput) as refused:
                async with db.transaction(user_id=user) as c:
                    await aq.create_dataset(c, user_id=user, name="d", description="\ud800")
            assert refused.value.parameter == "description"

    asyncio.run(scenario())


def test_good_arguments_still_pass(conn: Conn, app: Database) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    graph = WorkflowGraph.model_validate({"nodes": [{"id": "ü", "type": "dataset"}], "edges": []})
    with app.transaction(user_id=user) as c:
        workflow = q.create_workflow(c, user_id=user, name="Zürich 🚀", definition=graph)
        assert workflow is not None
        deep = q.create_workflow(c, user_id=user, name="deep",
                                 definition={"nodes": [], "edges": [], "x": nested(MAX_JSON_DEPTH - 1)})
        assert deep is not None
        dataset = q.create_dataset(c, user_id=user, name="d", problem_type=ProblemType.REGRESSION)
        assert dataset is not None
        jobs = q.list_jobs(c, user_id=user, page_size=5, before_created_at=datetime.now().astimezone())
        assert jobs == []


# The database agrees: every client holds to the same bounds.

def test_the_database_bounds_what_any_client_writes(conn: Conn, app_url: str) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)
    with as_role(app_url, user) as app:
        huge = "x" * 10_000_000
        cases: list[tuple[str, list[Any], str]] = [
            ("insert into dataset_versions (dataset_id, s3_path) values (%s, %s)", [dataset, huge],
             "object_path_length"),
            ("insert into workflows (user_id, name, definition) values (%s, 'w', %s::jsonb)",
             [user, "[" * 40 + "]" * 40], "bounded_jsonb_limits"),
            ("insert into workflows (user_id, name, definition) values (%s, 'w', jsonb_build_object("
             "'nodes', '[]'::jsonb, 'edges', '[]'::jsonb, 'blob', repeat('x', 2000000)))", [user],
             "bounded_jsonb_limits"),
            ("insert into datasets (user_id, name, description) values (%s, 'd', %s)", [user, huge],
             "datasets_description_length"),
        ]
        for statement, params, rule in cases:
            with pytest.raises(psycopg.Error) as refused:
                app.execute(statement, params)
            assert refused.value.diag.constraint_name == rule, statement


def test_every_column_a_client_writes_is_bounded(conn: Conn) -> None:
    """A text or JSON column that automl_app, automl_worker or automl_billing may write carries a
    length (or size and depth) rule: a domain with a CHECK, or a CHECK of its table naming it."""
    unbounded = conn.execute("""
        select c.relname || '.' || a.attname as column_name
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          join pg_type t on t.oid = a.atttypid
         where c.relnamespace = 'automl'::regnamespace and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
           and (t.typcategory = 'S' or t.typname in ('jsonb', 'json') or t.typelem = 'text'::regtype
                or t.typbasetype in ('jsonb'::regtype, 'text'::regtype))
           and exists (select from unnest(array['automl_app', 'automl_worker', 'automl_billing']) r(role)
                        where has_column_privilege(r.role, c.oid, a.attnum, 'INSERT')
                           or has_column_privilege(r.role, c.oid, a.attnum, 'UPDATE'))
           and not exists (select from pg_constraint k where k.contypid = a.atttypid and k.contype = 'c')
           and not exists (select from pg_constraint k
                            where k.conrelid = c.oid and k.contype = 'c' and a.attnum = any (k.conkey)
                              and pg_get_constraintdef(k.oid) ~ '(length|cardinality|= ANY|~ )')
         order by 1""").fetchall()
    assert unbounded == []


# Reading never breaks: whatever the database holds comes back typed.

def test_timestamps_python_cannot_hold_read_as_the_ends_of_time(conn: Conn, app: Database) -> None:
    user = make_user(conn)
    ends = [make_dataset(conn, user, name) for name in ("future", "past", "far", "caesar")]
    conn.execute("update datasets set created_at = 'infinity' where id = %s", [ends[0]])
    conn.execute("update datasets set created_at = '-infinity' where id = %s", [ends[1]])
    conn.execute("update datasets set created_at = '12000-01-01' where id = %s", [ends[2]])
    conn.execute("update datasets set created_at = '0044-03-15 BC' where id = %s", [ends[3]])
    with app.transaction(user_id=user) as c:
        listed = {d.name: d.created_at for d in q.list_datasets(c, user_id=user)}
    assert listed["future"].year == 9999
    assert listed["far"].year == 9999
    assert listed["past"].year == 1
    assert listed["caesar"].year == 1


def test_a_label_added_by_a_newer_migration_reads_back(conn: Conn, app: Database) -> None:
    user = make_user(conn)
    dataset = make_dataset(conn, user)
    conn.execute("alter type problem_type add value 'forecasting'")
    conn.execute("update datasets set problem_type = 'forecasting' where id = %s", [dataset])
    with app.transaction(user_id=user) as c:
        read = q.get_dataset(c, user_id=user, id=dataset)
    assert read is not None
    assert read.problem_type == "forecasting"
    assert isinstance(read.problem_type, ProblemType)


# Fail fast with the cause.

@pytest.mark.parametrize(("url", "cause"), [
    ("postgresql://postgres@127.0.0.1:1/postgres", "refused"),
    ("postgresql://postgres@no-such-host.invalid/postgres", "no-such-host.invalid"),
    ("{server}/no_such_database", "no_such_database"),
    ("{nobody}", "nobody_"),
    ("{nologin}", "not permitted to log in"),
])
def test_a_wrong_url_fails_at_once_with_the_servers_words(server_url: str, conn: Conn, url: str, cause: str) -> None:
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    conn.execute(f"create role {role}_nl nologin")
    try:
        from automl_db.urls import with_database, with_user
        target = url.format(server=with_database(server_url, "x").rsplit("/x", 1)[0],
                            nobody=with_user(server_url, role), nologin=with_user(server_url, f"{role}_nl"))
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as refused:
            Database(target, settings=Settings(connect_timeout=5, pool_timeout=30))
        assert time.monotonic() - started < 6
        assert cause in str(refused.value)
        assert "\n" not in str(refused.value)
        with pytest.raises(DatabaseUnavailable):
            asyncio.run(AsyncDatabase.connect(target, settings=Settings(connect_timeout=5)))
    finally:
        conn.execute(f"drop role {role}_nl")


# Clean connections: nothing crosses from one transaction to the next.

def test_session_state_does_not_leak_to_the_next_transaction(app_url: str, conn: Conn) -> None:
    a, b = make_user(conn), make_user(conn)
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with db.transaction(user_id=a) as c:
            c.execute("select set_config('automl.user_id', %s, false)", [str(b)])
            c.execute("set statement_timeout = 1")
            c.execute("set search_path = pg_temp")
            c.execute("set role automl_app")
        with db.transaction() as c:
            row = c.execute("select current_setting('automl.user_id', true), current_setting('statement_timeout'),"
                            " current_setting('search_path'), current_user").fetchone()
            assert row == ("", "0", "public, automl", "automl_app")  # the database's own path
            assert q.get_user(c, id=b) is None  # acting for nobody

        def swallow_a_failure() -> None:
            with db.transaction(user_id=a) as c, suppress(psycopg.Error):
                c.execute("set statement_timeout = 1")
                c.execute("select 1/0")  # swallowed: the transaction is aborted all the same

        with pytest.raises(TransactionFailed):
            swallow_a_failure()
        with db.transaction() as c:
            assert c.execute("show statement_timeout").fetchone() == ("0",)


def _set_by_cursor(c: psycopg.Connection[Any]) -> None:
    c.cursor().execute("set statement_timeout = 1")


def _set_by_executemany(c: psycopg.Connection[Any]) -> None:
    c.cursor().executemany("select set_config('statement_timeout', %s, false)", [("1",)])


def _set_by_stream(c: psycopg.Connection[Any]) -> None:
    list(c.cursor().stream("select set_config('statement_timeout', '1', false)"))


def _set_after_swapping_the_cursor_class(c: psycopg.Connection[Any]) -> None:
    c.cursor_factory = psycopg.Cursor
    c.execute("set statement_timeout = 1")


def _set_and_swap_the_cursor_class_back(c: psycopg.Connection[Any]) -> None:
    factory = c.cursor_factory
    c.cursor_factory = psycopg.Cursor
    c.execute("set statement_timeout = 1")
    c.cursor_factory = factory


def _set_by_a_cursor_of_another_class(c: psycopg.Connection[Any]) -> None:
    psycopg.ClientCursor(c).execute("set statement_timeout = %s", [1])


def _set_by_copy(c: psycopg.Connection[Any]) -> None:
    with c.cursor().copy("copy (select set_config('statement_timeout', '1', false)) to stdout") as copy:
        list(copy)


def _set_through_a_query_and_a_held_cursor(c: psycopg.Connection[Any]) -> None:
    with c.cursor("held", withhold=True) as cur:
        cur.execute("select set_config('statement_timeout', '1', false)")
        cur.fetchall()


def _set_by_a_held_cursor_of_its_own_class(c: psycopg.Connection[Any]) -> None:
    with psycopg.ServerCursor(c, "held", withhold=True) as cur:
        cur.execute("select set_config('statement_timeout', '1', false)")
        cur.fetchall()


def _set_inside_a_savepoint(c: psycopg.Connection[Any]) -> None:
    with c.transaction():  # a savepoint: psycopg's own round trips, not a generated query
        c.execute("set statement_timeout = 1")


@pytest.mark.parametrize("touch", [_set_by_cursor, _set_by_executemany, _set_by_stream,
                                   _set_after_swapping_the_cursor_class, _set_and_swap_the_cursor_class_back,
                                   _set_by_a_cursor_of_another_class, _set_by_copy,
                                   _set_through_a_query_and_a_held_cursor, _set_by_a_held_cursor_of_its_own_class,
                                   _set_inside_a_savepoint])
def test_every_way_a_block_runs_sql_is_seen_by_the_reset(
        app_url: str, conn: Conn, touch: Callable[[psycopg.Connection[Any]], None]) -> None:
    """Only blocks that ran something else than the generated queries are reset (automl_db.session):
    whatever path a statement took, the next transaction starts clean."""
    user = make_user(conn)
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with db.transaction(user_id=user) as c:
            assert q.get_user(c, id=user) is not None
            touch(c)
        with db.transaction() as c:
            assert c.execute("show statement_timeout").fetchone() == ("0",)
            assert c.execute("select count(*) from pg_cursors").fetchone() == (0,)
            assert c.cursor_factory is not psycopg.Cursor


def test_a_block_that_turns_autocommit_off_is_refused_and_its_connection_dropped(app_url: str, conn: Conn) -> None:
    def switch(db: Database) -> None:
        with db.transaction() as c:
            c.commit()
            c.autocommit = False
            c.execute("set statement_timeout = 1")  # psycopg begins a transaction for it

    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with pytest.raises(TransactionFailed, match="autocommit off"):
            switch(db)
        with db.transaction() as c:
            assert c.autocommit
            assert c.execute("show statement_timeout").fetchone() == ("0",)


def test_a_block_that_leaves_a_pipeline_open_commits_nothing(app_url: str, conn: Conn) -> None:
    user = make_user(conn)

    held = []

    def pipelined(db: Database) -> None:
        with db.transaction(user_id=user) as c:
            held.append(c.pipeline())
            held[0].__enter__()  # never exited
            assert q.verify_email(c, id=user) is not None

    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with pytest.raises(TransactionFailed, match="pipeline"):
            pipelined(db)
        with db.transaction(user_id=user) as c:
            found = q.get_user(c, id=user)
    assert found is not None
    assert not found.email_verified


def test_what_a_block_registers_on_its_connection_stays_in_the_block(app_url: str, conn: Conn) -> None:
    user = make_user(conn)
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with db.transaction(user_id=user) as c:
            c.adapters.register_loader("uuid", psycopg.types.string.TextLoader)
            c.prepared_max = 1
            assert isinstance(c.execute("select %s::uuid", [user]).fetchone()[0], str)  # type: ignore[index]
        with db.transaction(user_id=user) as c:
            assert c.execute("select %s::uuid", [user]).fetchone() == (user,)
            assert c.prepared_max != 1
            found = q.get_user(c, id=user)
    assert found is not None
    assert found.id == user


def test_an_async_block_that_sets_the_session_is_reset(app_url: str, conn: Conn) -> None:
    async def scenario() -> tuple[Any, ...] | None:
        async with await AsyncDatabase.connect(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
            async with db.transaction() as c:
                await c.cursor().execute("set statement_timeout = 1")
            async with db.transaction() as c:
                return await (await c.execute("show statement_timeout")).fetchone()

    assert asyncio.run(scenario()) == ("0",)


def test_a_statement_timeout_holds_per_transaction(app_url: str) -> None:
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1, statement_timeout_ms=100)) as db:
        with pytest.raises(Retryable) as timed_out, db.transaction() as c:
            c.execute("select pg_sleep(2)")
        assert timed_out.value.sqlstate == "57014"


def test_without_prepared_statements_for_transaction_poolers(app_url: str, conn: Conn) -> None:
    user = make_user(conn)
    for threshold, prepared in [(None, 0), (5, 1)]:
        with (Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1, prepare_threshold=threshold)) as db,
              db.transaction(user_id=user) as c):
            for _ in range(20):
                q.get_user(c, id=user)
            count = c.execute("select count(*) from pg_prepared_statements").fetchone()
            assert count is not None
            assert min(count[0], 1) == prepared


def test_a_connection_killed_between_uses_is_replaced_quietly(app_url: str, conn: Conn) -> None:
    user = make_user(conn)
    with Database(app_url, settings=Settings(pool_min_size=2, pool_max_size=2)) as db:
        with db.transaction(user_id=user) as c:
            q.get_user(c, id=user)
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity"
                     " where usename = 'automl_app' and datname = current_database()")
        for _ in range(4):
            with db.transaction(user_id=user) as c:
                assert q.get_user(c, id=user) is not None


# Honest failures at commit, and a retry helper that retries only what is safe.

@pytest.fixture
def slow_commit(conn: Conn) -> str:
    """A table whose rows make COMMIT wait two seconds (a deferred trigger), so the connection can be
    killed while the transaction commits."""
    conn.execute("create table commit_probe (id int); grant insert, select on commit_probe to automl_app")
    conn.execute("create function commit_probe_wait() returns trigger language plpgsql"
                 " set search_path = pg_catalog, public, pg_temp as"
                 " $$ begin perform pg_sleep(2); return null; end $$")
    conn.execute("create constraint trigger commit_probe_wait after insert on commit_probe"
                 " deferrable initially deferred for each row execute function commit_probe_wait()")
    return "insert into commit_probe values (1)"


def kill_while_committing(conn: Conn, role: str = "automl_app") -> threading.Thread:
    def killer() -> None:
        time.sleep(0.7)
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s"
                     " and datname = current_database() and query like '%%commit'", [role])

    thread = threading.Thread(target=killer)
    thread.start()
    return thread


def test_a_connection_lost_at_commit_is_an_unknown_outcome(app_url: str, conn: Conn, slow_commit: str) -> None:
    with Database(app_url, settings=SMALL) as db:
        killer = kill_while_committing(conn)
        with pytest.raises(CommitOutcomeUnknown) as unknown, db.transaction() as c:
            c.execute(slow_commit)
        killer.join()
        assert not isinstance(unknown.value, Retryable)
        with db.transaction() as c:  # the pool carries on
            c.execute("select 1")


def test_run_retries_what_is_retryable_and_refuses_to_guess(app_url: str, conn: Conn, slow_commit: str) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    snapshot = make_snapshot(conn, user)
    attempts: list[int] = []
    with Database(app_url, settings=SMALL) as db:
        def deadlocked_once(c: psycopg.Connection[Any]) -> int:
            attempts.append(1)
            if len(attempts) == 1:
                c.execute("do $$ begin raise exception 'x' using errcode = '40P01'; end $$")
            return 7

        assert db.run(deadlocked_once) == 7
        assert len(attempts) == 2

        def submit(c: psycopg.Connection[Any]) -> Any:
            c.execute(slow_commit)
            return q.submit_job(c, user_id=user, workflow_snapshot_id=snapshot, credit_cost=10,
                                idempotency_key="checkout-42")

        killer = kill_while_committing(conn)
        with pytest.raises(CommitOutcomeUnknown):
            db.run(submit, user_id=user)  # not idempotent: not retried
        killer.join()
        killer = kill_while_committing(conn)
        job = db.run(submit, user_id=user, idempotent=True)  # keyed: safe to run again
        killer.join()
        assert job is not None
        assert job.status == JobStatus.QUEUED
    assert value(conn, "select count(*) from jobs where idempotency_key = 'checkout-42'") == 1
    assert one(conn, "select credit_balance from users where id = %s", [user]) == {"credit_balance": 90}


def test_a_resubmitted_key_returns_the_first_job(conn: Conn, app: Database) -> None:
    user = make_user(conn)
    give_credits(conn, user, 100)
    snapshot = make_snapshot(conn, user)
    with app.transaction(user_id=user) as c:
        first = q.submit_job(c, user_id=user, workflow_snapshot_id=snapshot, credit_cost=10, idempotency_key="k")
    with app.transaction(user_id=user) as c:
        again = q.submit_job(c, user_id=user, workflow_snapshot_id=snapshot, credit_cost=10, idempotency_key="k")
    assert first is not None
    assert again == first  # updated_at included: locking the first job for the retry changes nothing
    assert one(conn, "select credit_balance from users where id = %s", [user]) == {"credit_balance": 90}
    assert value(conn, "select count(*) from job_nodes where job_id = %s", [first.id]) == len(
        value(conn, "select snapshot_data -> 'nodes' from workflow_snapshots where id = %s", [snapshot]))
    assert timedelta(0) <= datetime.now().astimezone() - first.created_at


# Found by a second look (review of the first version of this contract).

def test_cursors_prepared_statements_and_listens_do_not_cross_transactions(app_url: str, conn: Conn) -> None:
    a, b = make_user(conn), make_user(conn)
    make_dataset(conn, a, "a-secret")
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with db.transaction(user_id=a) as c:
            c.execute("declare leak cursor with hold for select name from datasets")
            c.execute("prepare mine as select 1")
            c.execute("prepare _pg3_0 as select 2")  # psycopg's own naming: would break its next prepare
            c.execute("listen chatter")
        with pytest.raises(QueryError) as gone, db.transaction(user_id=b) as c:
            c.execute("fetch all from leak")
        assert gone.value.sqlstate == "34000"  # invalid_cursor_name: the holdable cursor was closed
        with db.transaction(user_id=b) as c:
            assert c.execute("select count(*) from pg_prepared_statements where from_sql").fetchone() == (0,)
            assert c.execute("select count(*) from pg_listening_channels()").fetchone() == (0,)
            for _ in range(8):  # past psycopg's prepare threshold: its statements still work
                assert q.get_user(c, id=b) is not None


def test_what_a_block_changed_on_the_connection_object_is_restored(app_url: str, conn: Conn) -> None:
    user = make_user(conn)
    notices: list[str] = []
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        with db.transaction(user_id=user) as c:
            c.row_factory = psycopg.rows.dict_row
            c.prepare_threshold = 0
            c.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        with db.transaction(user_id=user) as c:
            assert c.execute("select 1").fetchone() == (1,)
            assert c.prepare_threshold == 5
            c.execute("do $$ begin raise notice 'for the next user'; end $$")
    assert notices == []


def test_a_block_that_ends_its_own_transaction_is_refused(app_url: str, conn: Conn) -> None:
    user = make_user(conn)
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        def commit_inside() -> None:
            with db.transaction(user_id=user) as c:
                q.create_dataset(c, user_id=user, name="half")
                c.commit()

        def close_inside() -> None:
            with db.transaction(user_id=user) as c:
                c.close()

        def stream_left_open() -> None:
            with db.transaction(user_id=user) as c:
                rows = c.cursor().stream("select generate_series(1, 100000)")
                next(rows)

        for block in (commit_inside, close_inside, stream_left_open):
            with pytest.raises(TransactionFailed):
                block()
        with db.transaction(user_id=user) as c:  # and the pool carries on
            assert q.get_user(c, id=user) is not None


def test_transaction_and_run_check_their_own_arguments(app_url: str) -> None:
    with Database(app_url, settings=SMALL) as db:
        for bad in ("not-a-uuid", "a\x00b", 0):
            with pytest.raises(InvalidInput) as refused, db.transaction(user_id=bad) as c:  # type: ignore[arg-type]
                c.execute("select 1")
            assert refused.value.parameter == "user_id"
        with pytest.raises(InvalidInput) as refused:
            db.run(lambda c: None, attempts=0)
        assert refused.value.parameter == "attempts"
    with pytest.raises(DatabaseUnavailable), db.transaction() as c:  # closed
        c.execute("select 1")
    with pytest.raises(DatabaseUnavailable):
        Database("", settings=SMALL)


def test_a_runtime_role_database_refuses_a_login_that_bypasses_row_level_security(db_url: str) -> None:
    with pytest.raises(DatabaseUnavailable) as refused:
        Database(settings=Settings(database_url=db_url, pool_min_size=1, pool_max_size=1))  # the superuser
    assert "automl_app" in str(refused.value)
    with Database(db_url, settings=SMALL) as explicit, explicit.transaction() as c:  # a URL given on purpose
        c.execute("select 1")


def test_values_every_reader_can_read_back(conn: Conn, app: Database, app_url: str) -> None:
    user = make_user(conn)
    job = make_job(conn, user)
    with pytest.raises(InvalidInput) as huge, app.transaction(user_id=user) as c:
        q.register_model(c, user_id=user, job_id=job, name="m", metrics={"rmse": 10**400})
    assert huge.value.parameter == "metrics"
    with as_role(app_url, user) as raw:
        for document in ('{"rmse": 1e400}', '{"n": ' + "9" * 5000 + "}"):
            with pytest.raises(psycopg.Error) as refused:
                raw.execute("insert into models (user_id, job_id, name, hyperparameters) values (%s, %s, 'm', %s)",
                            [user, job, document])
            assert refused.value.diag.constraint_name == "bounded_jsonb_numbers"
    with pytest.raises(psycopg.Error) as deep:
        conn.execute("insert into tutorials (slug, title, steps) values ('deep', 'D', %s)",
                     ["[" * 3000 + "]" * 3000])
    assert deep.value.diag.constraint_name == "bounded_jsonb_limits"


def test_reads_do_not_depend_on_the_sessions_date_style_or_time_zone(conn: Conn, app_url: str, db_url: str) -> None:
    user = make_user(conn)
    database = value(conn, "select current_database()")
    conn.execute(f'alter role automl_app in database "{database}" set datestyle = \'SQL, DMY\'')
    conn.execute(f'alter role automl_app in database "{database}" set timezone = \'Asia/Tokyo\'')
    with Database(app_url, settings=SMALL) as db, db.transaction(user_id=user) as c:
        account = q.get_user(c, id=user)
    assert account is not None
    assert account.created_at.utcoffset() == timedelta(0)


def test_a_cached_plan_invalidated_by_a_migration_is_retryable(app_url: str, conn: Conn) -> None:
    user = make_user(conn)
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1, prepare_threshold=0)) as db:
        with db.transaction(user_id=user) as c:
            q.get_user(c, id=user)
        conn.execute("alter table users add column nickname text")
        found = db.run(lambda c: q.get_user(c, id=user), user_id=user)
    assert found is not None


def test_what_is_read_is_written_back_as_it_was(conn: Conn, app: Database) -> None:
    user = make_user(conn)
    graph = {"nodes": [{"id": "a", "type": "model", "params": {"seed": None}, "checkpoint": None}], "edges": []}
    with app.transaction(user_id=user) as c:
        workflow = q.create_workflow(c, user_id=user, name="w", definition=graph)
        assert workflow is not None
        again = q.update_workflow_definition(c, user_id=user, id=workflow.id, definition=workflow.definition)
    assert again is not None
    stored = value(conn, "select definition from workflows where id = %s", [workflow.id])
    assert stored["nodes"][0] == graph["nodes"][0]


def test_a_label_from_the_future_reads_but_is_no_argument(conn: Conn, app: Database) -> None:
    user = make_user(conn)
    with pytest.raises(ValueError, match="ProblemType"):
        ProblemType.parse("forecast")
    assert ProblemType.parse("regression") is ProblemType.REGRESSION
    with pytest.raises(InvalidInput) as refused, app.transaction(user_id=user) as c:
        q.create_dataset(c, user_id=user, name="d", problem_type=ProblemType("forecast"))
    assert refused.value.parameter == "problem_type"


def test_an_error_at_the_end_of_a_block_always_means_nothing_committed(app_url: str, conn: Conn) -> None:
    """A block leaving a 1 ms statement_timeout makes the statements that end it race the timer. Whatever
    the race does, the error and the data must agree: refused means not committed, silent means committed."""
    user = make_user(conn)
    name = value(conn, "select full_name from users where id = %s", [user])
    with Database(app_url, settings=Settings(pool_min_size=1, pool_max_size=1)) as db:
        for n in range(300):
            try:
                with db.transaction(user_id=user) as c:
                    c.execute("update users set full_name = %s where id = %s", [f"n{n}", user])
                    c.execute("set statement_timeout = 1")
                name = f"n{n}"
            except Retryable:
                pass
            assert value(conn, "select full_name from users where id = %s", [user]) == name
        with db.transaction(user_id=user) as c:  # and the timeout never reaches the next block
            assert c.execute("show statement_timeout").fetchone() == ("0",)
