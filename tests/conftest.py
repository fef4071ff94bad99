"""Test databases: one template built by the migrations per session, one clone of it per test.

The server is DATABASE_URL when set, else the embedded one. Each test gets a fresh database
(CREATE DATABASE ... TEMPLATE), so tests are isolated and cheap, and every test ends with
check_integrity() returning nothing unless it is marked `drift` (it breaks rules on purpose).

Every database a run creates is dropped again whatever happens: a test or fixture that fails, a
Ctrl-C (pytest tears the session's fixtures down on KeyboardInterrupt). Their names carry the
run's process id (automl_db.tools.scratch), so a run also drops what earlier runs left behind when they
were killed outright, and leaves alone the databases of a run still going on the same server.

`conn` / `db_url` connect as the server's superuser: the schema's rules hold for every client, so
the rule tests write as the most privileged one. The typed API, the demo and the security tests
connect as automl_app (`app_url`), automl_worker, automl_billing and automl_readonly.
"""

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from automl_db.errors import AutomlDbError
from automl_db.tools import migrate, scratch
from automl_db.urls import enable_local_logins, resolve_url, with_user
from tests import pgbouncer

_clone_numbers = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "drift: the test corrupts data behind the triggers; skip the final audit")


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


def _after_copy(url: str) -> None:
    """Database-level privileges are not copied from a template: grant them again."""
    with _admin(url) as conn:
        conn.execute("select automl.apply_database_privileges()")


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    url = scratch.create(server_url, name, template=template)
    if template:
        _after_copy(url)
    return url


def drop_database(server_url: str, name: str) -> None:
    scratch.drop(server_url, name)


@pytest.fixture(scope="session")
def server_url() -> str:
    """Any database on the test server; used to create and drop the others. An unreachable server
    stops the whole run at once, in one line, instead of failing every test."""
    try:
        url = resolve_url()
        psycopg.connect(url, connect_timeout=5).close()
    except (AutomlDbError, psycopg.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.exit(f"cannot reach the test server: {first}", returncode=2)
    scratch.drop_leftovers(url)  # of earlier runs that were killed before they could clean up
    return url


@contextmanager
def scratch_database(server_url: str, kind: str, suffix: str | int | None = None,
                     template: str | None = None) -> Iterator[str]:
    """A scratch database of this process (automl_db.tools.scratch.database), dropped on the way
    out, however the way out is taken: also when creating it or the code using it fails or is
    interrupted. A copy of a template gets its database-level privileges again."""
    with scratch.database(kind, suffix=suffix, server_url=server_url, template=template) as url:
        if template:
            _after_copy(url)
        yield url


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    with scratch_database(server_url, "tpl") as url:
        migrate.apply(url)
        enable_local_logins(server_url)
        yield scratch.scratch_name("tpl")


@pytest.fixture
def db_url(server_url: str, template_name: str, request: pytest.FixtureRequest) -> Iterator[str]:
    broken: list[tuple[object, ...]] = []
    with scratch_database(server_url, "t", next(_clone_numbers), template_name) as url:
        yield url
        if request.node.get_closest_marker("drift") is None:
            with psycopg.connect(url) as conn:
                broken = conn.execute("select * from check_integrity()").fetchall()
    assert broken == [], f"check_integrity() after the test: {broken}"


@pytest.fixture
def app_url(db_url: str) -> str:
    """The test's database as automl_app, the runtime role: row-level security applies."""
    return with_user(db_url, "automl_app")


@pytest.fixture
def worker_url(db_url: str) -> str:
    return with_user(db_url, "automl_worker")


@pytest.fixture
def billing_url(db_url: str) -> str:
    return with_user(db_url, "automl_billing")


@pytest.fixture
def readonly_url(db_url: str) -> str:
    return with_user(db_url, "automl_readonly")


@pytest.fixture(scope="session")
def through_pgbouncer(server_url: str) -> Iterator[Callable[[str], str]]:
    """Turns a test database's URL into the same database through a real PgBouncer in transaction
    mode (started once per session)."""
    if not pgbouncer.installed():
        pytest.skip("PgBouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)")
    with pgbouncer.running(server_url) as through:
        yield through


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[DictRow]]:
    """An autocommit connection to the test's own database: each statement is its own transaction."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c
