"""Behind PgBouncer in transaction mode: many clients share 4 server connections, one transaction at
a time. Row-level security must still follow each transaction, every query must get its own rows,
and what one client leaves in a server session must not reach another."""

import threading
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import Retryable
from tests.helpers import give_credits, make_dataset, make_user

Conn = psycopg.Connection[DictRow]
POOLED = Settings(pool_min_size=2, pool_max_size=8, pool_timeout=30, prepare_threshold=None)


def test_tenants_interleaved_on_shared_server_connections_see_only_their_rows(
        conn: Conn, app_url: str, through_pgbouncer: Callable[[str], str]) -> None:
    users = [make_user(conn) for _ in range(4)]
    datasets = {user: {make_dataset(conn, user, f"d{n}") for n in range(n + 1)} for n, user in enumerate(users)}
    for n, user in enumerate(users):
        give_credits(conn, user, 10 * (n + 1))
    failures: list[str] = []

    with Database(through_pgbouncer(app_url), settings=POOLED) as db:
        def tenant(user: uuid.UUID, balance: int) -> None:
            for _ in range(60):  # past psycopg's prepare threshold many times over
                with db.transaction(user_id=user) as c:
                    if {d.id for d in q.list_datasets(c, user_id=user)} != datasets[user]:
                        failures.append(f"{user}: wrong datasets")
                    account = q.get_user(c, id=user)
                    if account is None or account.id != user or q.get_balance(c, user_id=user) != balance:
                        failures.append(f"{user}: wrong account")
                    if c.execute("select count(*) from users").fetchone() != (1,):
                        failures.append(f"{user}: sees other accounts")

        def careless() -> None:  # leaves a session-level tenant (and timeout) on whatever server it lands
            for _ in range(60):
                # Its own end may outlast the 1 ms it set itself (then it is cancelled, and rolled back):
                # that is its own business. Nobody else's transaction may feel it.
                with suppress(Retryable), db.transaction(user_id=users[0]) as c:
                    c.execute("select set_config('automl.user_id', %s, false)", [str(users[0])])
                    c.execute("set statement_timeout = 1")

        def nobody() -> None:
            for _ in range(60):
                with db.transaction() as c:
                    if c.execute("select count(*) from users").fetchone() != (0,):
                        failures.append("a transaction acting for nobody saw an account")
                    c.execute("select pg_sleep(0.002)")  # would trip a leaked 1 ms statement timeout

        threads = [threading.Thread(target=tenant, args=(user, 10 * (n + 1))) for n, user in enumerate(users)]
        threads += [threading.Thread(target=careless), threading.Thread(target=nobody), threading.Thread(target=nobody)]
        errors: list[BaseException] = []

        def guarded(target: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                try:
                    target()
                except BaseException as exc:
                    errors.append(exc)
            return run

        threads = [threading.Thread(target=guarded(t.run)) for t in threads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert errors == []
    assert failures == []


def test_a_statement_timeout_holds_through_the_pooler(app_url: str, through_pgbouncer: Callable[[str], str]) -> None:
    settings = Settings(pool_min_size=1, pool_max_size=1, prepare_threshold=None, statement_timeout_ms=100)
    with Database(through_pgbouncer(app_url), settings=settings) as db:
        with pytest.raises(Retryable) as timed_out, db.transaction() as c:
            c.execute("select pg_sleep(2)")
        assert timed_out.value.sqlstate == "57014"
        with db.transaction() as c:
            assert c.execute("show statement_timeout").fetchone() == ("100ms",)
