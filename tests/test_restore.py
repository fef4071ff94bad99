"""A DBA's dump and restore, with the server's own binaries: pg_dump -Fc of a database holding the
demo's data, restored whole into an empty database and data-only into a migrated one. The copy
must hold the same rows and catalog, audit clean, and keep enforcing the rules."""

import io
import re
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.tools import demo, migrate
from automl_db.tools.embedded import binary
from tests.catalog import snapshot
from tests.conftest import scratch_database

SMALL = Settings(pool_min_size=1, pool_max_size=2)
#: Tables a migrated database already fills: yoyo's bookkeeping (everything in public) and the
#: reference rows of the post-apply layer (schema/post/930_reference_data.sql).
REFERENCE_TABLES = ("tier_limits", "credit_packages", "tutorials")


@pytest.fixture
def demo_db(db_url: str, app_url: str, worker_url: str, billing_url: str) -> str:
    """The test database with the demo's story in it (every table gets rows)."""
    with Database(db_url, settings=SMALL) as admin, admin.transaction() as c:
        q.seed_reference_data(c)
    with (Database(app_url, settings=SMALL) as app, Database(worker_url, settings=SMALL) as workers,
          Database(billing_url, settings=SMALL) as billing, redirect_stdout(io.StringIO())):
        demo.story(app, workers, billing)
    return db_url


@pytest.fixture
def target(server_url: str) -> Iterator[str]:
    with scratch_database(server_url, "t", "restored") as url:
        yield url


def run(program: str, url: str, *args: str) -> None:
    major = psycopg.connect(url).info.server_version // 10000
    result = subprocess.run([binary(program, major), *args], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def contents(url: str) -> dict[str, list[Any]]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "select relname from pg_class where relnamespace = 'automl'::regnamespace and relkind = 'r'")]
        return {t: sorted(map(repr, conn.execute(sql.SQL("select * from {}").format(sql.Identifier("automl", t)))))
                for t in tables}


def assert_alive(url: str) -> None:
    """The copy audits clean and its rules still run: the ledger numbers on and stays append-only."""
    with psycopg.connect(url, autocommit=True) as conn:
        # Database settings and privileges (its search_path, TEMPORARY) are not in a plain dump.
        conn.execute("select automl.apply_database_privileges()")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select * from check_integrity()").fetchall() == []
        user, last = conn.execute("select id, last_entry_number from users where last_entry_number > 0"
                                  " limit 1").fetchone() or (None, None)
        assert user is not None
        entry = conn.execute("insert into credit_transactions (user_id, type, amount) values (%s, 'adjustment', 1)"
                             " returning entry_number", [user]).fetchone()
        assert entry == (last + 1,)
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("delete from credit_transactions where user_id = %s", [user])
        assert refused.value.sqlstate == "AM004"
        assert conn.execute("select * from check_integrity()").fetchall() == []


def test_a_dump_restores_whole_into_an_empty_database(demo_db: str, target: str, tmp_path: Path) -> None:
    dump = tmp_path / "automl.dump"
    run("pg_dump", demo_db, "--format=custom", f"--file={dump}", f"--dbname={demo_db}")
    run("pg_restore", target, "--exit-on-error", f"--dbname={target}", str(dump))
    with psycopg.connect(target, autocommit=True) as conn:  # the README's step after a whole restore
        conn.execute("select automl.apply_database_privileges()")
    assert contents(target) == contents(demo_db)
    assert snapshot(target) == snapshot(demo_db)
    assert_alive(target)


def test_a_dump_restores_data_only_into_a_migrated_database(demo_db: str, target: str, tmp_path: Path) -> None:
    """The README's data-only procedure: migrate the target, leave out what migrations filled, restore
    with triggers off (the rows carry their balances and numbers), audit."""
    dump, listing = tmp_path / "automl.dump", tmp_path / "restore.list"
    run("pg_dump", demo_db, "--format=custom", f"--file={dump}", f"--dbname={demo_db}")
    migrate.apply(target)
    major = psycopg.connect(target).info.server_version // 10000
    toc = subprocess.run([binary("pg_restore", major), "--list", str(dump)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    listing.write_text("\n".join(line for line in toc  # the README's grep
                                 if not re.search(r"TABLE DATA public |TABLE DATA automl (tier_limits|credit_packages"
                                                  r"|tutorials) ", line)))
    run("pg_restore", target, "--data-only", "--disable-triggers", "--exit-on-error", f"--use-list={listing}",
        f"--dbname={target}", str(dump))
    copied, original = contents(target), contents(demo_db)
    for table in REFERENCE_TABLES:  # the target's own (the same ids, its own stamps)
        assert [row.split(",")[0] for row in copied[table]] == [row.split(",")[0] for row in original[table]]
        del copied[table], original[table]
    assert copied == original
    assert_alive(target)
