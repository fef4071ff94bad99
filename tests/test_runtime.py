"""The runtime around the queries: pool, transactions, user context, faults, async, codegen."""

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from automl_db import aqueries as aq
from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import AsyncDatabase, Database
from automl_db.errors import AlreadyExists, PoolTimeout, ReadOnlyTransaction, Retryable
from automl_db.replicas import Position
from automl_db.rows import UserTier
from automl_db.tools import codegen, embedded

SMALL = Settings(pool_min_size=1, pool_max_size=1, pool_timeout=1)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    with Database(db_url, settings=SMALL) as database:
        yield database


def current_user_setting(db: Database) -> str | None:
    with db.transaction() as conn:
        row = conn.execute("select current_setting('automl.user_id', true)").fetchone()
        return None if row is None else row[0]


def test_defaults_follow_the_seed_pool() -> None:
    settings = Settings()
    assert (settings.pool_min_size, settings.pool_max_size) == (20, 30)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_DB_POOL_MIN_SIZE", "3")
    monkeypatch.setenv("AUTOML_DB_POOL_MAX_SIZE", "7")
    monkeypatch.setenv("AUTOML_DB_POOL_TIMEOUT", "2.5")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@127.0.0.1/y")
    settings = Settings.from_env()
    assert (settings.pool_min_size, settings.pool_max_size, settings.pool_timeout, settings.database_url) == (
        3, 7, 2.5, "postgresql://x@127.0.0.1/y")


def test_user_setting_is_local_to_the_transaction(db: Database) -> None:
    user = uuid.uuid4()
    with db.transaction(user_id=user) as conn:
        row = conn.execute("select current_setting('automl.user_id')").fetchone()
        assert row == (str(user),)
    # The pool has one connection: the next transaction runs on the same one, and sees nothing.
    assert current_user_setting(db) in (None, "")
    with pytest.raises(RuntimeError), db.transaction(user_id=user):
        raise RuntimeError("rolled back")
    assert current_user_setting(db) in (None, "")


def test_transactions_commit_or_roll_back_whole(db: Database) -> None:
    def both_in_one_transaction() -> None:
        with db.transaction() as conn:
            q.sign_up(conn, email="one@example.com")
            q.sign_up(conn, email="ONE@example.com")

    with pytest.raises(AlreadyExists):
        both_in_one_transaction()
    with db.transaction() as conn:
        assert q.find_user_id(conn, email="one@example.com") is None
        q.sign_up(conn, email="one@example.com")
    with db.transaction() as conn:
        assert q.find_user_id(conn, email="one@example.com") is not None


def test_an_exhausted_pool_raises_within_its_timeout(db: Database) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(PoolTimeout) as caught, db.transaction():
            pass
        assert isinstance(caught.value, Retryable)
    finally:
        release.set()
        holder.join()
    with db.transaction() as conn:  # and the pool serves again once the connection is back
        assert conn.execute("select 1").fetchone() == (1,)


def test_killed_backends_are_replaced_before_use(db_url: str, server_url: str) -> None:
    with Database(db_url, settings=Settings(pool_min_size=3, pool_max_size=3, pool_timeout=5)) as db:
        db.pool.wait()
        with psycopg.connect(server_url, autocommit=True) as admin:
            killed = admin.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity"
                                   " where datname = current_database() and pid <> pg_backend_pid()"
                                   " and datname = %s", [psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]])
        assert killed is not None
        for _ in range(5):  # every pooled connection was dead; each is checked and replaced
            with db.transaction() as conn:
                assert conn.execute("select 1").fetchone() == (1,)


def test_a_server_restart_is_survived(tmp_path: Path) -> None:
    """A private embedded server restarted under live pools: while it is down a call fails with a
    typed, retryable error within the pool timeout; the first call after it is back succeeds."""
    data_dir = tmp_path / "pg"
    url = embedded.start(data_dir)
    try:
        with Database(url, settings=Settings(pool_min_size=2, pool_max_size=2, pool_timeout=10)) as db, \
                Database(url, settings=Settings(pool_min_size=1, pool_max_size=1, pool_timeout=1)) as impatient:
            with db.transaction() as conn:
                conn.execute("create table t (n int)")
            db.pool.wait()
            embedded.stop(data_dir)
            with pytest.raises(Retryable), impatient.transaction() as conn:
                conn.execute("insert into t values (1)")
            embedded.start(data_dir)
            with db.transaction() as conn:  # its pooled connections died with the server
                conn.execute("insert into t values (2)")
                assert conn.execute("select array_agg(n) from t").fetchone() == ([2],)
    finally:
        embedded.stop(data_dir)


def test_async_api(db_url: str) -> None:
    async def scenario() -> None:
        async with await AsyncDatabase.connect(db_url, settings=SMALL) as db:
            async with db.transaction() as conn:
                user = await aq.sign_up(conn, email="async@example.com", full_name="A")
                assert user is not None
            async with db.transaction(user_id=user.id) as conn:
                fetched = await aq.get_user(conn, id=user.id)
                assert fetched == user
                assert fetched.tier == UserTier.FREE
                row = await (await conn.execute("select current_setting('automl.user_id')")).fetchone()
                assert row == (str(user.id),)
            with pytest.raises(AlreadyExists):
                async with db.transaction() as conn:
                    await aq.sign_up(conn, email="ASYNC@example.com")

    asyncio.run(scenario())


def test_codegen_reports_a_query_that_does_not_prepare(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "broken.sql").write_text("-- name: broken(id)^\n-- Reads a table that is not there.\n"
                                         "select * from no_such_table where id = :id;\n")
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        with pytest.raises(codegen.CodegenError) as caught:
            codegen.load_queries(conn, catalog, source=tmp_path)
    assert str(caught.value) == f'{tmp_path / "broken.sql"}:3: broken: relation "no_such_table" does not exist'


def test_codegen_reads_types_and_nullability_from_the_catalog(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        loaded = {query.name: query for query in codegen.load_queries(conn, catalog)}
    listing = {c.name: c for c in loaded["list_datasets"].columns}
    assert (listing["name"].annotation, listing["name"].nullable) == ("str", False)
    assert listing["current_version_number"].nullable  # the nullable side of a left join
    assert (listing["problem_type"].annotation, listing["problem_type"].nullable) == ("ProblemType", True)
    assert loaded["list_jobs"].optional == {"before_created_at", "before_id"}
    assert loaded["list_jobs"].param_types["before_created_at"] == "AwareDatetime"
    assert loaded["create_workflow"].param_types["definition"] == "JsonParam"
    assert loaded["submit_job"].param_types["credit_cost"] == "Int4"



@pytest.mark.parametrize("replica", [True, False], ids=["replica", "primary"])
def test_a_read_block_never_commits_a_write(db_url: str, replica: bool) -> None:
    """Pooled connections are autocommit: a COMMIT inside a read block ends its read-only
    transaction, and what follows must still be read-only, on a replica URL naming a writable
    server (the promoted node after a failover) as on the primary."""
    email = f"escape-{uuid.uuid4().hex[:8]}@example.com"
    settings = Settings(pool_min_size=1, pool_max_size=2)
    with Database(db_url, settings=settings, replicas=[db_url] if replica else []) as db:
        with pytest.raises(ReadOnlyTransaction), db.read() as conn:  # noqa: PT012 - the block escapes its transaction
            conn.execute("commit")
            conn.execute("insert into users (email) values (%s)", [email])
        with db.transaction() as conn:  # the guard ended with the block
            assert conn.execute("select count(*) from users where email = %s", [email]).fetchone() == (0,)
            assert conn.execute("show default_transaction_read_only").fetchone() == ("off",)


def test_a_cancelled_read_waiting_for_replay_gives_its_connection_back(db_url: str) -> None:
    settings = Settings(pool_min_size=1, pool_max_size=2, pool_timeout=2, replica_wait_timeout=3)
    unreachable = Position(1 << 60)  # a position the "replica" (the same server) will not reach in time

    async def scenario() -> tuple[int, float]:
        async with await AsyncDatabase.connect(db_url, settings=settings, replicas=[db_url]) as db:
            async def read() -> None:
                async with db.read(after=unreachable) as conn:
                    await conn.execute("select 1")

            for _ in range(3):  # more than the replica's pool holds
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(read(), 0.2)
            started = asyncio.get_running_loop().time()
            async with db.read() as conn:
                await conn.execute("select 1")
            return db.replicas[0].pool.get_stats().get("pool_available", 0), \
                asyncio.get_running_loop().time() - started

    available, took = asyncio.run(scenario())
    assert took < 1.0  # not replica_wait_timeout: the replica's pool had its connections back
    assert available >= 1
