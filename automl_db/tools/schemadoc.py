"""`docs/schema.md`: the schema reference, written from the catalog of a database the migrations built.

    python -m automl_db.tools.schemadoc          # (just schema-doc) rewrite docs/schema.md
    python -m automl_db.tools.schemadoc --check  # fail when it is stale (just lint)

Everything comes from the catalog: the tables, columns, rules and triggers that exist and the
`COMMENT ON` text the schema gives each, so the page says what PostgreSQL says, not what someone
remembered. An ER diagram (Mermaid `erDiagram`, which GitHub renders) draws the foreign keys;
links that are deliberately not foreign keys are listed from the comments that say so. The output
is deterministic (sorted, no timestamps) and the same on PostgreSQL 15 to 18, so the check is exact.
"""

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from automl_db.errors import AutomlDbError
from automl_db.tools import migrate, scratch
from automl_db.tools.paths import PROJECT_ROOT, migrations_dir
from automl_db.tools.project import NAMESPACE, SCHEMA
from automl_db.urls import connect, resolve_url

DEFAULT_OUTPUT = (PROJECT_ROOT or Path.cwd()) / "docs" / "schema.md"
#: The schema's roles, in the order the page lists their privileges.
ROLES = ("automl_app", "automl_worker", "automl_billing", "automl_readonly")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
#: A column comment containing this marks a link that is not a foreign key on purpose.
NOT_A_FOREIGN_KEY = re.compile(r"not a foreign key", re.IGNORECASE)
_TRIGGER = re.compile(
    r"^CREATE (?:CONSTRAINT )?TRIGGER \S+ (?P<timing>BEFORE|AFTER|INSTEAD OF) (?P<events>.+?) ON \S+ "
    r".*?FOR EACH (?P<level>ROW|STATEMENT)(?: WHEN \((?P<when>.*)\))? EXECUTE (?:FUNCTION|PROCEDURE) \S+\(.*\)$")


class SchemaDocError(AutomlDbError):
    """The reference could not be written (the trigger grammar changed, a table has no comment...)."""


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None
    generated: str | None
    comment: str | None


@dataclass
class Constraint:
    name: str
    kind: str  # primary key, unique, foreign key, check, exclusion, unique index
    definition: str
    comment: str | None
    columns: list[str]
    references: str | None = None
    #: A unique index with a WHERE clause: unique among some rows only.
    partial: bool = False


@dataclass
class Trigger:
    name: str
    timing: str
    events: str
    level: str
    when: str | None
    function: str
    function_comment: str | None
    security_definer: bool
    enabled: str


@dataclass
class Policy:
    name: str
    command: str
    roles: str
    using: str | None
    check: str | None


@dataclass
class Table:
    name: str
    comment: str | None
    row_security: str
    columns: list[Column] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    grants: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Catalog:
    tables: list[Table]
    types: list[dict[str, Any]]
    functions: list[dict[str, Any]]


# -- reading the catalog -------------------------------------------------------------------------


def read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    cur = conn.cursor(row_factory=dict_row)
    tables = [Table(r["relname"], r["comment"], r["rls"]) for r in cur.execute(f"""
        select c.relname, obj_description(c.oid, 'pg_class') as comment,
               case when c.relforcerowsecurity then 'enabled and forced'
                    when c.relrowsecurity then 'enabled' else 'off' end as rls
          from pg_class c
         where c.relnamespace = {NAMESPACE} and c.relkind in ('r', 'p')
         order by c.relname""")]
    for table in tables:
        _read_table(cur, table)
    types = cur.execute(f"""
        select t.typname as name, case t.typtype when 'e' then 'enum' else 'domain' end as kind,
               coalesce((select string_agg(e.enumlabel, ', ' order by e.enumsortorder)
                           from pg_enum e where e.enumtypid = t.oid),
                        format_type(t.typbasetype, t.typtypmod) || coalesce(' ' || (
                            select string_agg('CONSTRAINT ' || k.conname || ' ' || pg_get_constraintdef(k.oid), ' '
                                              order by k.conname)
                              from pg_constraint k where k.contypid = t.oid and k.contype = 'c'), '')) as definition,
               obj_description(t.oid, 'pg_type') as comment
          from pg_type t
         where t.typnamespace = {NAMESPACE} and t.typtype in ('e', 'd')
         order by t.typtype desc, t.typname""").fetchall()
    functions = cur.execute(f"""
        select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as signature,
               pg_get_function_result(p.oid) as result, p.prosecdef as definer,
               obj_description(p.oid, 'pg_proc') as comment,
               coalesce((select string_agg(a.grantee::regrole::text, ', ' order by a.grantee::regrole::text)
                           from aclexplode(p.proacl) a
                          where a.privilege_type = 'EXECUTE' and a.grantee <> p.proowner and a.grantee <> 0),
                        '') as callers
          from pg_proc p
         where p.pronamespace = {NAMESPACE} and p.prorettype <> 'trigger'::regtype
         order by p.proname, pg_get_function_identity_arguments(p.oid)""").fetchall()
    return Catalog(tables, types, functions)


def _read_table(cur: psycopg.Cursor[dict[str, Any]], table: Table) -> None:
    oid = f"'{SCHEMA}.{table.name}'::regclass"
    for r in cur.execute(f"""
            select a.attname, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid) as expr, a.attgenerated <> '' as generated,
                   col_description(a.attrelid, a.attnum) as comment
              from pg_attribute a
              left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
             where a.attrelid = {oid} and a.attnum > 0 and not a.attisdropped
             order by a.attnum"""):
        table.columns.append(Column(r["attname"], r["type"], r["attnotnull"], None if r["generated"] else r["expr"],
                                    r["expr"] if r["generated"] else None, r["comment"]))
    kinds = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion"}
    # contype 'n' (NOT NULL as a constraint, PostgreSQL 18) is left out: the columns table says it.
    for r in cur.execute(f"""
            select k.conname, k.contype, pg_get_constraintdef(k.oid) as definition,
                   obj_description(k.oid, 'pg_constraint') as comment,
                   array(select a.attname from unnest(k.conkey) with ordinality u(n, i)
                           join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.n order by u.i) as columns,
                   case when k.contype = 'f' then k.confrelid::regclass::text end as references,
                   false as partial
              from pg_constraint k
             where k.conrelid = {oid} and k.contype in ('p', 'u', 'f', 'c', 'x')
            union all
            select i.indexrelid::regclass::text, 'i', pg_get_indexdef(i.indexrelid),
                   obj_description(i.indexrelid, 'pg_class'),
                   array(select a.attname from unnest(i.indkey::int2[]) u(n)
                           join pg_attribute a on a.attrelid = i.indrelid and a.attnum = u.n),
                   null, i.indpred is not null
              from pg_index i
             where i.indrelid = {oid} and i.indisunique
               and not exists (select from pg_constraint k where k.conindid = i.indexrelid and k.conrelid = i.indrelid)
             order by 1"""):
        kind = kinds.get(r["contype"], "unique index")
        definition = r["definition"]
        if kind == "unique index":  # CREATE UNIQUE INDEX name ON automl.t USING btree (...) -> the part that matters
            definition = re.sub(r"^CREATE UNIQUE INDEX \S+ ON \S+ USING btree ", "UNIQUE ", definition)
        table.constraints.append(Constraint(r["conname"], kind, definition, r["comment"], list(r["columns"]),
                                            (r["references"] or "").removeprefix(f"{SCHEMA}.") or None, r["partial"]))
    for r in cur.execute(f"""
            select t.tgname, pg_get_triggerdef(t.oid) as definition, t.tgenabled,
                   p.proname || '()' as function, p.prosecdef, obj_description(p.oid, 'pg_proc') as comment
              from pg_trigger t join pg_proc p on p.oid = t.tgfoid
             where t.tgrelid = {oid} and not t.tgisinternal
             order by t.tgname"""):
        match = _TRIGGER.match(r["definition"])
        if match is None:
            raise SchemaDocError(f"cannot read the definition of trigger {r['tgname']}: {r['definition']}")
        enabled = {"O": "", "A": "always", "R": "replica only", "D": "disabled"}[r["tgenabled"]]
        table.triggers.append(Trigger(r["tgname"], match["timing"], match["events"], match["level"], match["when"],
                                      r["function"], r["comment"], r["prosecdef"], enabled))
    for r in cur.execute("""
            select policyname, cmd, array_to_string(roles, ', ') as roles, qual, with_check
              from pg_policies where schemaname = %s and tablename = %s order by policyname""", [SCHEMA, table.name]):
        table.policies.append(Policy(r["policyname"], r["cmd"], r["roles"], r["qual"], r["with_check"]))
    # Privileges of the schema's roles: on the table, and on single columns.
    granted: dict[str, dict[str, set[str] | None]] = defaultdict(dict)
    for r in cur.execute(f"""
            select a.grantee::regrole::text as role, a.privilege_type as privilege, null as column
              from pg_class c, aclexplode(c.relacl) a where c.oid = {oid}
            union all
            select a.grantee::regrole::text, a.privilege_type, t.attname
              from pg_attribute t, aclexplode(t.attacl) a
             where t.attrelid = {oid} and t.attnum > 0 and not t.attisdropped"""):
        if r["role"] not in ROLES:
            continue
        held = granted[r["role"]]
        if r["column"] is None:
            held[r["privilege"]] = None  # the whole table
        elif r["privilege"] not in held or held[r["privilege"]] is not None:
            columns = held.setdefault(r["privilege"], set())
            assert columns is not None
            columns.add(r["column"])
    order = {c.name: n for n, c in enumerate(table.columns)}
    for role in ROLES:
        if role in granted:
            table.grants[role] = [
                p if granted[role][p] is None else
                f"{p} ({', '.join(sorted(granted[role][p] or (), key=lambda c: order[c]))})"
                for p in PRIVILEGES if p in granted[role]]


# -- writing the page ----------------------------------------------------------------------------


def _cell(text: str | None) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join((text or "").split()).replace("|", "\\|")


def _code(text: str | None) -> str:
    return f"`{_cell(text)}`" if text else ""


def _mermaid_type(type_name: str) -> str:
    short = {"timestamp with time zone": "timestamptz", "character varying": "varchar",
             "double precision": "float8"}.get(type_name, type_name)
    return re.sub(r"[^A-Za-z0-9_\[\]]", "_", short)


def _first_sentence(text: str | None) -> str:
    if not text:
        return ""
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text


def _unique_sets(table: Table) -> list[set[str]]:
    """The column sets unique over the whole table (partial unique indexes are not)."""
    return [set(c.columns) for c in table.constraints
            if c.kind in ("primary key", "unique", "unique index") and not c.partial and c.columns]


def er_diagram(catalog: Catalog) -> list[str]:
    """Tables with their key columns, and one relationship per foreign key, named for it. PK marks
    the primary key's columns, FK any column of a foreign key, UK a column unique on its own."""
    lines = ["```mermaid", "erDiagram"]
    for table in catalog.tables:
        keys: dict[str, list[str]] = defaultdict(list)
        for constraint in table.constraints:
            if constraint.kind == "primary key":
                for name in constraint.columns:
                    keys[name].append("PK")
            elif constraint.kind == "foreign key":
                for name in constraint.columns:
                    keys[name].append("FK")
        for unique in _unique_sets(table):
            if len(unique) == 1 and "PK" not in keys[next(iter(unique))]:
                keys[next(iter(unique))].append("UK")
        lines.append(f"    {table.name} {{")
        for column in table.columns:
            if marks := sorted(set(keys.get(column.name, [])), key=["PK", "FK", "UK"].index):
                lines.append(f"        {_mermaid_type(column.type)} {column.name} {', '.join(marks)}")
        lines.append("    }")
    for table in catalog.tables:
        columns = {c.name: c for c in table.columns}
        unique_sets = _unique_sets(table)
        for fk in (c for c in table.constraints if c.kind == "foreign key"):
            parent = "||" if all(columns[n].not_null for n in fk.columns) else "|o"
            child = "o|" if any(u <= set(fk.columns) for u in unique_sets) else "o{"
            lines.append(f'    {fk.references} {parent}--{child} {table.name} : "{fk.name}"')
    lines.append("```")
    return lines


def render(catalog: Catalog, migrations: list[str]) -> str:
    out = [
        "# Schema reference",
        "",
        "<!-- Generated by `just schema-doc` (python -m automl_db.tools.schemadoc); do not edit by hand. -->",
        "",
        "Written by `just schema-doc` from the catalog of a database built by `migrations/`"
        f" (up to `{migrations[-1] if migrations else '-'}`): every purpose and comment below is the schema's"
        " own `COMMENT ON`, every rule its real definition. `just lint` fails when this page is stale."
        " `\\d+ <table>` in `automl-db psql` shows the same.",
        "",
        "## Entity-relationship diagram",
        "",
        "One line per foreign key, labelled with its name; `||` exactly one, `|o` zero or one, `o{` any"
        " number. Key columns only (PK primary key, FK foreign key, UK unique); children reference their"
        " parent through `(id, user_id)`, so a row never points at another user's row.",
        "",
        *er_diagram(catalog),
        "",
    ]
    loose = [(t.name, c) for t in catalog.tables for c in t.columns
             if c.comment and NOT_A_FOREIGN_KEY.search(c.comment)]
    if loose:
        out += ["Links that are deliberately **not** foreign keys (so not drawn), as their comments say:", ""]
        out += [f"- `{table}.{column.name}`: {_cell(column.comment)}" for table, column in loose]
        out.append("")
    out += ["## Tables", "", "| table | purpose |", "|---|---|"]
    out += [f"| [`{t.name}`](#{t.name}) | {_cell(_first_sentence(t.comment))} |" for t in catalog.tables]
    out.append("")
    for table in catalog.tables:
        out += _table_section(table)
    out += ["## Types", "", "| type | kind | values or definition | comment |", "|---|---|---|---|"]
    out += [f"| `{t['name']}` | {t['kind']} | {_code(t['definition'])} | {_cell(t['comment'])} |"
            for t in catalog.types]
    out += ["", "## Functions", "",
            "Every function but the trigger functions (those are listed with their triggers). EXECUTE is revoked from"
            " PUBLIC: *callers* are the roles granted it; the owner and superusers may call any.",
            "", "| function | returns | security | callers | what it does |", "|---|---|---|---|---|"]
    out += [f"| `{_cell(f['signature'])}` | {_code(f['result'])} | {'definer' if f['definer'] else 'invoker'}"
            f" | {_cell(f['callers']) or '-'} | {_cell(f['comment'])} |" for f in catalog.functions]
    return "\n".join(out).rstrip() + "\n"


def _table_section(table: Table) -> list[str]:
    out = [f"### {table.name}", "", _cell(table.comment) or "*(no comment)*", "",
           "| column | type | nullable | default | comment |", "|---|---|---|---|---|"]
    for c in table.columns:
        default = _code(c.default) if c.default else (f"generated: {_code(c.generated)}" if c.generated else "")
        nullable = "no" if c.not_null else "yes"
        out.append(f"| `{c.name}` | {_cell(c.type)} | {nullable} | {default} | {_cell(c.comment)} |")
    out.append("")
    if table.constraints:
        out += ["**Rules**", "", "| name | kind | definition | comment |", "|---|---|---|---|"]
        out += [f"| `{c.name}` | {c.kind} | {_code(c.definition)} | {_cell(c.comment)} |" for c in table.constraints]
        out.append("")
    if table.triggers:
        out += ["**Triggers**", "", "| name | when | events | for each | function | what the function does |",
                "|---|---|---|---|---|---|"]
        for t in table.triggers:
            when = t.timing.lower() + (f" {t.enabled}" if t.enabled else "")
            condition = f"<br>when {_code(t.when)}" if t.when else ""
            function = f"`{t.function}`" + (" (definer)" if t.security_definer else "")
            out.append(f"| `{t.name}` | {when} | {_cell(t.events.lower())}{condition} | {t.level.lower()} | {function}"
                       f" | {_cell(t.function_comment)} |")
        out.append("")
    out += [f"**Row-level security**: {table.row_security}."]
    if table.policies:
        out += ["", "| policy | command | roles | using | with check |", "|---|---|---|---|---|"]
        out += [f"| `{p.name}` | {p.command} | {_cell(p.roles)} | {_code(p.using)} | {_code(p.check)} |"
                for p in table.policies]
    out.append("")
    if table.grants:
        out += ["**Privileges** (columns in parentheses: granted on those columns only)", ""]
        out += [f"- `{role}`: {', '.join(privileges)}" for role, privileges in table.grants.items()]
    else:
        out.append("**Privileges**: none for the runtime roles (the owner only).")
    out.append("")
    return out


# -- building the database and the command -------------------------------------------------------


@contextmanager
def migrated_database(server_url: str) -> Iterator[str]:
    """A scratch database built by the migrations, dropped afterwards."""
    with scratch.database("schemadoc", server_url=server_url) as url:
        migrate.apply(url)
        yield url


def migration_ids() -> list[str]:
    return sorted(p.name.removesuffix(".sql") for p in migrations_dir().glob("*.sql")
                  if not p.name.endswith(".rollback.sql") and not p.name.startswith("post-apply"))


def generate(url: str | None = None) -> str:
    """The page for the database at url (built by the migrations), or for a fresh one."""
    if url is not None:
        with connect(url) as conn:
            return render(read_catalog(conn), migration_ids())
    with migrated_database(resolve_url()) as scratch_url, connect(scratch_url) as conn:
        return render(read_catalog(conn), migration_ids())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="automl_db.tools.schemadoc", description="Write docs/schema.md from the catalog."
    )
    parser.add_argument("--check", action="store_true", help="fail if the file is stale instead of writing it")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the page goes (docs/schema.md)")
    args = parser.parse_args(argv)
    try:
        text = generate()
    except (AutomlDbError, psycopg.Error) as exc:
        print(f"schemadoc: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
              file=sys.stderr)
        return 1
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"schemadoc: {args.output} is stale; run `just schema-doc`", file=sys.stderr)
            return 1
        return 0
    if current == text:
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
