"""Codegen's soundness: each test is a way codegen used to produce wrong code without a refusal (found
in review). Each holds when codegen either refuses the query (one line, file:line: name: reason) or
generates code that is right; the tests at the end pin down which of the two it does."""

import ast
import types
from pathlib import Path
from typing import Any

import psycopg
import pytest

from automl_db import rows
from automl_db.errors import DataUnreadable, InvalidInput
from automl_db.runtime import JsonParam, checked, fetch_value, run_script
from automl_db.tools import codegen
from tests.test_codegen import run_codegen, write


def generated(db_url: str, directory: Path) -> list[codegen.Query] | codegen.CodegenError:
    """The described queries of directory, or the refusal."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        try:
            queries = codegen.load_queries(conn, catalog, source=directory)
            codegen.render_rows(catalog, queries)
            for path in {q.path for q in queries}:
                codegen.render_module(path, [q for q in queries if q.path == path])
        except codegen.CodegenError as exc:
            return exc
    return queries


def columns(db_url: str, directory: Path) -> dict[str, dict[str, codegen.Column]] | None:
    """query -> column -> Column; None when codegen refused (a refusal is an acceptable answer)."""
    found = generated(db_url, directory)
    if isinstance(found, codegen.CodegenError):
        return None
    return {q.name: {c.name: c for c in q.columns} for q in found}


# Nullability codegen gets wrong


def test_rollup_cube_and_grouping_sets_make_the_grouped_columns_nullable(db_url: str, tmp_path: Path) -> None:
    """The subtotal rows of ROLLUP / CUBE / GROUPING SETS hold NULL in the grouped columns."""
    write(tmp_path, "g.sql", "-- name: by_status()\n-- Jobs per status and a total.\n"
                             "select status, count(*) as n from jobs group by rollup(status);\n\n"
                             "-- name: by_tier()\n-- Per tier, cubed.\nselect tier from users group by cube(tier);\n")
    found = columns(db_url, tmp_path)
    if found is not None:
        assert found["by_status"]["status"].nullable, "rollup(status) has a row with status NULL"
        assert found["by_tier"]["tier"].nullable, "cube(tier) has a row with tier NULL"


@pytest.mark.parametrize("expression", [
    "concat_ws(e, 'a', 'b')",  # NULL separator: NULL
    "format(e)",  # NULL format string: NULL
    "'{\"a\": 1}'::jsonb @@ '$.a'",  # the path's result is not a boolean: NULL
    "(lseg '[(0,0),(1,1)]' # lseg '[(5,0),(6,1)]')::text",  # no intersection: NULL
])
def test_functions_and_operators_that_return_null_for_some_inputs(db_url: str, tmp_path: Path,
                                                                   expression: str) -> None:
    source = "(values (null::text)) as v(e)"  # e may be NULL (and is)
    write(tmp_path, "f.sql", f"-- name: f()\n-- Case.\nselect {expression} as v from {source};\n")
    with psycopg.connect(db_url) as conn:
        assert conn.execute(f"select {expression} from {source}").fetchone() == (None,)
    found = columns(db_url, tmp_path)
    if found is not None:
        assert found["f"]["v"].nullable, f"{expression} returned NULL but is typed non-null"


def test_a_required_json_parameter_refuses_none(db_url: str) -> None:
    """A required parameter is inferred never NULL (ParamRef -> False), but JsonParam lets None through:
    `select jsonb_typeof(:doc) as t` is then typed `t: str` and returns NULL."""

    @checked
    def f(conn: psycopg.Connection[Any], *, doc: JsonParam) -> object:
        return doc

    with psycopg.connect(db_url) as conn, pytest.raises(InvalidInput):
        f(conn, doc=None)


def test_array_elements_that_may_be_null_are_typed_so(db_url: str, tmp_path: Path) -> None:
    write(tmp_path, "a.sql", "-- name: emails()^\n-- All e-mails.\nselect array_agg(email) as a from users;\n")
    found = columns(db_url, tmp_path)
    if found is not None:
        assert found["emails"]["a"].annotation == "list[str | None]"


# Python that is wrong although codegen accepted it


def test_a_value_query_returns_the_type_it_declares(db_url: str, tmp_path: Path) -> None:
    """A `$` query of an enum is annotated JobStatus | None but returns a plain str (no validation)."""
    path = write(tmp_path, "v.sql", "-- name: a_status()$\n-- An enum value.\nselect 'queued'::job_status;\n")
    found = generated(db_url, tmp_path)
    assert not isinstance(found, codegen.CodegenError)
    module = types.ModuleType("generated_v")
    exec(compile(codegen.render_module(path, found), "v", "exec"), module.__dict__)
    with psycopg.connect(db_url) as conn:
        value = module.a_status(conn)
    assert isinstance(value, rows.JobStatus), type(value)


def test_percent_in_a_query_with_parameters_is_refused_or_runs(db_url: str, tmp_path: Path) -> None:
    """Codegen prepares the SQL happily; psycopg refuses a lone % whenever parameters are passed."""
    write(tmp_path, "p.sql", "-- name: by_prefix(prefix)\n-- E-mails starting with prefix.\n"
                             "select id from users where email like :prefix || '%';\n")
    found = generated(db_url, tmp_path)
    if isinstance(found, codegen.CodegenError):
        return
    with psycopg.connect(db_url) as conn:
        fetch_value(conn, found[0].sql, {"prefix": "a"}, "by_prefix")  # QueryError: only '%s'... allowed


def test_percent_percent_means_the_same_with_and_without_parameters(db_url: str, tmp_path: Path) -> None:
    """`%%` is prepared as `%` by codegen, and sent as `%` with parameters, but as `%%` without."""
    write(tmp_path, "p.sql", "-- name: hundred()$\n-- Text.\nselect '100%%'::text;\n")
    found = generated(db_url, tmp_path)
    if isinstance(found, codegen.CodegenError):
        return
    with psycopg.connect(db_url) as conn:
        assert fetch_value(conn, found[0].sql, None, "hundred") == "100%"


def test_two_queries_never_share_a_row_model(db_url: str, tmp_path: Path) -> None:
    """get_user_2 and get_user2 are both GetUser2Row: one shape silently replaces the other, here typing
    a column that may be NULL as non-null."""
    write(tmp_path, "u.sql", "-- name: get_user2()^\n-- An e-mail, maybe NULL.\nselect email from users;\n\n"
                             "-- name: get_user_2()^\n-- Never NULL.\nselect 'x'::text as email;\n")
    found = generated(db_url, tmp_path)
    if isinstance(found, codegen.CodegenError):
        return
    assert len({q.row_model for q in found}) == 2, [q.row_model for q in found]


def test_two_queries_never_share_a_sql_constant(db_url: str, tmp_path: Path) -> None:
    """getValue and getvalue both define GETVALUE: getValue() runs getvalue's SQL."""
    write(tmp_path, "v.sql", "-- name: getValue()$\n-- One.\nselect 1;\n\n-- name: getvalue()$\n-- Two.\nselect 2;\n")
    found = generated(db_url, tmp_path)
    if isinstance(found, codegen.CodegenError):
        return
    module = codegen.render_module(tmp_path / "v.sql", found)
    assert module.count('GETVALUE = r"""') <= 1


@pytest.mark.parametrize("text", [
    "-- name: by_conn(conn)^\n-- A parameter named conn.\nselect 1 as a where 1 = :conn::int;\n",
    "-- name: by_locals(locals)^\n-- A parameter named locals.\nselect 1 as a where 1 = :locals::int;\n",
    "-- name: fetch_one()^\n-- Shadows the runtime helper.\nselect 1 as a;\n\n"
    "-- name: other()^\n-- Uses it.\nselect 2 as b;\n",
    "-- name: checked()$\n-- Shadows the decorator.\nselect 1;\n\n-- name: later()$\n-- Decorated by it.\nselect 2;\n",
    "-- name: config()^\n-- A column pydantic refuses.\nselect 1 as model_config;\n",
    "-- name: hidden()^\n-- A column pydantic takes for a private attribute.\nselect 1 as _x, 2 as y;\n",
])
def test_generated_code_that_cannot_run_is_refused(db_url: str, tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "q.sql", text)
    found = generated(db_url, tmp_path)
    if isinstance(found, codegen.CodegenError):
        assert str(found).startswith(f"{path}:"), found
        return
    rows_module = types.ModuleType("automl_db.rows")
    with psycopg.connect(db_url, autocommit=True) as conn:
        catalog = codegen.read_catalog(conn)
        exec(compile(codegen.render_rows(catalog, found), "rows", "exec"), rows_module.__dict__)
        module = types.ModuleType("generated_q")
        module.__dict__.update({k: v for k, v in rows_module.__dict__.items() if k.endswith("Row")})
        source = "\n".join(line for line in codegen.render_module(path, found).splitlines()
                           if not line.startswith("from automl_db.rows import"))
        exec(compile(source, "q", "exec"), module.__dict__)
        for query in found:
            arguments = dict.fromkeys(query.params, 1)
            result = getattr(module, query.name)(conn, **arguments)
            if query.row_model:
                result = result.model_dump() if hasattr(result, "model_dump") else result
                assert set(result) == {c.name for c in query.columns}, result


def test_a_query_name_starting_with_a_non_ascii_letter_is_generated_or_refused(tmp_path: Path) -> None:
    """aiosql loads `ünits`; codegen's name pattern does not see it, and drops the query silently."""
    write(tmp_path, "u.sql", "-- name: first()^\n-- First.\nselect 1 as a;\n\n"
                             "-- name: ünits()^\n-- Second.\nselect 2 as b;\n")
    try:
        names = [q.name for q in codegen.read_queries(tmp_path)]
    except codegen.CodegenError:
        return
    assert "ünits" in names, names


# Refusals must name the file, the line and the query


@pytest.mark.parametrize("text", [
    "-- name: clock()^\n-- A time of day.\nselect now()::time as t;\n",
    "-- name: letter()^\n-- A \"char\".\nselect 'a'::\"char\" as c;\n",
])
def test_an_unsupported_type_is_refused_at_the_query(db_url: str, tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "t.sql", text)
    found = generated(db_url, tmp_path)
    assert isinstance(found, codegen.CodegenError)
    assert str(found).startswith(f"{path}:1: "), found


def test_a_python_keyword_parameter_is_refused_at_the_query(tmp_path: Path) -> None:
    path = write(tmp_path, "k.sql", "-- name: by_class(class)^\n-- A keyword.\nselect 1 as a where 1 = :class;\n")
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value).startswith(f"{path}:1: by_class: ")


@pytest.mark.parametrize("description", ['Jobs whose status is "done"', r"Files under C:\Users\new"])
def test_any_description_gives_valid_python(db_url: str, tmp_path: Path, description: str) -> None:
    path = write(tmp_path, "d.sql", f"-- name: described()^\n-- {description}\nselect 1 as a;\n")
    found = generated(db_url, tmp_path)
    assert not isinstance(found, codegen.CodegenError)
    module = codegen.render_module(path, found)
    ast.parse(module)
    compile(module, "d", "exec")


# Which answer codegen gives


def test_grouping_sets_make_grouped_expressions_nullable_and_leave_aggregates_alone(db_url: str,
                                                                                  tmp_path: Path) -> None:
    write(tmp_path, "g.sql", "-- name: by_status()\n-- Per status and in all.\n"
                             "select j.status, lower(j.status::text) as l, count(*) as n, max(j.created_at) as m,"
                             " grouping(j.status) as g, j.user_id"
                             " from jobs j group by grouping sets ((j.status), ()), j.user_id;\n")
    found = columns(db_url, tmp_path)
    assert found is not None
    assert {name: c.nullable for name, c in found["by_status"].items()} == {
        "status": True, "l": True, "n": False, "m": True, "g": False, "user_id": False}


def test_a_lone_percent_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.sql", "-- name: by_prefix(prefix)\n-- E-mails starting with prefix.\n"
                                    "select id from users\n where email like :prefix || '%';\n")
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value) == f"{path}:4: by_prefix: use %% for a literal percent sign"


def test_percent_percent_is_a_percent_in_a_script_too(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        run_script(conn, "create temporary table percent (t text); insert into percent values ('100%%')")
        assert conn.execute("select t from percent").fetchone() == ("100%",)


@pytest.mark.parametrize(("text", "reason"), [
    ("-- name: x()$\n-- One.\nselect 1;\n\n-- name: x_async()$\n-- Two.\nselect 2;\n",
     ":5: x_async: the generated name x_async is also generated for the query at "),
    ("-- name: uuid()$\n-- Shadows the UUID import.\nselect 1;\n", ":1: uuid: the generated name UUID shadows"),
    ("-- name: \ufb01nd()$\n-- Not NFKC.\nselect 1;\n", ":1: \ufb01nd: the query name changes under Unicode NFKC"),
    ("-- name: by_id(fetch_all)$\n-- Shadows a helper.\nselect :fetch_all::int;\n",
     ":1: by_id: parameter fetch_all shadows a name the generated function uses"),
])
def test_names_the_generated_code_cannot_use_are_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, "n.sql", text)
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value).startswith(f"{path}{reason}"), caught.value


def test_a_query_named_as_a_class_the_module_imports_is_refused(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "s.sql", "-- name: JobStatus()$\n-- Shadows the enum.\nselect 'queued'::job_status;\n")
    found = generated(db_url, tmp_path)
    assert isinstance(found, codegen.CodegenError)
    assert str(found).startswith(f"{path}:1: JobStatus: the generated name JobStatus shadows a name the module imports")


@pytest.mark.parametrize("name", ["my-queries.sql", "__init__.sql", "class.sql"])
def test_a_file_name_that_is_no_module_name_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "-- name: one()$\n-- One.\nselect 1;\n")
    with pytest.raises(codegen.CodegenError) as caught:
        codegen.read_queries(tmp_path)
    assert str(caught.value).startswith(f"{path}:1: {path.stem}: the file name "), caught.value


def test_an_unsupported_parameter_type_is_refused_at_the_query(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "t.sql", "-- name: at(t)$\n-- A time of day.\nselect :t::time;\n")
    found = generated(db_url, tmp_path)
    assert isinstance(found, codegen.CodegenError)
    assert str(found) == f"{path}:1: at: parameter t: no Python type for PostgreSQL type time"


def test_an_optional_json_parameter_still_accepts_none(db_url: str) -> None:
    @checked
    def f(conn: psycopg.Connection[Any], *, doc: JsonParam | None = None) -> object:
        return doc

    with psycopg.connect(db_url) as conn:
        assert f(conn, doc=None) is None


def test_a_value_psycopg_cannot_load_is_data_unreadable(db_url: str) -> None:
    with psycopg.connect(db_url) as conn, pytest.raises(DataUnreadable, match="date too large"):
        fetch_value(conn, "select 'infinity'::date", None, "forever")


def test_other_queries_never_overwrite_the_committed_modules(tmp_path: Path) -> None:
    write(tmp_path, "other.sql", "-- name: one()$\n-- One.\nselect 1;\n")
    result = run_codegen("--queries", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("codegen: --queries DIR leaves the committed generated modules alone")
    assert len(result.stderr.splitlines()) == 1
    assert not result.stdout
