"""Codegen refuses what sqlc would: it is fed bad queries and must say where, in one line, and it
types the good ones from the parse tree (outer joins, expressions) and the catalog."""

import os
import subprocess
import sys
from pathlib import Path

import pglast
import psycopg
import pytest

from automl_db.errors import MigrationFailed
from automl_db.tools import codegen
from automl_db.tools.nullability import Analyzer, Columns

UNREACHABLE = "postgresql://automl@127.0.0.1:1/nowhere?connect_timeout=2"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load(db_url: str, directory: Path) -> dict[str, codegen.Query]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        return {query.name: query for query in codegen.load_queries(conn, catalog, source=directory)}


def refusal(db_url: str, directory: Path) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        with pytest.raises(codegen.CodegenError) as caught:
            codegen.load_queries(conn, catalog, source=directory)
    return str(caught.value)


def nullable(query: codegen.Query) -> dict[str, bool]:
    return {column.name: column.nullable for column in query.columns}


def run_codegen(*args: str, database_url: str = UNREACHABLE) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "automl_db.tools.codegen", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


# Nullability through joins and expressions

JOINS = """-- name: left_joined(user_id)
-- Users with their jobs, if any.
select u.id, u.tier, j.id as job_id, j.status
  from users u
  left join jobs j on j.user_id = u.id
 where u.id = :user_id;

-- name: right_joined()
-- Jobs with their users.
select u.tier, j.status from users u right join jobs j on j.user_id = u.id;

-- name: full_joined()
-- Either side may be missing.
select u.tier, j.status from users u full join jobs j on j.user_id = u.id;

-- name: inner_joined()
-- Both sides are there.
select u.tier, j.status from users u join jobs j on j.user_id = u.id;

-- name: nested_left()
-- A left join whose right side is itself an inner join: both of its tables may be missing.
select u.tier, j.status, s.snapshot_data
  from users u
  left join (jobs j join workflow_snapshots s on s.id = j.workflow_snapshot_id) on j.user_id = u.id;
"""


def test_a_column_from_the_nullable_side_of_an_outer_join_is_optional(db_url: str, tmp_path: Path) -> None:
    write(tmp_path, "joins.sql", JOINS)
    loaded = load(db_url, tmp_path)
    assert nullable(loaded["left_joined"]) == {"id": False, "tier": False, "job_id": True, "status": True}
    assert nullable(loaded["right_joined"]) == {"tier": True, "status": False}
    assert nullable(loaded["full_joined"]) == {"tier": True, "status": True}
    assert nullable(loaded["inner_joined"]) == {"tier": False, "status": False}
    assert nullable(loaded["nested_left"]) == {"tier": False, "status": True, "snapshot_data": True}


def test_the_generated_model_of_an_outer_join_types_the_column_x_or_none(db_url: str, tmp_path: Path) -> None:
    write(tmp_path, "joins.sql", JOINS)
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        queries = codegen.load_queries(conn, catalog, source=tmp_path)
    rows = codegen.render_rows(catalog, queries)
    model = rows.split("class LeftJoinedRow(Row):", 1)[1].split("\nclass ", 1)[0]
    assert "    tier: UserTier\n" in model
    assert "    job_id: UUID | None = None\n" in model
    assert "    status: JobStatus | None = None\n" in model
    module = codegen.render_module(tmp_path / "joins.sql", queries)
    assert "def left_joined(conn: Connection[Any], *, user_id: UUID) -> list[LeftJoinedRow]:" in module
    assert "async def left_joined_async(conn: AsyncConnection[Any], *, user_id: UUID) -> list[LeftJoinedRow]:" in module
    assert module.count('LEFT_JOINED = r"""') == 1  # one SQL constant for both


def test_expressions_follow_postgresql_rules(db_url: str, tmp_path: Path) -> None:
    write(tmp_path, "expressions.sql", """-- name: expressions(user_id, maybe)^
-- One of each kind.
-- optional: maybe
select 1 as literal, null::int as nothing, coalesce(j.credit_cost, 0) as defaulted, :user_id::uuid as given,
       :maybe::text as maybe_given, now() as stamp, j.id is null as tested, u.tier::text || '!' as shouted,
       j.credit_cost + 1 as added, u.id::text as cast_id, j.results ->> 'x' as json_key,
       case when j.id is null then 'none' end as no_else,
       case when j.id is null then 'none' else 'some' end as with_else,
       exists (select from jobs) as any_jobs, (select max(created_at) from users) as scalar_subquery
  from users u left join jobs j on j.user_id = u.id
 where u.id = :user_id;

-- name: aggregates()
-- Aggregates and window functions.
select count(*) as counted, max(u.tier) as biggest, rank() over (order by u.tier) as ranked,
       lag(u.tier) over (order by u.tier) as previous
  from users u
 group by u.tier;
""")
    loaded = load(db_url, tmp_path)
    assert nullable(loaded["expressions"]) == {
        "literal": False, "nothing": True, "defaulted": False, "given": False, "maybe_given": True, "stamp": False,
        "tested": False, "shouted": False, "added": True, "cast_id": False, "json_key": True, "no_else": True,
        "with_else": False, "any_jobs": False, "scalar_subquery": True}
    assert nullable(loaded["aggregates"]) == {"counted": False, "biggest": True, "ranked": False, "previous": True}


def test_ctes_and_unions_carry_the_catalogs_nullability(db_url: str, tmp_path: Path) -> None:
    write(tmp_path, "ctes.sql", """-- name: via_cte(user_id)
-- A CTE of an insert, and a union with a plain select.
with made as (
    insert into workflows (user_id, name) values (:user_id, 'w') returning *
)
select id, name, description from made
union all
select id, name, description from workflows where user_id = :user_id;

-- name: union_with_null()
-- One branch has no name.
select name from workflows union all select null;
""")
    loaded = load(db_url, tmp_path)
    assert nullable(loaded["via_cte"]) == {"id": False, "name": False, "description": True}
    assert nullable(loaded["union_with_null"]) == {"name": True}


# The analyzer alone, on a catalog of two tables: a (id not null, note null), b (id, a_id not null)

RELATIONS: dict[tuple[str, str], Columns] = {("public", "a"): [("id", False), ("note", True)],
                                             ("public", "b"): [("id", False), ("a_id", False)]}
ANALYZED = [
    ("select a.id, a.note, b.id from a left join b on b.a_id = a.id", [False, True, True]),
    ("select id from a join b using (id)", [False]),
    ("select id from a left join b using (id)", [None]),  # the merged column: a's, or b's when a has none
    ("select * from a cross join b", [False, True, False, False]),
    ("select s.* from (select id, null::int as n from a) s", [False, True]),
    ("select t.n from (select note as n from a) as t", [True]),
    ("select x.* from unknown_function() x", None),
    ("select x from unknown_function() x", [None]),
    ("with recursive r as (select 1 as n union all select n + 1 from r) select n from r", [None]),
    ("with c (renamed) as (select id from a) select renamed from c", [False]),
    ("select $1::int, $2::int", [False, True]),  # $2 is optional
    ("select 1 = any ($1::int[])", [None]),
    ("select greatest(a.note, 'x'), nullif(a.id::text, 'x') from a", [False, True]),
    ("update a set note = 'x' where id = $1 returning *", [False, True]),
    ("delete from b using a where a.id = b.a_id returning a.note, b.id", [True, False]),
    ("select a.id from a full join b on true", [True]),
]


@pytest.mark.parametrize(("query", "expected"), ANALYZED, ids=[q for q, _ in ANALYZED])
def test_the_analyzer_reads_nullability_from_the_parse_tree(query: str, expected: list[bool | None] | None) -> None:
    analyzer = Analyzer(RELATIONS, ("public",), {}, optional={2})
    columns = analyzer.columns(pglast.parse_sql(query)[0].stmt)
    assert (None if columns is None else [null for _, null in columns]) == expected


# Refusals, each one line naming the file, the line and the query

def test_a_column_whose_nullability_cannot_be_told_is_refused_until_overridden(db_url: str, tmp_path: Path) -> None:
    query = ("-- name: one()$\n-- One.\nselect 1;\n\n"
             "-- name: found_user(email)^\n-- A function's result: it may or may not be NULL.\n"
             "select user_id_for_email(:email) as found, 1 as one;\n")
    path = write(tmp_path, "users.sql", query)
    assert refusal(db_url, tmp_path) == (
        f'{path}:5: found_user: cannot tell whether column "found" can be null; add an override '
        '(-- nullable: found or -- not-null: found, under the description)')
    write(tmp_path, "users.sql", query.replace("NULL.\n", "NULL.\n-- not-null: found\n"))
    assert nullable(load(db_url, tmp_path)["found_user"]) == {"found": False, "one": False}
    write(tmp_path, "users.sql", query.replace("NULL.\n", "NULL.\n-- nullable: found, one\n"))
    assert nullable(load(db_url, tmp_path)["found_user"]) == {"found": True, "one": True}


def test_an_override_naming_no_result_column_is_refused(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "users.sql", "\n-- name: get(id)^\n-- One user.\n-- not-null: emial\n"
                                        "select email from users where id = :id;\n")
    assert refusal(db_url, tmp_path) == f"{path}:2: get: override names no result column: emial"


def test_a_result_column_name_used_twice_is_refused(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.sql", "-- name: pairs()\n-- Jobs and users.\n"
                                       "select j.id, u.id from jobs j join users u on u.id = j.user_id;\n")
    assert refusal(db_url, tmp_path) == (
        f'{path}:1: pairs: result column "id" appears more than once; give each its own name (as ...)')


def test_a_query_postgresql_refuses_is_reported_at_the_line_of_the_error(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "users.sql", "-- name: get(id)^\n-- One user.\nselect id,\n       emial\n"
                                        "  from users\n where id = :id;\n")
    assert refusal(db_url, tmp_path) == f'{path}:4: get: column "emial" does not exist'


def test_a_duplicate_name_in_one_file_is_refused_with_both_places(tmp_path: Path) -> None:
    path = write(tmp_path, "users.sql", "-- name: get(id)^\n-- One user.\nselect * from users where id = :id;\n\n"
                                        "-- name: get(email)^\n-- Another.\nselect * from users where email = :email;\n"
                                        )
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value) == f"{path}:5: get: query name already used at {path}:1"


def test_a_duplicate_name_across_files_is_refused_with_both_places(tmp_path: Path) -> None:
    first = write(tmp_path, "a.sql", "-- name: get(id)^\n-- One user.\nselect * from users where id = :id;\n")
    second = write(tmp_path, "b.sql",
                   "-- Jobs.\n\n-- name: get(id)^\n-- One job.\nselect * from jobs where id = :id;\n")
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value) == f"{second}:3: get: query name already used at {first}:1"


def test_what_aiosql_refuses_is_reported_at_the_query(tmp_path: Path) -> None:
    path = write(tmp_path, "a.sql", "-- name: one()$\n-- One.\nselect 1;\n\n"
                                    "-- name: get(id, email)^\n-- One user.\nselect * from users where id = :id;\n")
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value) == f"{path}:5: get: unused declared parameter in query get: ['email']"


def test_a_query_without_a_description_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "a.sql", "-- name: get(id)^\nselect * from users where id = :id;\n")
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value).startswith(f"{path}:1: get: no description")


def test_a_syntax_error_is_one_line_at_its_file_and_line(tmp_path: Path) -> None:
    """Parsed before any database is needed: the unreachable one is never asked."""
    write(tmp_path, "fine.sql", "-- name: fine(id)^\n-- Fine.\nselect * from users where id = :id;\n")
    path = write(tmp_path, "broken.sql", "-- Broken.\n\n-- name: broken(id)^\n-- A typo on the third line.\n"
                                         "select *\n  from users\n wher id = :id;\n")
    result = run_codegen("--check", "--queries", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f'codegen: {path}:7: broken: syntax error at or near "id"\n'


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "fine.sql", "-- name: fine(id)^\n-- Fine.\nselect * from users where id = :id;\n")
    result = run_codegen("--check", "--queries", str(tmp_path))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("codegen: cannot reach the database: ")
    assert "Traceback" not in result.stderr


def test_a_failed_migration_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    write(tmp_path, "fine.sql", "-- name: fine(id)^\n-- Fine.\nselect * from users where id = :id;\n")

    def broken_migrations() -> None:
        raise MigrationFailed("0099_broken", 'syntax error at or near "tabel"\nLINE 1: create tabel x ()')

    monkeypatch.setattr(codegen, "codegen_database", broken_migrations)
    assert codegen.main(["--check", "--queries", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("codegen: the migrations do not apply: ")
    assert "0099_broken" in captured.err


# The committed code

def test_the_committed_generated_code_is_fresh(capsys: pytest.CaptureFixture[str], server_url: str) -> None:
    assert codegen.main(["--check"]) == 0, capsys.readouterr().err


def test_the_generated_package_does_not_need_the_parser() -> None:
    code = ("import sys; from automl_db import aqueries, queries, rows; "
            "assert 'pglast' not in sys.modules and 'aiosql' not in sys.modules; "
            "assert queries.get_user.__module__ == 'automl_db.queries.users'; "
            "assert aqueries.get_user is queries.get_user_async; print(queries.GET_USER.split()[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "select"), result.stderr
