"""docs/schema.md: current, complete, and written from what the catalog says."""

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from automl_db.tools import schemadoc
from automl_db.tools.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT or Path.cwd()


def test_the_committed_reference_is_current(db_url: str) -> None:
    """db_url is a clone of the template the migrations built: the page for it is the page committed."""
    page = schemadoc.generate(db_url)
    assert page == schemadoc.DEFAULT_OUTPUT.read_text(), "docs/schema.md is stale: run `just schema-doc`"


def test_every_table_column_rule_and_trigger_is_on_the_page(db_url: str) -> None:
    page = schemadoc.generate(db_url)
    diagram = page.split("```mermaid", 1)[1].split("```", 1)[0]
    with psycopg.connect(db_url) as conn:
        tables = [str(r[0]) for r in conn.execute(
            "select relname from pg_class where relnamespace = 'automl'::regnamespace and relkind = 'r'")]
        foreign_keys = conn.execute(
            "select conrelid::regclass::text, confrelid::regclass::text, conname from pg_constraint"
            " where contype = 'f' and connamespace = 'automl'::regnamespace").fetchall()
        rules = [str(r[0]) for r in conn.execute(
            "select conname from pg_constraint where connamespace = 'automl'::regnamespace and contype in ('c', 'u')")]
        triggers = conn.execute(
            "select tgrelid::regclass::text, tgname, obj_description(tgfoid, 'pg_proc') from pg_trigger"
            " join pg_class c on c.oid = tgrelid"
            " where not tgisinternal and c.relnamespace = 'automl'::regnamespace").fetchall()
        comments = conn.execute(
            "select c.relname, a.attname, col_description(c.oid, a.attnum) from pg_attribute a"
            " join pg_class c on c.oid = a.attrelid where c.relname = any(%s) and a.attnum > 0"
            " and not a.attisdropped", [tables]).fetchall()
    assert len(tables) >= 16
    for table in tables:
        assert f"\n### {table}\n" in page
        assert re.search(rf"^    {table} \{{$", diagram, re.MULTILINE), table
    for child, parent, name in foreign_keys:
        assert re.search(rf'^    {parent} \|[|o]--o[|{{] {child} : "{name}"$', diagram, re.MULTILINE), name
    assert len(re.findall(r"^    \w+ \|[|o]--o[|{] \w+ : ", diagram, re.MULTILINE)) == len(foreign_keys)
    for rule in rules:
        assert f"| `{rule}` |" in page or f"CONSTRAINT {rule} CHECK" in page, rule
    for table, name, function_comment in triggers:
        section = page.split(f"\n### {table}\n", 1)[1].split("\n### ", 1)[0]
        assert f"| `{name}` |" in section
        assert schemadoc._cell(function_comment) in section, name
    for table, column, comment in comments:
        section = page.split(f"\n### {table}\n", 1)[1].split("\n### ", 1)[0]
        assert f"| `{column}` |" in section, f"{table}.{column}"
        assert schemadoc._cell(comment) in section, f"{table}.{column}"


def test_links_that_are_not_foreign_keys_are_listed_not_drawn(db_url: str) -> None:
    page = schemadoc.generate(db_url)
    diagram = page.split("```mermaid", 1)[1].split("```", 1)[0]
    assert "- `credit_transactions.job_id`: Job charged or refunded" in page
    assert "jobs" not in [line.split()[0] for line in diagram.splitlines() if "credit_transactions :" in line]


def test_check_fails_on_a_stale_page_in_one_line(tmp_path: Path) -> None:
    stale = tmp_path / "schema.md"
    stale.write_text("# Schema reference\n\nout of date\n")
    command = [sys.executable, "-m", "automl_db.tools.schemadoc", "--output", str(stale)]
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ),
                             timeout=180, check=False)
    assert checked.returncode == 1
    assert checked.stderr == f"schemadoc: {stale} is stale; run `just schema-doc`\n"
    written = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert written.stdout == f"wrote {stale}\n", written.stderr
    assert stale.read_text() == schemadoc.DEFAULT_OUTPUT.read_text()
    again = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert again.returncode == 0, again.stderr
