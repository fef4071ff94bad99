"""`automl-db diff`: what separates the catalog the migrations build from the one schema/ builds, as
DRAFT SQL that takes the first to the second — the start of the next migration, to be reviewed.

Both databases are scratch databases of this process (automl_db.tools.scratch), built by the
parity test's own builders (automl_db.tools.catalog). The draft covers tables, columns, constraints,
indexes, functions, triggers, enums, domains, policies, row level security, comments, owners and
grants. Statements come in an order that works for most changes: first what goes away or is
replaced (triggers, policies, constraints, indexes), then what is new or changed in the order
schema/ created it (its catalog's OIDs: everything an object needs was made before it), then the
columns, tables, functions and types that go away, then comments, owners and grants. Whatever the
parity test would see that the draft does not cover is listed as a `-- not drafted:` comment, so
"no difference" means the parity test passes.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from automl_db.tools import catalog, scratch
from automl_db.tools.catalog import PROJECT_SCHEMA
from automl_db.tools.paths import schema_dir
from automl_db.urls import connect

SCHEMA = catalog.SCHEMA
Acl = frozenset[tuple[str, str, bool]]  # (grantee, privilege, grantable)


# -- reading a catalog ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    position: int
    type: str
    not_null: bool
    default: str
    generated: str  # 's': stored generated column (default is then its expression), 'v': virtual
    identity: str  # 'a' always, 'd' by default
    collation: str
    comment: str | None
    acl: Acl


@dataclass
class Table:
    oid: int
    kind: str
    persistence: str
    owner: str
    rls: bool
    force_rls: bool
    comment: str | None
    acl: Acl
    columns: dict[str, Column] = field(default_factory=dict)


@dataclass(frozen=True)
class Constraint:
    oid: int
    type: str
    definition: str
    comment: str | None


@dataclass(frozen=True)
class Defined:
    """An index, a trigger or a policy: a definition, a comment, what enables it (triggers)."""
    oid: int
    definition: str
    comment: str | None
    enabled: str = "O"


@dataclass(frozen=True)
class Function:
    oid: int
    kind: str
    signature: str
    definition: str | None
    result: str
    owner: str
    comment: str | None
    acl: Acl


@dataclass(frozen=True)
class Type:
    oid: int
    kind: str  # 'e' enum, 'd' domain, 'c' composite
    labels: tuple[str, ...]
    base: str
    default: str | None
    not_null: bool
    checks: tuple[tuple[str, str], ...]  # domain CHECKs: (name, definition)
    attributes: tuple[tuple[str, str], ...]  # composite: (name, type)
    owner: str
    comment: str | None
    acl: Acl


@dataclass
class Catalog:
    tables: dict[str, Table] = field(default_factory=dict)
    constraints: dict[tuple[str, str], Constraint] = field(default_factory=dict)
    indexes: dict[tuple[str, str], Defined] = field(default_factory=dict)
    triggers: dict[tuple[str, str], Defined] = field(default_factory=dict)
    policies: dict[tuple[str, str], Defined] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    types: dict[str, Type] = field(default_factory=dict)
    #: The server's default privileges of a new table ('r'), function ('f') and type ('T'):
    #: (grantee, privilege) with grantee 'owner' or 'public' (they differ between versions).
    defaults: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)


def _acl(expression: str) -> str:
    """An ACL column as text rows grantee|privilege|grantable (PUBLIC is 'public')."""
    return f"""coalesce((select array_agg(case when x.grantee = 0 then 'public' else quote_ident(r.rolname) end
                                          || '|' || x.privilege_type || '|' || x.is_grantable::text)
                          from aclexplode({expression}) x left join pg_roles r on r.oid = x.grantee), '{{}}')"""


def _parse_acl(rows: list[str]) -> Acl:
    out: set[tuple[str, str, bool]] = set()
    for row in rows:
        grantee, privilege, grantable = row.rsplit("|", 2)
        out.add((grantee, privilege, grantable == "true"))
    return frozenset(out)


TABLES = f"""
    select quote_ident(c.relname), c.oid::bigint, c.relkind::text, c.relpersistence::text,
           quote_ident(pg_get_userbyid(c.relowner)), c.relrowsecurity, c.relforcerowsecurity,
           obj_description(c.oid, 'pg_class'), {_acl("coalesce(c.relacl, acldefault('r', c.relowner))")}
      from pg_class c
     where c.relnamespace = {SCHEMA} and c.relkind in ('r', 'p', 'v', 'm', 'f')"""

COLUMNS = f"""
    select quote_ident(c.relname), quote_ident(a.attname),
           (select count(*) from pg_attribute o where o.attrelid = a.attrelid and o.attnum > 0
               and o.attnum <= a.attnum and not o.attisdropped)::int,
           format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
           a.attgenerated::text, a.attidentity::text,
           case when a.attcollation <> 0 and a.attcollation <> t.typcollation
                then (select quote_ident(n.nspname) || '.' || quote_ident(l.collname)
                        from pg_collation l join pg_namespace n on n.oid = l.collnamespace
                       where l.oid = a.attcollation) else '' end,
           col_description(c.oid, a.attnum), {_acl("a.attacl")}
      from pg_attribute a
      join pg_class c on c.oid = a.attrelid
      join pg_type t on t.oid = a.atttypid
      left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
     where c.relnamespace = {SCHEMA} and c.relkind in ('r', 'p', 'v', 'm', 'f')
       and a.attnum > 0 and not a.attisdropped"""

# Not-null constraints (contype 'n', PostgreSQL 18) are the columns' NOT NULL.
CONSTRAINTS = f"""
    select quote_ident(c.relname), quote_ident(k.conname), k.oid::bigint, k.contype::text,
           pg_get_constraintdef(k.oid), obj_description(k.oid, 'pg_constraint')
      from pg_constraint k join pg_class c on c.oid = k.conrelid
     where c.relnamespace = {SCHEMA} and k.contype <> 'n'"""

# Indexes of their own; those of primary key, unique and exclusion constraints come with them.
INDEXES = f"""
    select quote_ident(c.relname), quote_ident(ic.relname), i.indexrelid::bigint, pg_get_indexdef(i.indexrelid),
           obj_description(i.indexrelid, 'pg_class')
      from pg_index i join pg_class c on c.oid = i.indrelid join pg_class ic on ic.oid = i.indexrelid
     where c.relnamespace = {SCHEMA}
       and not exists (select from pg_constraint k where k.conindid = i.indexrelid and k.conrelid = i.indrelid
                          and k.contype in ('p', 'u', 'x'))"""

TRIGGERS = f"""
    select quote_ident(c.relname), quote_ident(t.tgname), t.oid::bigint, pg_get_triggerdef(t.oid),
           obj_description(t.oid, 'pg_trigger'), t.tgenabled::text
      from pg_trigger t join pg_class c on c.oid = t.tgrelid
     where c.relnamespace = {SCHEMA} and not t.tgisinternal"""

POLICIES = f"""
    select quote_ident(c.relname), quote_ident(p.polname), p.oid::bigint,
           format('create policy %s on %s as %s for %s to %s', quote_ident(p.polname), quote_ident(c.relname),
                  case when p.polpermissive then 'permissive' else 'restrictive' end,
                  case p.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                                when 'd' then 'delete' else 'all' end,
                  (select string_agg(case when r = 0 then 'public' else quote_ident(pg_get_userbyid(r)) end, ', '
                                     order by case when r = 0 then 'public' else pg_get_userbyid(r)::text end)
                     from unnest(p.polroles) r))
           || coalesce(' using (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
           || coalesce(' with check (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''),
           obj_description(p.oid, 'pg_policy')
      from pg_policy p join pg_class c on c.oid = p.polrelid
     where c.relnamespace = {SCHEMA}"""

FUNCTIONS = f"""
    select quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')', p.oid::bigint,
           p.prokind::text, p.oid::regprocedure::text,
           case when p.prokind in ('f', 'p', 'w') then pg_get_functiondef(p.oid) end,
           coalesce(pg_get_function_result(p.oid), ''), quote_ident(pg_get_userbyid(p.proowner)),
           obj_description(p.oid, 'pg_proc'), {_acl("coalesce(p.proacl, acldefault('f', p.proowner))")}
      from pg_proc p where p.pronamespace = {SCHEMA}"""

TYPES = f"""
    select quote_ident(t.typname), t.oid::bigint, t.typtype::text,
           coalesce((select array_agg(e.enumlabel::text order by e.enumsortorder) from pg_enum e
                      where e.enumtypid = t.oid), '{{}}'),
           case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) else '' end,
           t.typdefault, t.typnotnull,
           coalesce((select array_agg(quote_ident(k.conname) || '|' || pg_get_constraintdef(k.oid) order by k.conname)
                       from pg_constraint k where k.contypid = t.oid and k.contype = 'c'), '{{}}'),
           coalesce((select array_agg(quote_ident(a.attname) || '|' || format_type(a.atttypid, a.atttypmod)
                                      order by a.attnum)
                       from pg_attribute a where a.attrelid = t.typrelid and t.typtype = 'c' and a.attnum > 0
                        and not a.attisdropped), '{{}}'),
           quote_ident(pg_get_userbyid(t.typowner)), obj_description(t.oid, 'pg_type'),
           {_acl("coalesce(t.typacl, acldefault('T', t.typowner))")}
      from pg_type t
     where t.typnamespace = {SCHEMA} and t.typtype in ('e', 'd', 'c')
       and not exists (select from pg_class c where c.reltype = t.oid)"""


DEFAULTS = """
    select k, array_agg(case x.grantee when 0 then 'public' else 'owner' end || '|' || x.privilege_type)
      from unnest(array['r', 'f', 'T']) k, aclexplode(acldefault(k::"char", 10)) x
     group by k"""


def read(url: str) -> Catalog:
    """The project's objects in the database at url, their names as SQL writes them (quoted as needed)."""
    found = Catalog()
    with connect(url) as conn:
        conn.read_only = True
        # Names of the project's schema read unqualified, as the migrations write them.
        conn.execute(sql.SQL("select set_config('search_path', {}, true)").format(
            sql.Literal(sql.Identifier(PROJECT_SCHEMA).as_string(conn))))
        for kind, entries in _rows(conn, DEFAULTS):
            found.defaults[kind] = frozenset(tuple(entry.split("|", 1)) for entry in entries)
        for row in _rows(conn, TABLES):
            found.tables[row[0]] = Table(row[1], row[2], row[3], row[4], row[5], row[6], row[7], _parse_acl(row[8]))
        for row in _rows(conn, COLUMNS):
            found.tables[row[0]].columns[row[1]] = Column(row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                                                          row[9], _parse_acl(row[10]))
        for row in _rows(conn, CONSTRAINTS):
            found.constraints[(row[0], row[1])] = Constraint(row[2], row[3], row[4], row[5])
        for row in _rows(conn, INDEXES):
            found.indexes[(row[0], row[1])] = Defined(row[2], row[3], row[4])
        for row in _rows(conn, TRIGGERS):
            found.triggers[(row[0], row[1])] = Defined(row[2], row[3], row[4], row[5])
        for row in _rows(conn, POLICIES):
            found.policies[(row[0], row[1])] = Defined(row[2], row[3], row[4])
        for row in _rows(conn, FUNCTIONS):
            found.functions[row[0]] = Function(row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                                               _parse_acl(row[8]))
        for row in _rows(conn, TYPES):
            checks = tuple(tuple(c.split("|", 1)) for c in row[7])
            attributes = tuple(tuple(a.split("|", 1)) for a in row[8])
            found.types[row[0]] = Type(row[1], row[2], tuple(row[3]), row[4], row[5], row[6],
                                       checks, attributes, row[9], row[10],
                                       _parse_acl(row[11]))
    return found


def _rows(conn: psycopg.Connection[Any], query: str) -> list[Any]:
    return conn.execute(query).fetchall()


# -- the draft -----------------------------------------------------------------------------------

EARLY_DROP, CREATE, LATE_DROP, DECORATE = range(4)


@dataclass(frozen=True, order=True)
class Statement:
    phase: int
    key: int
    seq: int
    #: What it is about, e.g. "column users.nickname" (for --json and the headings).
    subject: str = field(compare=False)
    sql: str = field(compare=False)


class _Draft:
    def __init__(self) -> None:
        self.statements: list[Statement] = []

    def add(self, phase: int, key: int, subject: str, text: str) -> None:
        self.statements.append(Statement(phase, key, len(self.statements), subject, text))

    def ordered(self) -> list[Statement]:
        return sorted(self.statements)


def literal(text: str | None) -> str:
    return "null" if text is None else "'" + text.replace("'", "''") + "'"


def _comment(draft: _Draft, key: int, what: str, old: str | None, new: str | None, subject: str) -> None:
    if old != new:
        draft.add(DECORATE, key, subject, f"comment on {what} is {literal(new)};")


def _grants(draft: _Draft, key: int, target: str, old: Acl, new: Acl, subject: str,
            column: str | None = None) -> None:
    """GRANT what new has and old lacks, REVOKE what old has and new lacks (by grantee)."""
    on = f"({column}) on {target}" if column else f"on {target}"
    revoked: dict[str, list[str]] = {}
    for grantee, privilege, grantable in sorted(old - new):
        if (grantee, privilege, not grantable) in new:
            if grantable:  # only the grant option goes
                draft.add(DECORATE, key, subject, f"revoke grant option for {privilege.lower()} {on} from {grantee};")
            continue
        revoked.setdefault(grantee, []).append(privilege.lower())
    for grantee, privileges in revoked.items():
        draft.add(DECORATE, key, subject, f"revoke {', '.join(privileges)} {on} from {grantee};")
    granted: dict[tuple[str, bool], list[str]] = {}
    for grantee, privilege, grantable in sorted(new - old):
        if grantable is False and (grantee, privilege, True) in old:
            continue  # handled above
        granted.setdefault((grantee, grantable), []).append(privilege.lower())
    for (grantee, grantable), privileges in granted.items():
        option = " with grant option" if grantable else ""
        draft.add(DECORATE, key, subject, f"grant {', '.join(privileges)} {on} to {grantee}{option};")


def _reowned(acl: Acl, old_owner: str, new_owner: str) -> Acl:
    """An ACL as ALTER ... OWNER TO leaves it: the old owner's privileges pass to the new owner."""
    if old_owner in ("", new_owner):
        return acl
    return frozenset((new_owner if grantee == old_owner else grantee, privilege, grantable)
                     for grantee, privilege, grantable in acl)


def _column_spec(name: str, column: Column) -> str:
    spec = f"{name} {column.type}"
    if column.collation:
        spec += f" collate {column.collation}"
    if column.generated:
        spec += f" generated always as ({column.default})" + (" stored" if column.generated == "s" else " virtual")
    elif column.identity:
        spec += " generated " + ("always" if column.identity == "a" else "by default") + " as identity"
    elif column.default:
        spec += f" default {column.default}"
    if column.not_null:
        spec += " not null"
    return spec


def _tables(draft: _Draft, old: Catalog, new: Catalog) -> None:
    for name, table in new.tables.items():
        before = old.tables.get(name)
        key = table.oid
        subject = f"table {name}"
        if before is None:
            if table.kind != "r":
                draft.add(CREATE, key, subject, f"-- not drafted: {subject} of kind {table.kind!r}: write it by hand")
            else:
                columns = sorted(table.columns.items(), key=lambda item: item[1].position)
                body = ",\n".join(f"    {_column_spec(c, col)}" for c, col in columns)
                unlogged = "unlogged " if table.persistence == "u" else ""
                draft.add(CREATE, key, subject, f"create {unlogged}table {name} (\n{body}\n);")
            before = Table(0, table.kind, table.persistence, "", False, False, None,
                           _default_acl(new, table.owner, "r"), {c: _bare(col) for c, col in table.columns.items()})
            draft.add(DECORATE, key, subject, f"alter table {name} owner to {table.owner};")
        else:
            _columns(draft, name, key, before, table)
            if before.owner != table.owner:
                draft.add(DECORATE, key, subject, f"alter table {name} owner to {table.owner};")
        if before.rls != table.rls:
            draft.add(DECORATE, key, subject,
                      f"alter table {name} {'enable' if table.rls else 'disable'} row level security;")
        if before.force_rls != table.force_rls:
            draft.add(DECORATE, key, subject,
                      f"alter table {name} {'force' if table.force_rls else 'no force'} row level security;")
        _comment(draft, key, f"table {name}", before.comment, table.comment, subject)
        _grants(draft, key, f"table {name}", _reowned(before.acl, before.owner, table.owner), table.acl, subject)
        for column_name, column in table.columns.items():
            was = before.columns.get(column_name)
            _comment(draft, key, f"column {name}.{column_name}", was.comment if was else None, column.comment,
                     f"column {name}.{column_name}")
            _grants(draft, key, f"table {name}", was.acl if was else frozenset(), column.acl,
                    f"column {name}.{column_name}", column=column_name)
    for name, table in old.tables.items():
        if name not in new.tables:
            word = {"v": "view", "m": "materialized view", "f": "foreign table"}.get(table.kind, "table")
            draft.add(LATE_DROP, -table.oid, f"table {name}", f"drop {word} {name};")


def _bare(column: Column) -> Column:
    """A column as a CREATE TABLE makes it: with its comment and grants still to come."""
    return Column(column.position, column.type, column.not_null, column.default, column.generated, column.identity,
                  column.collation, None, frozenset())


def _default_acl(found: Catalog, owner: str, kind: str) -> Acl:
    """The privileges a new object of this kind has before any GRANT or REVOKE."""
    return frozenset((owner if grantee == "owner" else grantee, privilege, False)
                     for grantee, privilege in found.defaults.get(kind, frozenset()))


def _columns(draft: _Draft, table: str, key: int, before: Table, after: Table) -> None:
    alter = f"alter table {table}"
    for name, column in sorted(after.columns.items(), key=lambda item: item[1].position):
        subject = f"column {table}.{name}"
        was = before.columns.get(name)
        if was is None:
            draft.add(CREATE, key, subject, f"{alter} add column {_column_spec(name, column)};")
            continue
        if was.type != column.type or was.collation != column.collation:
            collate = f" collate {column.collation}" if column.collation else ""
            draft.add(CREATE, key, subject,
                      f"{alter} alter column {name} type {column.type}{collate} using {name}::{column.type};")
        if (was.generated, was.identity) != (column.generated, column.identity):
            draft.add(CREATE, key, subject, f"-- not drafted: {subject} changes how it is generated"
                      f" (generated {was.generated or '-'} -> {column.generated or '-'}, identity"
                      f" {was.identity or '-'} -> {column.identity or '-'}): write it by hand")
        elif was.default != column.default:
            if column.generated:
                draft.add(CREATE, key, subject, f"{alter} alter column {name} set expression as ({column.default});")
            elif column.default:
                draft.add(CREATE, key, subject, f"{alter} alter column {name} set default {column.default};")
            else:
                draft.add(CREATE, key, subject, f"{alter} alter column {name} drop default;")
        if was.not_null != column.not_null:
            draft.add(CREATE, key, subject,
                      f"{alter} alter column {name} {'set' if column.not_null else 'drop'} not null;")
    for name in before.columns:
        if name not in after.columns:
            draft.add(LATE_DROP, -before.oid, f"column {table}.{name}", f"{alter} drop column {name};")
    # A migration appends the columns it adds: schema/ must list them last for the catalogs to agree.
    kept = [c for c, _ in sorted(before.columns.items(), key=lambda item: item[1].position) if c in after.columns]
    added = [c for c, _ in sorted(after.columns.items(), key=lambda item: item[1].position)
             if c not in before.columns]
    wanted = [c for c, _ in sorted(after.columns.items(), key=lambda item: item[1].position)]
    if kept + added != wanted:
        draft.add(CREATE, key, f"table {table}", f"-- not drafted: schema/ orders {table}'s columns"
                  f" ({', '.join(wanted)}) unlike the migrations would ({', '.join(kept + added)}): a migration"
                  " appends the columns it adds, so list them last in schema/")


def _constraints(draft: _Draft, old: Catalog, new: Catalog) -> None:
    # Foreign keys go first and come last: they lean on the primary and unique keys.
    first = {"f": 0, "c": 1, "x": 1, "t": 1, "u": 2, "p": 3}
    for key, constraint in new.constraints.items():
        was = old.constraints.get(key)
        if was is not None and (was.type, was.definition) == (constraint.type, constraint.definition):
            _comment(draft, constraint.oid, f"constraint {key[1]} on {key[0]}", was.comment, constraint.comment,
                     f"constraint {key[0]}.{key[1]}")
            continue
        subject = f"constraint {key[0]}.{key[1]}"
        if was is not None:
            draft.add(EARLY_DROP, first.get(was.type, 1) * 10**10 - was.oid, subject,
                      f"alter table {key[0]} drop constraint {key[1]};")
        draft.add(CREATE, constraint.oid, subject,
                  f"alter table {key[0]} add constraint {key[1]} {constraint.definition};")
        _comment(draft, constraint.oid, f"constraint {key[1]} on {key[0]}", None, constraint.comment, subject)
    for key, was in old.constraints.items():
        if key not in new.constraints and key[0] in new.tables:
            draft.add(EARLY_DROP, first.get(was.type, 1) * 10**10 - was.oid, f"constraint {key[0]}.{key[1]}",
                      f"alter table {key[0]} drop constraint {key[1]};")


def _defined(draft: _Draft, old: dict[tuple[str, str], Defined], new: dict[tuple[str, str], Defined],
             kind: str, drop: Callable[[str, str], str], tables: dict[str, Table]) -> None:
    """Indexes, triggers and policies: dropped and created again when their definition changes."""
    for key, item in new.items():
        was = old.get(key)
        subject = f"{kind} {key[0]}.{key[1]}"
        what = f"index {key[1]}" if kind == "index" else f"{kind} {key[1]} on {key[0]}"
        if was is not None and was.definition == item.definition:
            _comment(draft, item.oid, what, was.comment, item.comment, subject)
        else:
            if was is not None:
                draft.add(EARLY_DROP, -was.oid, subject, drop(*key))
            draft.add(CREATE, item.oid, subject, item.definition.rstrip(";") + ";")
            _comment(draft, item.oid, what, None, item.comment, subject)
            was = None
        if kind == "trigger" and (was.enabled if was else "O") != item.enabled:
            state = {"D": "disable", "A": "enable always", "R": "enable replica"}.get(item.enabled, "enable")
            draft.add(DECORATE, item.oid, subject, f"alter table {key[0]} {state} trigger {key[1]};")
    for key, was in old.items():
        if key not in new and key[0] in tables:
            draft.add(EARLY_DROP, -was.oid, f"{kind} {key[0]}.{key[1]}", drop(*key))


def _functions(draft: _Draft, old: Catalog, new: Catalog) -> None:
    words = {"p": "procedure", "a": "aggregate", "w": "function", "f": "function"}
    for key, function in new.functions.items():
        was = old.functions.get(key)
        subject = f"{words[function.kind]} {key}"
        if function.definition is None:
            if was is None:
                draft.add(CREATE, function.oid, subject, f"-- not drafted: {subject}: write it by hand")
        elif was is None or was.definition != function.definition:
            if was is not None and (was.result != function.result or was.kind != function.kind):
                draft.add(EARLY_DROP, -was.oid, subject, f"-- its result changes ({was.result} -> {function.result}):"
                          f" CREATE OR REPLACE cannot do that\ndrop {words[was.kind]} {was.signature};")
            draft.add(CREATE, function.oid, subject, function.definition.rstrip() + ";")
        base = was or Function(0, function.kind, function.signature, None, "", function.owner, None,
                               _default_acl(new, function.owner, "f"))
        if base.owner != function.owner:
            draft.add(DECORATE, function.oid, subject,
                      f"alter {words[function.kind]} {function.signature} owner to {function.owner};")
        _comment(draft, function.oid, f"{words[function.kind]} {function.signature}", base.comment,
                 function.comment, subject)
        _grants(draft, function.oid, f"{words[function.kind]} {function.signature}",
                _reowned(base.acl, base.owner, function.owner), function.acl,
                subject)
    for key, was in old.functions.items():
        if key not in new.functions:
            draft.add(LATE_DROP, -was.oid, f"{words[was.kind]} {key}", f"drop {words[was.kind]} {was.signature};")


def _types(draft: _Draft, old: Catalog, new: Catalog) -> None:
    for name, kind in new.types.items():
        was = old.types.get(name)
        subject = {"e": "enum", "d": "domain", "c": "type"}[kind.kind] + f" {name}"
        key = kind.oid
        if was is not None and was.kind != kind.kind:
            draft.add(CREATE, key, subject, f"-- not drafted: {subject} changes kind: write it by hand")
            continue
        if kind.kind == "e":
            if was is None:
                labels = ", ".join(literal(label) for label in kind.labels)
                draft.add(CREATE, key, subject, f"create type {name} as enum ({labels});")
            elif was.labels != kind.labels:
                _enum_labels(draft, key, name, subject, was.labels, kind.labels)
        elif kind.kind == "d":
            _domain(draft, key, name, subject, was, kind)
        elif was is None:
            attributes = ", ".join(f"{a} {t}" for a, t in kind.attributes)
            draft.add(CREATE, key, subject, f"create type {name} as ({attributes});")
        elif was.attributes != kind.attributes:
            draft.add(CREATE, key, subject, f"-- not drafted: {subject} changes its attributes: write it by hand")
        base = was or Type(0, kind.kind, (), "", None, False, (), (), kind.owner, None,
                           _default_acl(new, kind.owner, "T"))
        word = "domain" if kind.kind == "d" else "type"
        if base.owner != kind.owner:
            draft.add(DECORATE, key, subject, f"alter {word} {name} owner to {kind.owner};")
        _comment(draft, key, f"{word} {name}", base.comment, kind.comment, subject)
        _grants(draft, key, f"{word} {name}", _reowned(base.acl, base.owner, kind.owner), kind.acl, subject)
    for name, was in old.types.items():
        if name not in new.types:
            draft.add(LATE_DROP, -was.oid, f"type {name}",
                      f"drop {'domain' if was.kind == 'd' else 'type'} {name};")


def _enum_labels(draft: _Draft, key: int, name: str, subject: str, old: tuple[str, ...],
                 new: tuple[str, ...]) -> None:
    if [label for label in new if label in old] != list(old):
        draft.add(CREATE, key, subject, f"-- not drafted: {subject} loses or reorders labels ({', '.join(old)} ->"
                  f" {', '.join(new)}): create the new type, move the columns to it, drop the old one")
        return
    for index, label in enumerate(new):
        if label not in old:
            where = f" before {literal(new[index + 1])}" if index + 1 < len(new) and new[index + 1] in old else (
                f" after {literal(new[index - 1])}" if index > 0 else "")
            draft.add(CREATE, key, subject, f"alter type {name} add value {literal(label)}{where};")


def _domain(draft: _Draft, key: int, name: str, subject: str, was: Type | None, kind: Type) -> None:
    if was is None:
        spec = f"create domain {name} as {kind.base}"
        if kind.default is not None:
            spec += f" default {kind.default}"
        if kind.not_null:
            spec += " not null"
        for check, definition in kind.checks:
            spec += f"\n    constraint {check} {definition}"
        draft.add(CREATE, key, subject, spec + ";")
        return
    if was.base != kind.base:
        draft.add(CREATE, key, subject, f"-- not drafted: {subject} changes its base type ({was.base} ->"
                  f" {kind.base}): write it by hand")
    if was.default != kind.default:
        draft.add(CREATE, key, subject, f"alter domain {name} "
                  + (f"set default {kind.default};" if kind.default is not None else "drop default;"))
    if was.not_null != kind.not_null:
        draft.add(CREATE, key, subject, f"alter domain {name} {'set' if kind.not_null else 'drop'} not null;")
    old_checks, new_checks = dict(was.checks), dict(kind.checks)
    for check, definition in old_checks.items():
        if new_checks.get(check) != definition:
            draft.add(EARLY_DROP, -was.oid, subject, f"alter domain {name} drop constraint {check};")
    for check, definition in new_checks.items():
        if old_checks.get(check) != definition:
            draft.add(CREATE, key, subject, f"alter domain {name} add constraint {check} {definition};")


def draft(old: Catalog, new: Catalog) -> list[Statement]:
    """The statements that take the catalog old (the migrations') to new (schema/'s), in order."""
    out = _Draft()
    _types(out, old, new)
    _functions(out, old, new)
    _tables(out, old, new)
    _constraints(out, old, new)
    _defined(out, old.indexes, new.indexes, "index", lambda table, name: f"drop index {name};", new.tables)
    _defined(out, old.triggers, new.triggers, "trigger", lambda table, name: f"drop trigger {name} on {table};",
             new.tables)
    _defined(out, old.policies, new.policies, "policy", lambda table, name: f"drop policy {name} on {table};",
             new.tables)
    return out.ordered()


# -- what the draft does not cover ---------------------------------------------------------------

#: Parts of the parity test's snapshot the draft has no statements for.
NOT_DRAFTED = ("extensions", "ambient rights", "reference rows")


def leftovers(old: dict[str, set[tuple[Any, ...]]], new: dict[str, set[tuple[Any, ...]]]) -> dict[str, list[str]]:
    """The parity test's differences by part, as comment lines."""
    lines: dict[str, list[str]] = {}
    for part in sorted(set(old) | set(new)):
        found = [f"-- {part}, only in schema/: " + " | ".join(map(str, row))
                 for row in sorted(new.get(part, set()) - old.get(part, set()))]
        found += [f"-- {part}, only in migrations/: " + " | ".join(map(str, row))
                  for row in sorted(old.get(part, set()) - new.get(part, set()))]
        if found:
            lines[part] = [" ".join(line.split())[:300] for line in found]
    return lines


# -- the command ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    statements: list[Statement]
    #: The parity test's own view of what differs, by part (empty exactly when the catalogs agree).
    parity: dict[str, list[str]]
    #: After applying the draft to a copy of the migrations' database: what still differs, as
    #: comment lines (empty: nothing), or None when the draft was not tried.
    remaining: list[str] | None = None

    @property
    def identical(self) -> bool:
        return not self.statements and not self.parity

    def notes(self) -> list[str]:
        """What the draft leaves undone: what still differed after applying it when it was tried;
        otherwise the parity differences of parts it does not cover, and all of them when it has
        no statement at all (something it does not read differs)."""
        if self.remaining is not None:
            return self.remaining
        shown = self.parity if not self.statements else {
            part: lines for part, lines in self.parity.items() if part in NOT_DRAFTED}
        return [line for lines in shown.values() for line in lines]

    def text(self) -> str:
        head = ["-- DRAFT (automl-db diff): from the catalog migrations/ builds to the one schema/ builds.",
                "-- Review every statement before it goes into a migration (automl-db migration new NAME).",
                f"set local search_path = {PROJECT_SCHEMA}, public;"]
        notes = self.notes()
        if notes:
            tail = ["", "-- Not done by this draft (applied to a copy of the migrations' database, these still"
                    " differ):" if self.remaining is not None else "-- Not drafted; the parity test sees these differ:",
                    *notes]
        elif self.remaining is not None:
            tail = ["", "-- Checked: applied to a copy of the migrations' database, this draft leaves no difference."]
        else:
            tail = []
        return "\n".join([*head, "", *[s.sql for s in self.statements], *tail]) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {"identical": self.identical,
                "statements": [{"subject": s.subject, "sql": s.sql} for s in self.statements],
                "checked": self.remaining is not None, "not_done": self.notes(), "sql": self.text()}


@contextmanager
def built(server_url: str, *, schema: Path | None = None,
          migrations: Path | None = None) -> Iterator[tuple[str, str]]:
    """Two scratch databases: (built by migrations/, built by schema/); dropped afterwards."""
    files = sorted((schema or schema_dir()).rglob("*.sql"))
    with scratch.database("from_migrations", suffix="diff", server_url=server_url) as from_migrations, \
            scratch.database("from_schema", suffix="diff", server_url=server_url) as from_schema:
        catalog.build_from_migrations(from_migrations, migrations)
        catalog.build_from_schema(from_schema, files)
        yield from_migrations, from_schema


def compare(current_url: str, target_url: str) -> Difference:
    """The difference between two built databases: the draft from current to target."""
    return Difference(draft(read(current_url), read(target_url)),
                      leftovers(catalog.snapshot(current_url), catalog.snapshot(target_url)))


def check(server_url: str, current: str, target_url: str, difference: Difference) -> list[str]:
    """Apply the draft to a copy of the database named current (in one transaction): what still
    differs from target afterwards, as comment lines; the error when the draft fails to apply."""
    with scratch.database("diff", suffix="check", server_url=server_url, template=current) as copy:
        try:
            with connect(copy) as conn:
                conn.execute(difference.text().encode())
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
            return [f"-- the draft fails to apply: {type(exc).__name__}: {message}"]
        after = compare(copy, target_url)
    return ([line for lines in after.parity.values() for line in lines]
            + [f"-- still drafted afterwards: {s.sql.splitlines()[0]}" for s in after.statements
               if not s.sql.startswith("-- not drafted")])


def diff(server_url: str, *, schema: Path | None = None, migrations: Path | None = None,
         verify: bool = True) -> Difference:
    """Build both, compare them and, unless verify is False, try the draft on a copy."""
    with built(server_url, schema=schema, migrations=migrations) as (current, target):
        difference = compare(current, target)
        if difference.identical or not verify:
            return difference
        remaining = check(server_url, scratch.scratch_name("from_migrations", "diff"), target, difference)
        return Difference(difference.statements, difference.parity, remaining)
