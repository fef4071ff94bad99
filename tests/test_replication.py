"""Replicas and failover on PostgreSQL's own streaming replication, on a real primary and hot standby
(tests/cluster.py: the embedded server's binaries, `pg_basebackup -R`, a replication slot).

These tests start their own servers from the embedded PostgreSQL 18 binaries, so they run the same
whether the rest of the suite uses DATABASE_URL or not. Every figure they measure is printed (run
with -s to see it); they bound only what the issue asks to bound, and generously.
"""

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from automl_db import queries as q
from automl_db.config import Settings, split_urls
from automl_db.database import AsyncDatabase, Database
from automl_db.errors import ReadOnlyTransaction, ReplicaBehind, Retryable
from automl_db.replicas import REPLAYED, Position, Receipt
from tests import failover
from tests.cluster import Pair, bin_dir, pair

SMALL = Settings(pool_min_size=1, pool_max_size=2, pool_timeout=10)
LEDGER_POST = ("insert into credit_transactions (user_id, type, amount, description)"
               " values (%s, 'adjustment', 1, %s) returning entry_number")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Pair]:
    """One primary and standby (asynchronous replication) for the tests that leave them running."""
    with pair() as built:
        yield built


def where(conn: psycopg.Connection[Any]) -> tuple[int, bool]:
    """The port of the server the transaction runs on, and whether that server is a standby."""
    row = conn.execute("select inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def new_user(cluster: Pair) -> uuid.UUID:
    with psycopg.connect(cluster.primary.url(), autocommit=True) as conn:
        row = conn.execute("insert into users (email) values ('r' || gen_random_uuid() || '@example.com')"
                           " returning id").fetchone()
    assert row is not None
    cluster.catch_up()
    return uuid.UUID(str(row[0]))


def last_entry(conn: psycopg.Connection[Any], user: uuid.UUID) -> int:
    row = conn.execute("select coalesce(max(entry_number), 0) from credit_transactions where user_id = %s",
                       [user]).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def replay_paused(cluster: Pair) -> Iterator[Callable[[], None]]:
    """The standby stops replaying (it still receives WAL) until the yielded function resumes it."""
    def resume() -> None:
        with psycopg.connect(cluster.standby.url(), autocommit=True) as conn:
            conn.execute("select pg_wal_replay_resume()")

    with psycopg.connect(cluster.standby.url(), autocommit=True) as conn:
        conn.execute("select pg_wal_replay_pause()")
        while conn.execute("select pg_get_wal_replay_pause_state()").fetchone() != ("paused",):
            time.sleep(0.01)
    try:
        yield resume
    finally:
        resume()


def test_replica_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_DB_REPLICA_URLS", "postgresql://a@r1:5432,r2:5433/db?target_session_attrs=standby, "
                                                 "postgres://b@r3/db")
    monkeypatch.setenv("AUTOML_DB_REPLICA_WAIT_TIMEOUT", "2.5")
    monkeypatch.setenv("AUTOML_DB_REPLICA_RETRY_AFTER", "7")
    settings = Settings.from_env()
    # One URL's own host list stays whole; a comma before a new URL separates.
    assert settings.replica_urls == ("postgresql://a@r1:5432,r2:5433/db?target_session_attrs=standby",
                                     "postgres://b@r3/db")
    assert (settings.replica_wait_timeout, settings.replica_retry_after) == (2.5, 7.0)
    assert split_urls("") == ()
    monkeypatch.delenv("AUTOML_DB_REPLICA_URLS")
    assert Settings().replica_urls == ()


def test_a_position_reads_and_writes_postgresql_notation() -> None:
    position = Position.parse("00000002:16/B374D848")
    assert (position.lsn, position.timeline) == (0x16B374D848, 2)
    assert str(position) == "00000002:16/B374D848"
    assert Position.parse(str(position)) == position
    bare = Position.parse("16/B374D848")  # PostgreSQL's own notation: timeline unknown
    assert (bare.lsn, bare.timeline, str(bare)) == (0x16B374D848, 0, "16/B374D848")
    assert position.pg_lsn == "16/B374D848"
    for text in ("16-B374D848", "2:", "x:1/0", "123456789:1/0"):
        with pytest.raises(ValueError, match="not a WAL position"):
            Position.parse(text)


def test_a_position_is_reached_only_on_its_own_timeline() -> None:
    after = Position.parse("00000002:0/5000")
    assert after.reached_by(Position.parse("00000002:0/5000"))
    assert after.reached_by(Position.parse("00000002:1/0"))
    assert not after.reached_by(Position.parse("00000002:0/4FFF"))
    # further along in LSN, but on the timeline the failover left behind, or on a later one whose
    # fork point is not known here: not reached
    assert not after.reached_by(Position.parse("00000001:9/0"))
    assert not after.reached_by(Position.parse("00000003:9/0"))
    # a bare LSN names no timeline: any server past it
    assert Position.parse("0/5000").reached_by(Position.parse("00000007:0/5000"))


def test_reads_run_on_the_standby_and_writes_on_the_primary(cluster: Pair) -> None:
    user = new_user(cluster)
    primary, standby = cluster.primary.port, cluster.standby.port
    with Database(cluster.app_url(cluster.primary), settings=SMALL,
                  replicas=[cluster.app_url(cluster.standby)]) as db:
        with db.transaction(user_id=user) as conn:
            assert where(conn) == (primary, False)
        with db.transaction(user_id=user, read_only=True) as conn:  # read_only alone stays on the primary
            assert where(conn) == (primary, False)
        with db.read(user_id=user) as conn:
            assert where(conn) == (standby, True)
            found = q.get_user(conn, id=user)  # the typed queries and row-level security, on the standby
            assert found is not None
            assert found.id == user
            assert conn.execute("select count(*) from users").fetchone() == (1,)
        with db.read() as conn:  # acting for nobody: row-level security shows no account
            assert where(conn) == (standby, True)
            assert conn.execute("select count(*) from users").fetchone() == (0,)
        # The runtime role hands back a position and waits for it (run() fills the receipt too).
        receipt = Receipt()
        dataset = db.run(lambda conn: q.create_dataset(conn, user_id=user, name="replicated"), user_id=user,
                         receipt=receipt)
        assert dataset is not None
        assert receipt.position is not None
        with db.read(user_id=user, after=receipt.position, fallback=False) as conn:
            assert where(conn) == (standby, True)
            assert q.get_dataset(conn, user_id=user, id=dataset.id) == dataset
    with Database(cluster.app_url(cluster.primary), settings=SMALL) as alone, alone.read(user_id=user) as conn:
        assert where(conn) == (primary, False)  # no replica configured: reads run on the primary


def test_the_standby_refuses_writes_with_a_typed_error(cluster: Pair) -> None:
    primary, standby = cluster.primary.port, cluster.standby.port
    with Database(cluster.standby.url(), settings=SMALL) as on_standby:
        with pytest.raises(ReadOnlyTransaction) as refused, on_standby.transaction() as conn:
            conn.execute("insert into users (email) values ('standby@example.com')")
        assert refused.value.sqlstate == "25006"
        assert str(refused.value) == "cannot execute INSERT in a read-only transaction"
    with Database(cluster.primary.url(), settings=SMALL, replicas=[cluster.standby.url()]) as db:
        with pytest.raises(ReadOnlyTransaction), db.read() as conn:
            conn.execute("insert into users (email) values ('read@example.com')")
        with db.transaction() as conn:  # the pool carries on
            assert where(conn) == (primary, False)
    # Standby first in a multi-host URL: libpq passes it over for the one that accepts writes.
    url = f"postgresql://postgres@127.0.0.1:{standby},127.0.0.1:{primary}/automl?target_session_attrs=read-write"
    with Database(url, settings=SMALL) as multi, multi.transaction() as conn:
        assert where(conn) == (primary, False)


def test_read_your_writes_waits_for_the_replay_then_falls_back(cluster: Pair) -> None:
    user = new_user(cluster)
    primary, standby = cluster.primary.port, cluster.standby.port
    impatient = SMALL.model_copy(update={"replica_wait_timeout": 0.5})
    with Database(cluster.primary.url(), settings=impatient, replicas=[cluster.standby.url()]) as db, \
            Database(cluster.primary.url(), settings=SMALL.model_copy(update={"replica_wait_timeout": 120}),
                     replicas=[cluster.standby.url()]) as patient, replay_paused(cluster) as resume:
        receipt = Receipt()
        with db.transaction(receipt=receipt) as conn:
            entry = conn.execute(LEDGER_POST, [user, "ryw"]).fetchone()
        assert entry is not None
        assert receipt.position is not None

        with db.read() as conn:  # no position: the standby answers at once, without the entry
            assert where(conn) == (standby, True)
            assert last_entry(conn, user) < entry[0]
        started = time.monotonic()
        with pytest.raises(ReplicaBehind) as behind, db.read(after=receipt.position, fallback=False):
            pytest.fail("a read that may not fall back ran although the standby is behind")
        waited = time.monotonic() - started
        assert waited >= impatient.replica_wait_timeout  # it waited its whole bound first
        assert isinstance(behind.value, Retryable)
        assert behind.value.position == receipt.position
        assert not receipt.position.reached_by(behind.value.replayed)
        assert behind.value.replayed.lsn < receipt.position.lsn
        with db.read(after=receipt.position) as conn:  # allowed to fall back: the primary answers
            assert where(conn) == (primary, False)
            assert last_entry(conn, user) == entry[0]

        timer = threading.Timer(0.3, resume)
        timer.start()
        started = time.monotonic()
        with patient.read(after=receipt.position, fallback=False) as conn:
            assert where(conn) == (standby, True)
            assert last_entry(conn, user) == entry[0]
        timer.join()
        print(f"\nread-your-writes: gave up after {waited:.3f}s; waited {time.monotonic() - started:.3f}s"
              " for the standby to resume (0.3s) and replay")


def test_read_your_writes_holds_under_a_concurrent_ledger_load(cluster: Pair, tmp_path: Path) -> None:
    """pgbench posts ledger entries to 50 other accounts on the primary while a client, 300 times, posts
    an entry and reads it back from the standby with its position and no fallback: every read runs
    on the standby and sees its entry. A read without the position, just before, shows how often the
    standby had not replayed it yet."""
    user = new_user(cluster)
    with psycopg.connect(cluster.primary.url(), autocommit=True) as conn:
        conn.execute("insert into users (id, email)"
                     " select ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid,"
                     " 'load' || n || '@example.com' from generate_series(1, 50) n on conflict do nothing")
    script = tmp_path / "ledger.sql"
    script.write_text("\\set u random(1, 50)\n"
                      "insert into credit_transactions (user_id, type, amount, description) values"
                      " (('00000000-0000-0000-0000-' || lpad(:u::text, 12, '0'))::uuid, 'adjustment', 1, 'load');\n")
    load = subprocess.Popen([str(bin_dir() / "pgbench"), "-n", "-c", "2", "-j", "2", "-T", "600", "-f", str(script),
                             cluster.primary.url()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stale = 0
    rounds = 300
    # generous: a busy shared machine must not fail this
    settings = SMALL.model_copy(update={"replica_wait_timeout": 30})
    try:
        time.sleep(0.5)
        assert load.poll() is None, load.communicate()
        with Database(cluster.primary.url(), settings=settings, replicas=[cluster.standby.url()]) as db:
            started = time.monotonic()
            for i in range(rounds):
                receipt = Receipt()
                with db.transaction(receipt=receipt) as conn:
                    row = conn.execute(LEDGER_POST, [user, f"ryw {i}"]).fetchone()
                assert row is not None
                assert receipt.position is not None
                with db.read() as conn:
                    stale += last_entry(conn, user) < row[0]
                with db.read(after=receipt.position, fallback=False) as conn:
                    assert where(conn) == (cluster.standby.port, True)
                    assert last_entry(conn, user) == row[0]
            elapsed = time.monotonic() - started
    finally:
        load.terminate()
        load.wait(timeout=30)
    with psycopg.connect(cluster.primary.url(), autocommit=True) as conn:
        loaded = conn.execute("select count(*) from credit_transactions where description = 'load'").fetchone()
        assert conn.execute("select * from check_integrity()").fetchall() == []
    assert loaded is not None
    assert loaded[0] > rounds
    cluster.catch_up()
    with psycopg.connect(cluster.standby.url(), autocommit=True) as conn:
        assert conn.execute("select * from check_integrity()").fetchall() == []
    print(f"\nread-your-writes under load: {rounds} reads on the standby saw their entry in {elapsed:.1f}s,"
          f" {loaded[0]} load entries alongside; without the position {stale} of {rounds} reads were stale")


def test_a_replica_that_cannot_be_reached_is_left_out_until_it_is_back() -> None:
    with pair() as fresh:
        settings = SMALL.model_copy(update={"replica_wait_timeout": 0.5, "replica_retry_after": 5})
        with Database(fresh.primary.url(), settings=settings, replicas=[fresh.standby.url()]) as db:
            replica = db.replicas[0]
            with db.read() as conn:
                assert where(conn) == (fresh.standby.port, True)
            fresh.standby.stop()
            with db.read() as conn:  # its connection died with it: the read falls back to the primary
                assert where(conn) == (fresh.primary.port, False)
            asked = replica.pool.get_stats()["requests_num"]
            with db.read() as conn:  # left out now: not even asked for a connection
                assert where(conn) == (fresh.primary.port, False)
            assert replica.pool.get_stats()["requests_num"] == asked
            with pytest.raises(Retryable), db.read(fallback=False):  # a read that insists on a replica
                pytest.fail("ran without a replica")

            fresh.standby.start()
            fresh.wait_streaming()
            deadline = time.monotonic() + 120  # the pool reconnects with backoff (1 s, 2 s, 4 s...)
            while True:
                with db.read() as conn:
                    if where(conn) == (fresh.standby.port, True):
                        break
                assert time.monotonic() < deadline, "reads never came back to the restarted standby"
                time.sleep(0.2)


def test_the_async_twin_routes_and_waits_the_same_way(cluster: Pair) -> None:
    primary, standby = cluster.primary.port, cluster.standby.port

    async def on(conn: psycopg.AsyncConnection[Any]) -> tuple[int, bool]:
        row = await (await conn.execute("select inet_server_port(), pg_is_in_recovery()")).fetchone()
        assert row is not None
        return int(row[0]), bool(row[1])

    async def scenario(resume: Callable[[], None]) -> None:
        settings = SMALL.model_copy(update={"replica_wait_timeout": 0.5})
        async with await AsyncDatabase.connect(cluster.primary.url(), settings=settings,
                                               replicas=[cluster.standby.url()]) as db:
            receipt = Receipt()
            async with db.transaction(receipt=receipt) as conn:
                assert await on(conn) == (primary, False)
                await conn.execute("insert into users (email) values ('async-ryw@example.com')")
            assert receipt.position is not None
            with pytest.raises(ReplicaBehind):  # replay is paused
                async with db.read(after=receipt.position, fallback=False):
                    pytest.fail("ran on a standby that is behind")
            async with db.read(after=receipt.position) as conn:
                assert await on(conn) == (primary, False)
            resume()
            async with db.read(after=receipt.position, fallback=False) as conn:
                assert await on(conn) == (standby, True)
                count = await (await conn.execute(
                    "select count(*) from users where email = 'async-ryw@example.com'")).fetchone()
                assert count == (1,)

    with replay_paused(cluster) as resume:
        asyncio.run(scenario(resume))


def test_failover_loses_no_acknowledged_entry_with_synchronous_replication() -> None:
    """Writers post ledger entries through a Database on the multi-host URL; the primary is killed
    with SIGKILL and the standby promoted. The writers see only Retryable or CommitOutcomeUnknown in
    between (a connection found dead at BEGIN is replaced without an error), writes resume on the
    promoted node without a configuration change, and every entry that was acknowledged is there."""
    with pair(synchronous=True) as fresh:
        result = failover.run(fresh)
        # The replica URL now names the promoted node: its own WAL counts as replayed.
        with Database(fresh.multi_host_url(), settings=SMALL, replicas=[fresh.standby.url()]) as db:
            receipt = Receipt()
            with db.transaction(receipt=receipt) as conn:
                assert where(conn) == (fresh.standby.port, False)
            assert receipt.position is not None
            with db.read(after=receipt.position, fallback=False) as conn:
                assert where(conn) == (fresh.standby.port, False)
    print(f"\nfailover: promoted {result.promoted_after:.3f}s after the SIGKILL, writes acknowledged again after"
          f" {result.writes_after:.3f}s; {len(result.before)} entries before, {len(result.after)} after;"
          f" interrupted: {dict(result.interrupted)}")
    assert result.unexpected == []  # only Retryable or CommitOutcomeUnknown, for what was in flight
    assert result.before
    assert {port for _, port in result.before} == {fresh.primary.port}
    assert result.after
    assert {port for _, port in result.after} == {fresh.standby.port}
    assert result.writes_after < 60  # measured about 1 s: psycopg_pool's first reconnect backoff
    assert result.lost == []
    assert result.broken == []


def test_a_standby_left_on_the_old_timeline_serves_no_read_that_asked_for_a_position() -> None:
    """After a failover, a second standby that had replayed the old primary's WAL past the point the
    promoted node forked from cannot follow the new timeline, yet reports a larger replay LSN than
    the new primary's next commits: it must not count as caught up with them."""
    from tests.cluster import Node, _free_port, _run

    settings = Settings(pool_min_size=1, pool_max_size=2, pool_timeout=10, replica_wait_timeout=1)
    with pair() as p:
        stale = Node("automl_standby2", p.workdir / "standby2", _free_port())
        _run("pg_basebackup", "--pgdata", str(stale.data_dir), "--write-recovery-conf", "--checkpoint=fast",
             "--wal-method=stream", "--create-slot", "--slot=standby2",
             "--dbname", f"host=127.0.0.1 port={p.primary.port} user=postgres", cwd=p.workdir)
        stale.start()
        try:
            p.catch_up()
            with psycopg.connect(p.standby.url(), autocommit=True) as c:  # the node to be promoted lags
                c.execute("alter system set primary_conninfo = ''")
                c.execute("select pg_reload_conf()")
                while c.execute("select count(*) from pg_stat_wal_receiver").fetchone() != (0,):
                    time.sleep(0.1)
            with psycopg.connect(p.primary.url(), autocommit=True) as c:  # the other standby gets ahead
                for i in range(2):
                    c.execute("insert into users (email) values (%s)", [f"old{i}-{uuid.uuid4().hex[:6]}@example.com"])
                    c.execute("select pg_switch_wal()")
                c.execute("insert into users (email) values ('lost-in-failover@example.com')")
                target = c.execute("select pg_current_wal_insert_lsn()::text").fetchone()
            with psycopg.connect(stale.url(), autocommit=True) as c:
                while c.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", target).fetchone() != (True,):
                    time.sleep(0.05)
            p.primary.kill()
            p.standby.promote()
            with Database(p.standby.url(), settings=settings, replicas=[stale.url()]) as db:
                receipt = Receipt()
                with db.transaction(receipt=receipt) as conn:
                    conn.execute("insert into users (email) values ('mine@example.com')")
                assert receipt.position is not None
                assert receipt.position.timeline == 2
                with db.read() as conn:  # the stale standby is up, and ahead in LSN
                    assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
                    ahead = Position.parse(conn.execute(f"select {REPLAYED}").fetchone()[0])  # type: ignore[index]
                    assert ahead.lsn > receipt.position.lsn
                    assert ahead.timeline == 1
                with pytest.raises(ReplicaBehind), db.read(after=receipt.position, fallback=False):
                    pass
                with db.read(after=receipt.position) as conn:  # falls back to the promoted primary
                    assert conn.execute(
                        "select pg_is_in_recovery(), count(*) filter (where email = 'mine@example.com'),"
                        " count(*) filter (where email = 'lost-in-failover@example.com') from users").fetchone() \
                        == (False, 1, 0)
        finally:
            stale.stop()
