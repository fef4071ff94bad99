"""sqlc-style code generation: typed Python from queries/ and the migrated schema.

    python -m automl_db.tools.codegen          # (just codegen) rewrite the generated modules
    python -m automl_db.tools.codegen --check  # fail when they are stale (CI)
    python -m automl_db.tools.codegen --queries DIR --check      # try other queries: refusals only
    python -m automl_db.tools.codegen --queries DIR --out OUTDIR  # ... and write their code under OUTDIR

Every named query in queries/*.sql (aiosql syntax) is parsed by pglast, PostgreSQL's own parser,
then prepared on a fresh database the migrations built: libpq's describe gives the type of each
parameter and result column, and the parse tree with pg_catalog tells whether a result column can
be NULL (automl_db.tools.nullability): a table column keeps its NOT NULL unless its table is on the
nullable side of a LEFT, RIGHT or FULL join; literals, casts, coalesce, count(), CASE, operators...
follow PostgreSQL's rules. A column it cannot decide (a function's result, say) needs an override.

Overrides, the one mechanism: lines of the query's comment block, under its one-line description
(an override wins over the inference):

    -- optional: description, target_column     parameters that may be None (default None)
    -- nullable: model_name                      result columns that may be NULL whatever the inference says
    -- not-null: score, step_count               result columns that are never NULL (the query ensures it,
                                                 e.g. with a WHERE the inference does not read)

Refused, each as one line `queries/x.sql:LINE: query_name: reason` on stderr and exit status 1: SQL
PostgreSQL's parser or the database refuses (the line of the error), a query name used twice (in one
file or across files: both places), a query without a description, a result column whose nullability
cannot be told and has no override, a result column name used twice, an override naming no result
column or parameter, a type without a Python type, a lone `%` (psycopg reads the SQL with a parameter
mapping, always: write `%%` for a literal percent sign), a query whose generated names (get_user,
get_user_async, GET_USER, GetUserRow) another query's generate too or that shadow a name the generated
modules use (fetch_one, checked, locals, UUID...), a query, parameter or result column name that is not
a Python identifier, is a keyword or changes under NFKC normalization, a parameter named conn, a result
column pydantic cannot take as a field (unnamed `?column?`, a leading _, model_config...), a file name
that is not a module name (my-queries.sql, __init__.sql). An unreachable database or a migration that
fails is one line too.

Outputs (committed, checked for staleness in CI), each with a "do not edit" header:
    automl_db/rows.py              a StrEnum per PostgreSQL enum, a Pydantic model per table and per
                                   other result shape
    automl_db/queries/<file>.py    per queries/<file>.sql: each query's SQL once (GET_USER), a typed
                                   sync function (get_user) and an async one (get_user_async); they
                                   run through automl_db.runtime's fetch_* helpers
    automl_db/queries/__init__.py  every module's functions and SQL constants: `queries.get_user`
    automl_db/aqueries.py          the async functions under their plain names: `aqueries.get_user`
"""

import argparse
import keyword
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosql
import pglast
import psycopg
from aiosql.types import SQLOperationType
from aiosql.utils import SQLLoadException, SQLParseException
from pglast import ast
from pglast.parser import ParseError
from psycopg import pq
from pydantic import BaseModel

from automl_db.errors import AutomlDbError, MigrationFailed
from automl_db.shapes import JSON_SHAPES
from automl_db.tools import migrate, project, scratch
from automl_db.tools.nullability import Analyzer, Columns
from automl_db.tools.paths import queries_dir

PACKAGE = Path(__file__).resolve().parents[1]
ROOT = PACKAGE.parent
#: The schema the project's tables and enums live in (the only schema filter of the generator).
SCHEMA = project.SCHEMA

# PostgreSQL type name -> Python annotation (enums and arrays are handled apart).
SCALARS = {
    "uuid": "UUID", "text": "str", "varchar": "str", "bpchar": "str", "name": "str",
    "int2": "int", "int4": "int", "int8": "int", "bool": "bool", "float4": "float", "float8": "float",
    "numeric": "Decimal", "timestamptz": "datetime", "timestamp": "datetime", "date": "date",
    "interval": "timedelta", "jsonb": "Json", "json": "Json", "bytea": "bytes",
}
# Parameters are typed more narrowly than result columns: checked by automl_db.runtime.checked.
PARAMETER_SCALARS = {**SCALARS, "text": "Text", "varchar": "Text", "bpchar": "Text", "name": "Text",
                     "int2": "Int2", "int4": "Int4", "int8": "Int8", "timestamptz": "AwareDatetime",
                     "jsonb": "JsonParam", "json": "JsonParam"}
IRREGULAR_SINGULAR = {"user_tutorial_progress": "UserTutorialProgress"}
# Where the names generated annotations use come from (any other capitalised name: automl_db.rows).
IMPORTS = {
    "UUID": "uuid", "date": "datetime", "datetime": "datetime", "timedelta": "datetime", "Decimal": "decimal",
    "Any": "typing", "AwareDatetime": "pydantic", "Connection": "psycopg", "AsyncConnection": "psycopg",
    "Int2": "automl_db.runtime", "Int4": "automl_db.runtime", "Int8": "automl_db.runtime",
    "Text": "automl_db.runtime", "JsonParam": "automl_db.runtime", "Label": "automl_db.runtime",
    "Row": "automl_db.runtime", "Json": "automl_db.shapes", "Metrics": "automl_db.shapes",
    "WorkflowGraph": "automl_db.shapes",
}
BUILTINS = {"str", "int", "float", "bool", "bytes", "list", "dict", "None", "object"}
# a letter (any script) or _, then letters, digits, _ and - (aiosql reads - as _)
NAME_LINE = re.compile(r"--\s*name\s*:\s*([^\W\d][\w-]*)\s*(?:\(([^)]*)\))?")
# The runtime helper that runs each kind of aiosql query, and what it returns.
HELPERS = {SQLOperationType.SELECT: "fetch_all", SQLOperationType.SELECT_ONE: "fetch_one",
           SQLOperationType.SELECT_VALUE: "fetch_value", SQLOperationType.INSERT_UPDATE_DELETE: "execute",
           SQLOperationType.SCRIPT: "run_script"}
#: Names the generated modules define or import besides the queries' own: a query, parameter or SQL
#: constant of one of these names would shadow them (the modules are star-imported into one package).
RESERVED = frozenset({"checked", "locals", *HELPERS.values(), *(f"{h}_async" for h in HELPERS.values()),
                      *IMPORTS, *BUILTINS})


class CodegenError(Exception):
    """Something codegen refuses: the message is one line, `file:line: query: reason` when it has a place."""


@dataclass(frozen=True)
class PgType:
    name: str
    kind: str  # pg_type.typtype: b base, e enum, d domain...
    element: int  # element type oid of an array, else 0
    base: int  # base type oid of a domain, else 0


@dataclass(frozen=True)
class Column:
    name: str
    annotation: str
    nullable: bool
    json: bool = False


@dataclass
class Query:
    name: str
    doc: str
    operation: SQLOperationType
    sql: str
    params: list[str]
    path: Path = field(default_factory=Path)
    line: int = 0  # of the `-- name:` line
    body_line: int = 0  # of the SQL's first line
    marks: dict[str, set[str]] = field(default_factory=dict)
    text: str = ""  # the SQL with $n parameters, as prepared
    order: list[str] = field(default_factory=list)  # parameter names in $n order
    tree: ast.Node | None = None  # the statement's parse tree (None for a script)
    param_types: dict[str, str] = field(default_factory=dict)
    optional: set[str] = field(default_factory=set)
    columns: list[Column] = field(default_factory=list)
    row_model: str | None = None

    @property
    def module(self) -> str:
        return self.path.stem

    def error(self, message: str, offset: int | None = None) -> CodegenError:
        """A refusal at the query's name line, or at the line of offset (a position in self.text)."""
        line = self.line if offset is None else self.body_line + self.text[:offset].count("\n")
        return CodegenError(f"{shown(self.path)}:{line}: {self.name}: {message}")


@dataclass
class Catalog:
    types: dict[int, PgType]
    enums: dict[str, list[str]]
    tables: dict[str, list[Column]]
    table_oids: dict[int, str]
    attributes: dict[tuple[int, int], tuple[str, bool]]  # (table oid, attnum) -> (column name, not null)
    relations: dict[tuple[str, str], Columns] = field(default_factory=dict)  # (schema, name) -> (column, nullable)
    functions: dict[str, tuple[bool | None, str]] = field(default_factory=dict)  # name -> (strict, prokind)


def shown(path: Path) -> str:
    """A path as messages show it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def name_problem(name: str) -> str | None:
    """Why name cannot be a Python name the generated code uses as written, or None."""
    if not name.isidentifier():
        return "is not a Python identifier"
    if keyword.iskeyword(name):
        return "is a Python keyword"
    if unicodedata.normalize("NFKC", name) != name:
        return f"changes under Unicode NFKC normalization (Python reads it as {unicodedata.normalize('NFKC', name)})"
    return None


def column_problem(name: str) -> str | None:
    """Why a result column cannot be a field of a generated row model, or None."""
    if name == "?column?":
        return "has no name; give it one (as ...)"
    if problem := name_problem(name):
        return problem
    if name.startswith("_"):
        return "starts with _: pydantic would take it for a private attribute, not a field (rename it: as ...)"
    if hasattr(BaseModel, name):  # model_config, model_dump, copy, json...
        return "is a name pydantic models use (rename it: as ...)"
    return None


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def singular(table: str) -> str:
    if table in IRREGULAR_SINGULAR:
        return IRREGULAR_SINGULAR[table]
    return camel(table[:-1] if table.endswith("s") else table)


def read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    types = {oid: PgType(name, kind, elem, base) for oid, name, kind, elem, base in
             conn.execute("select oid::int, typname::text, typtype::text, typelem::int, typbasetype::int from pg_type")}
    enums: dict[str, list[str]] = {}
    for typname, label in conn.execute(
            "select t.typname, e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid"
            " where t.typnamespace = %s::regnamespace order by t.typname, e.enumsortorder", [SCHEMA]):
        enums.setdefault(str(typname), []).append(str(label))
    catalog = Catalog(types, enums, {}, {}, {})
    for relid, relname, attnum, attname, atttypid, notnull in conn.execute(
            "select c.oid::int, c.relname, a.attnum::int, a.attname, a.atttypid::int, a.attnotnull"
            " from pg_class c join pg_attribute a on a.attrelid = c.oid"
            " where c.relnamespace = %s::regnamespace and c.relkind = 'r' and a.attnum > 0"
            " and not a.attisdropped"
            " order by c.relname, a.attnum", [SCHEMA]):
        table, column = str(relname), str(attname)
        catalog.table_oids[relid] = table
        catalog.attributes[(relid, attnum)] = (column, bool(notnull))
        annotation, is_json = python_type(catalog, atttypid, table, column)
        catalog.tables.setdefault(table, []).append(Column(column, annotation, not notnull, is_json))
    for schema, relname, attname, notnull in conn.execute(
            "select n.nspname, c.relname, a.attname, a.attnotnull"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid"
            " where n.nspname in (%s, 'pg_catalog') and c.relkind in ('r', 'v', 'm', 'p', 'f')"
            " and a.attnum > 0 and not a.attisdropped order by n.nspname, c.relname, a.attnum", [SCHEMA]):
        catalog.relations.setdefault((str(schema), str(relname)), []).append((str(attname), not notnull))
    for proname, strict, kinds in conn.execute(
            "select proname, case when bool_and(proisstrict) then true when not bool_or(proisstrict) then false end,"
            " string_agg(distinct prokind::text, '') from pg_proc"
            " where pronamespace in (%s::regnamespace, 'pg_catalog'::regnamespace) group by proname", [SCHEMA]):
        kind = str(kinds) if len(str(kinds)) == 1 else "?"
        catalog.functions[str(proname)] = (strict, kind)
    return catalog


def python_type(catalog: Catalog, oid: int, table: str | None = None, column: str | None = None) -> tuple[str, bool]:
    """(annotation, is_json) of a result column's type oid; a JSON column with a known shape gets its model."""
    pg = catalog.types[oid]
    if pg.kind == "d":
        return python_type(catalog, pg.base, table, column)
    if pg.kind == "e":
        return camel(pg.name), False
    if pg.element:
        inner, _ = python_type(catalog, pg.element)
        return f"list[{inner}]", False
    if pg.name in ("json", "jsonb"):
        return (JSON_SHAPES.get((table, column), "Json") if table and column else "Json"), True
    if pg.name not in SCALARS:
        raise CodegenError(f"no Python type for PostgreSQL type {pg.name}")
    return SCALARS[pg.name], False


def parameter_type(catalog: Catalog, oid: int) -> str:
    """The annotation of a parameter's type oid: the checked types of automl_db.runtime."""
    pg = catalog.types[oid]
    if pg.kind == "d":
        return parameter_type(catalog, pg.base)
    if pg.kind == "e":
        return camel(pg.name)
    if pg.element:
        return f"list[{parameter_type(catalog, pg.element)}]"
    if pg.name not in PARAMETER_SCALARS:
        raise CodegenError(f"no Python type for PostgreSQL type {pg.name}")
    return PARAMETER_SCALARS[pg.name]


def directives(doc: str) -> tuple[str, dict[str, set[str]]]:
    """The one-line description and the override lines of a query's comment block."""
    lines = [line.strip() for line in doc.splitlines() if line.strip()]
    marks: dict[str, set[str]] = {"optional": set(), "nullable": set(), "not-null": set()}
    description = []
    for line in lines:
        key, _, rest = line.partition(":")
        if key in marks and rest:
            marks[key] |= {name.strip() for name in rest.split(",") if name.strip()}
        else:
            description.append(line)
    return " ".join(description), marks


class LonePercent(Exception):
    """A % that is neither %% nor a parameter, at this line of the query's SQL (0: its first)."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def numbered(sql_text: str, params: list[str]) -> tuple[str, list[str]]:
    """aiosql's psycopg SQL (%(name)s) as libpq $n SQL, and the parameter names in $n order."""
    order: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    def token(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1) is not None:
            return replace(match)
        line = sql_text[:match.start()].count("\n")
        raise LonePercent(line)

    # psycopg reads the SQL with a parameter mapping (automl_db.runtime always passes one): %% is a
    # literal %, %(name)s a parameter, and any other % an error at run time
    text = re.sub(r"%%|%\((\w+)\)s|%", token, sql_text)
    unknown = set(order) - set(params)
    if unknown:
        raise CodegenError(f"parameters {sorted(unknown)} are used but not declared")
    return text, order


def read_queries(source: Path | None = None) -> list[Query]:
    """Every query of the .sql files (a directory's, or one file), parsed; no database needed."""
    source = source or queries_dir()
    files = sorted(source.glob("*.sql")) if source.is_dir() else [source]
    seen: dict[str, str] = {}
    generated: dict[str, str] = {}  # every name the generated code defines -> the query's place
    queries: list[Query] = []
    for path in files:
        if problem := (name_problem(path.stem) or ("is a package's own module" if path.stem.startswith("__")
                                                  else None)):
            raise CodegenError(f"{shown(path)}:1: {path.stem}: the file name {problem}: it names the generated"
                               " module automl_db/queries/<file>.py; rename the file")
        text = path.read_text()
        lines = text.splitlines()
        named = [(m.group(1).replace("-", "_"), m.group(2), i + 1) for i, line in enumerate(lines)
                 if (m := NAME_LINE.match(line.strip()))]
        for name, params, line in named:
            where = f"{shown(path)}:{line}"
            if name in seen:
                raise CodegenError(f"{where}: {name}: query name already used at {seen[name]}")
            seen[name] = where
            if problem := name_problem(name):
                raise CodegenError(f"{where}: {name}: the query name {problem}")
            for param in (p.split("=")[0].strip() for p in (params or "").split(",")):
                if param and (problem := name_problem(param) or (
                        "is the connection argument" if param == "conn" else
                        "shadows a name the generated function uses" if param in RESERVED else None)):
                    raise CodegenError(f"{where}: {name}: parameter {param} {problem}; rename it")
            for made in (name, f"{name}_async", name.upper(), camel(name) + "Row"):
                if made in RESERVED:
                    raise CodegenError(f"{where}: {name}: the generated name {made} shadows a name the generated"
                                       " modules use; rename the query")
                if made in generated:
                    raise CodegenError(f"{where}: {name}: the generated name {made} is also generated for the query"
                                       f" at {generated[made]}; rename one of them")
                generated[made] = where
        try:
            loaded = aiosql.from_str(text, "psycopg")
        except (SQLLoadException, SQLParseException, ValueError) as exc:
            where = next((f":{line}: {name}" for name, _, line in named if re.search(rf"\b{name}\b", str(exc))), "")
            raise CodegenError(f"{shown(path)}{where}: {first_line(exc)}") from None
        available = set(loaded.available_queries)
        found = {n for n in available if not (n.endswith("_cursor") and n.removesuffix("_cursor") in available)}
        if missed := sorted(found - {name for name, _, _ in named}):
            raise CodegenError(f"{shown(path)}: {missed[0]}: aiosql loads this query but codegen cannot read its"
                               " `-- name:` line (write it as `-- name: query_name(parameters)` on a line of its own)")
        for name, _, line in named:
            fn = getattr(loaded, name)
            description, marks = directives(fn.__doc__ or "")
            query = Query(name, description, fn.operation, fn.sql, list(fn.parameters or []), path, line, line + 1,
                          marks)
            # the SQL starts at the first line under the name that is neither blank nor a comment
            query.body_line = next((i + 1 for i in range(line, len(lines))
                                    if lines[i].strip() and not lines[i].strip().startswith("--")), line + 1)
            if not description:
                raise query.error("no description: write one comment line under the name")
            for param in query.params:  # the names aiosql found (:name in the SQL too)
                if problem := name_problem(param) or ("is the connection argument" if param == "conn" else
                                                       "shadows a name the generated function uses"
                                                       if param in RESERVED | {name.upper()} else None):
                    raise query.error(f"parameter {param} {problem}; rename it")
            parse(query)
            queries.append(query)
    return sorted(queries, key=lambda q: q.name)


def parse(query: Query) -> None:
    """The query's $n text and parse tree; a syntax error is refused at its line."""
    try:
        query.text, query.order = numbered(query.sql, query.params)
    except CodegenError as exc:
        raise query.error(str(exc)) from None
    except LonePercent as exc:
        raise CodegenError(f"{shown(query.path)}:{query.body_line + exc.line}: {query.name}:"
                           " use %% for a literal percent sign") from None
    try:
        statements = pglast.parse_sql(query.text)
    except ParseError as exc:
        message, offset = (exc.args[0], exc.args[1]) if len(exc.args) > 1 else (first_line(exc), None)
        raise query.error(str(message), offset) from None
    if query.operation == SQLOperationType.SCRIPT:
        return
    if len(statements) != 1:
        raise query.error(f"holds {len(statements)} statements; only a script (name#) may hold several")
    query.tree = statements[0].stmt


def describe(conn: psycopg.Connection[Any], catalog: Catalog, query: Query) -> None:
    """Parameter and result types from the database, result nullability from the parse tree."""
    pgconn = conn.pgconn
    result = pgconn.prepare(b"", query.text.encode())
    if result.status != pq.ExecStatus.COMMAND_OK:
        message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode()
        position = (result.error_field(pq.DiagnosticField.STATEMENT_POSITION) or b"").decode()
        raise query.error(message, int(position) - 1 if position.isdigit() else None)
    try:
        described = pgconn.describe_prepared(b"")
    finally:
        pgconn.exec_(b"deallocate all")
    for i, name in enumerate(query.order):
        oid = described.param_type(i)
        if oid not in catalog.types:
            raise query.error(f"parameter {name} has no type (add a cast)")
        try:
            query.param_types[name] = parameter_type(catalog, oid)
        except CodegenError as exc:
            raise query.error(f"parameter {name}: {exc}") from None
    for name in query.params:
        query.param_types.setdefault(name, "object")  # declared but unused: accepted, ignored
    query.optional = query.marks["optional"]
    if unknown := query.optional - set(query.params):
        raise query.error(f"optional: {', '.join(sorted(unknown))} is not a parameter")
    names = [(described.fname(i) or b"").decode() for i in range(described.nfields)]
    nullable, not_null = query.marks["nullable"], query.marks["not-null"]
    if unknown := (nullable | not_null) - set(names):
        raise query.error(f"override names no result column: {', '.join(sorted(unknown))}")
    if both := nullable & not_null:
        raise query.error(f"{', '.join(sorted(both))} is marked both nullable and not-null")
    reading = query.operation in (SQLOperationType.SELECT, SQLOperationType.SELECT_ONE)
    if reading and (twice := sorted({n for n in names if names.count(n) > 1})):
        raise query.error(f'result column "{twice[0]}" appears more than once; give each its own name (as ...)')
    if reading:
        for name in names:
            if problem := column_problem(name):
                raise query.error(f'result column "{name}" {problem}')
    inferred, elements = infer(catalog, query, len(names))
    for i, name in enumerate(names):
        table_oid, attnum = described.ftable(i), described.ftablecol(i)
        source = catalog.attributes.get((table_oid, attnum))
        table = catalog.table_oids.get(table_oid)
        try:
            annotation, is_json = python_type(catalog, described.ftype(i), table, source[0] if source else None)
        except CodegenError as exc:
            raise query.error(f'result column "{name}": {exc}') from None
        if elements[i] is True and annotation.startswith("list[") and annotation.count("[") == 1:
            annotation = f"list[{annotation[5:-1]} | None]"  # array_agg(x) of an x that may be NULL...
        null = True if name in nullable else False if name in not_null else inferred[i]
        if null is None:
            raise query.error(f'cannot tell whether column "{name}" can be null; add an override'
                              f" (-- nullable: {name} or -- not-null: {name}, under the description)")
        query.columns.append(Column(name, annotation, null, is_json))


def infer(catalog: Catalog, query: Query, count: int) -> tuple[list[bool | None], list[bool | None]]:
    """Whether each of the count result columns can be NULL (None: cannot tell), and whether the
    elements of each (an array) can be (None: not told; the elements are then typed non-null). A value
    query's one column is Optional anyway (no row reads as None), and nothing reads a `!` or `#` query's."""
    optional = {i + 1 for i, name in enumerate(query.order) if name in query.marks["optional"]}
    analyzer = Analyzer(catalog.relations, (SCHEMA, "pg_catalog"), catalog.functions, optional)
    elements = analyzer.elements(query.tree) if query.tree is not None else None
    if elements is None or len(elements) != count:
        elements = [None] * count
    if query.operation not in (SQLOperationType.SELECT, SQLOperationType.SELECT_ONE):
        return [True] * count, elements
    columns = analyzer.columns(query.tree) if query.tree is not None else None
    if columns is None or len(columns) != count:
        return [None] * count, elements
    return [null for _, null in columns], elements


def load_queries(conn: psycopg.Connection[Any], catalog: Catalog, source: Path | None = None) -> list[Query]:
    """Every query of source (default queries/), parsed and described on the database."""
    queries = read_queries(source)
    for query in queries:
        if query.operation != SQLOperationType.SCRIPT:
            describe(conn, catalog, query)
    return queries


def match_table(catalog: Catalog, columns: list[Column]) -> str | None:
    """The table whose row has these columns (name, type), none of them NULL where the table's may not be."""
    for table, table_columns in catalog.tables.items():
        if [(c.name, c.annotation) for c in table_columns] == [(c.name, c.annotation) for c in columns] and all(
                t.nullable or not c.nullable for t, c in zip(table_columns, columns, strict=True)):
            return table
    return None


# Rendering

def header(source: str, what: str = "") -> str:
    return f'"""Generated by automl_db.tools.codegen from {source} - do not edit.{what}"""\n'


def imports(annotations: Iterable[str], local: Iterable[str] = ()) -> list[str]:
    """The import lines for the names the annotations use but the module does not define (ruff's isort
    orders them afterwards)."""
    modules: dict[str, set[str]] = {}
    skip = BUILTINS | set(local)
    for annotation in annotations:
        for name in re.findall(r"[A-Za-z_]\w*", annotation):
            if name in skip:
                continue
            module = IMPORTS.get(name) or "automl_db.rows"
            modules.setdefault(module, set()).add(name)
    return [f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(modules.items())]


def model_field(column: Column) -> str:
    annotation = f"{column.annotation} | None" if column.nullable else column.annotation
    return f"    {column.name}: {annotation}" + (" = None" if column.nullable else "")


def render_rows(catalog: Catalog, queries: list[Query]) -> str:
    body: list[str] = []
    for enum, labels in sorted(catalog.enums.items()):
        body += ["", f"class {camel(enum)}(Label):", f'    """PostgreSQL enum {enum}."""', ""]
        body += [f'    {label.upper()} = "{label}"' for label in labels]
        body.append("")
    for table, columns in sorted(catalog.tables.items()):
        body += ["", f"class {singular(table)}(Row):", f'    """A row of {table}."""', ""]
        body += [model_field(c) for c in columns]
        body.append("")
    shapes: dict[str, Query] = {}
    for query in queries:
        if not query.columns or query.operation not in (SQLOperationType.SELECT, SQLOperationType.SELECT_ONE):
            continue
        if matched := match_table(catalog, query.columns):
            query.row_model = singular(matched)
        else:
            query.row_model = camel(query.name) + "Row"
            taken = {camel(e) for e in catalog.enums} | {singular(t) for t in catalog.tables}
            if query.row_model in taken:
                raise query.error(f"its row model {query.row_model} is also a table's or an enum's; rename the query")
            shapes[query.row_model] = query
    for model, query in sorted(shapes.items()):
        body += ["", f"class {model}(Row):", f'    """A row of query {query.name}."""', ""]
        body += [model_field(c) for c in query.columns]
        body.append("")
    used = ["Label", "Row", *(c.annotation for cs in catalog.tables.values() for c in cs),
            *(c.annotation for q in shapes.values() for c in q.columns)]
    lines = [header("the migrated schema and queries/"), *imports(used, local=map(camel, catalog.enums)), "", *body]
    return "\n".join(lines).rstrip() + "\n"


def signature(query: Query) -> str:
    required = [f"{p}: {query.param_types[p]}" for p in query.params if p not in query.optional]
    optional = [f"{p}: {query.param_types[p]} | None = None" for p in query.params if p in query.optional]
    return ", *, " + ", ".join(required + optional) if query.params else ""


def returns(query: Query) -> str:
    op = query.operation
    if op in (SQLOperationType.SELECT, SQLOperationType.SELECT_ONE) and not query.row_model:
        raise query.error("returns no columns: use name! for a statement without a result")
    if op == SQLOperationType.SELECT_VALUE:
        return f"{query.columns[0].annotation if query.columns else 'object'} | None"
    return {SQLOperationType.SCRIPT: "None", SQLOperationType.INSERT_UPDATE_DELETE: "int",
            SQLOperationType.SELECT_ONE: f"{query.row_model} | None",
            SQLOperationType.SELECT: f"list[{query.row_model}]"}[op]


def render_module(path: Path, queries: list[Query]) -> str:
    """One module per queries/ file: each query's SQL once, its sync function and its async function."""
    body: list[str] = []
    helpers: set[str] = {"checked"}
    annotations: list[str] = ["Any", "Connection", "AsyncConnection"]
    for query in queries:
        if query.operation not in HELPERS:
            raise query.error(f"operator {query.operation.name} is not supported")
        constant, result = query.name.upper(), returns(query)
        helper = HELPERS[query.operation]
        helpers |= {helper, f"{helper}_async"}
        annotations += [*query.param_types.values(), result]
        # the arguments by name: locals() holds exactly them (and conn, which no placeholder names)
        arguments = [constant] if query.operation == SQLOperationType.SCRIPT else [
            constant, "locals()" if query.params else "None"]
        if query.row_model and query.operation in (SQLOperationType.SELECT, SQLOperationType.SELECT_ONE):
            arguments.append(query.row_model)
        if query.operation != SQLOperationType.SCRIPT:
            arguments.append(f'"{query.name}"')
        if query.operation == SQLOperationType.SELECT_VALUE:
            arguments.append(result)  # the value is validated as the declared type
        if clash := sorted(set(query.params) & {constant, query.row_model or "", helper, f"{helper}_async"}):
            raise query.error(f"parameter {clash[0]} shadows a name the generated function uses; rename it")
        call = ", ".join(["conn", *arguments])
        doc = query.doc.replace("\\", "\\\\").replace('"', '\\"')
        body += ["", f'{constant} = r"""', query.sql.rstrip().rstrip(";"), '"""', ""]
        for asynchronous in (False, True):
            prefix, suffix, wait = ("async ", "_async", "await ") if asynchronous else ("", "", "")
            conn = "AsyncConnection[Any]" if asynchronous else "Connection[Any]"
            body += ["", "@checked", f"{prefix}def {query.name}{suffix}(conn: {conn}{signature(query)}) -> {result}:",
                     f'    """{doc}"""', f"    return {wait}{helper}{suffix}({call})", ""]
    imported = {name for line in imports(annotations) for name in line.partition(" import ")[2].split(", ")}
    for query in queries:
        if clash := sorted({query.name, f"{query.name}_async", query.name.upper()} & imported):
            raise query.error(f"the generated name {clash[0]} shadows a name the module imports; rename the query")
    lines = [header(f"queries/{path.name}"), *imports(annotations),
             f"from automl_db.runtime import {', '.join(sorted(helpers))}", "", *body]
    return "\n".join(lines).rstrip() + "\n"


def render_package(modules: list[str]) -> str:
    what = " Every query's SQL (GET_USER), sync (get_user) and async function (get_user_async)."
    lines = [header("queries/*.sql", what),
             *[f"from automl_db.queries.{m} import *" for m in modules]]
    return "\n".join(lines) + "\n"


def render_aqueries(queries: list[Query]) -> str:
    names = sorted(q.name for q in queries)
    by_module: dict[str, list[str]] = {}
    for query in queries:
        by_module.setdefault(query.module, []).append(query.name)
    lines = [header("queries/*.sql", " The async query functions under their plain names.")]
    for module, functions in sorted(by_module.items()):
        lines.append(f"from automl_db.queries.{module} import "
                     + ", ".join(f"{f}_async as {f}" for f in sorted(functions)))
    lines += ["", f"__all__ = [{', '.join(repr(n).replace(chr(39), chr(34)) for n in names)}]"]
    return "\n".join(lines) + "\n"


@contextmanager
def codegen_database() -> Iterator[psycopg.Connection[Any]]:
    with scratch.database("codegen") as url:
        migrate.apply(url)
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn


def formatted(path: Path, text: str) -> str:
    """The text as `ruff check --select I --fix` then `ruff format` leave it (the project's settings),
    so --check compares like with like."""
    for command in (["check", "--select", "I", "--fix", "--quiet", "--exit-zero"], ["format"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, "--stdin-filename", str(path), "-"],
                                input=text, capture_output=True, text=True, check=False, cwd=ROOT)
        if result.returncode != 0:
            raise CodegenError(f"ruff {command[0]} failed on {shown(path)}: {first_line(Exception(result.stderr))}")
        text = result.stdout
    return text


def generate(source: Path | None = None) -> dict[Path, str]:
    """The generated files (path -> text) for the queries of source (default queries/)."""
    read_queries(source)  # refuse what the parser refuses before building a database
    with codegen_database() as conn:
        catalog = read_catalog(conn)
        queries = load_queries(conn, catalog, source)
    files = {PACKAGE / "rows.py": render_rows(catalog, queries)}
    by_module: dict[Path, list[Query]] = {}
    for query in queries:
        by_module.setdefault(query.path, []).append(query)
    for path, members in sorted(by_module.items()):
        files[PACKAGE / "queries" / f"{path.stem}.py"] = render_module(path, members)
    files[PACKAGE / "queries" / "__init__.py"] = render_package(sorted(p.stem for p in by_module))
    files[PACKAGE / "aqueries.py"] = render_aqueries(queries)
    return {path: formatted(path, text) for path, text in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="automl_db.tools.codegen", description="Generate typed code from queries/.")
    parser.add_argument("--check", action="store_true", help="fail if the generated files are stale")
    parser.add_argument("--queries", type=Path, metavar="DIR",
                        help="read the queries from DIR instead of queries/ (to try them): with --check, or --out")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write the generated files under DIR (automl_db/... inside it) instead of the package")
    args = parser.parse_args(argv)
    if args.queries is not None and not args.check and args.out is None:
        # the committed modules are generated from queries/: other queries must not overwrite them
        return refuse("--queries DIR leaves the committed generated modules alone: add --check (refusals and"
                      " staleness only) or --out DIR (write the generated files there)")
    if args.out is not None and args.check:
        return refuse("--out and --check exclude each other")
    try:
        files = generate(args.queries)
    except CodegenError as exc:
        return refuse(str(exc))
    except MigrationFailed as exc:
        return refuse(f"the migrations do not apply: {first_line(exc)}")
    except (psycopg.OperationalError, AutomlDbError) as exc:
        return refuse(f"cannot reach the database: {first_line(exc)}")
    except Exception as exc:  # every failure is one line: no traceback
        return refuse(f"{type(exc).__name__}: {first_line(exc)}")
    if args.out is not None:
        for path, text in files.items():
            target = args.out / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target}")
        return 0
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    # modules of .sql files that are gone, and the single module the package replaced
    leftover = [p for p in sorted((PACKAGE / "queries").glob("*.py")) if p not in files]
    leftover += [p for p in [PACKAGE / "queries.py"] if p.exists()]
    if args.check:
        for path in [*stale, *leftover]:
            print(f"codegen: {shown(path)} is stale; run `just codegen`", file=sys.stderr)
        return 1 if stale or leftover else 0
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {shown(path)}")
    for path in leftover:
        path.unlink()
        print(f"removed {shown(path)}")
    if not stale and not leftover:
        print("generated code is up to date")
    return 0


def refuse(message: str) -> int:
    print(f"codegen: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
