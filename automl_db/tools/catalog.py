"""The project's catalog, comparable: what the schema-vs-migrations parity test and `automl-db diff`
compare, and the two builders of the databases they compare (schema/ run file by file, migrations/
applied by yoyo).

Every query is scoped to the project's schema (automl_db.tools.project): yoyo's bookkeeping lives
in public, so nothing here names its tables.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from automl_db.tools import migrate, project
from automl_db.tools.paths import schema_files
from automl_db.urls import connect

#: The schema that holds the project's objects, by name.
PROJECT_SCHEMA = project.SCHEMA
#: ... and as a SQL expression of its OID, for `where c.relnamespace = {SCHEMA}`.
SCHEMA = project.NAMESPACE


def acl(column: str) -> str:
    """An ACL as sorted text: the same grants made in another order read the same."""
    return f"coalesce((select string_agg(a::text, ',' order by a::text) from unnest({column}) a), '')"


# Each query yields rows of text that identify one catalog object completely. Nothing here depends
# on OIDs or the order grants were made in. Columns carry their rank among live columns (not attnum,
# which a dropped column leaves a gap in): `select *` and `\d` must read the same either way.
CATALOG_QUERIES: dict[str, str] = {
    "tables": f"""
        select c.relname, c.relkind::text, c.relowner::regrole::text, c.relrowsecurity::text,
               c.relforcerowsecurity::text,
               {acl('c.relacl')}, coalesce(obj_description(c.oid, 'pg_class'), '')
          from pg_class c
         where c.relnamespace = {SCHEMA} and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')""",
    "columns": f"""
        select c.relname, a.attname,
               (select count(*) from pg_attribute o
                 where o.attrelid = a.attrelid and o.attnum > 0 and o.attnum <= a.attnum
                   and not o.attisdropped)::text,
               format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attgenerated::text, a.attidentity::text,
               {acl('a.attacl')}, coalesce(col_description(c.oid, a.attnum), '')
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where c.relnamespace = {SCHEMA} and c.relkind in ('r', 'p', 'v', 'm', 'f')
           and a.attnum > 0 and not a.attisdropped""",
    "constraints": f"""
        select c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid),
               coalesce(obj_description(k.oid, 'pg_constraint'), '')
          from pg_constraint k join pg_class c on c.oid = k.conrelid
         where c.relnamespace = {SCHEMA}""",
    "indexes": f"""
        select c.relname, pg_get_indexdef(i.indexrelid), coalesce(obj_description(i.indexrelid, 'pg_class'), '')
          from pg_index i join pg_class c on c.oid = i.indrelid
         where c.relnamespace = {SCHEMA}""",
    "triggers": f"""
        select c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text,
               coalesce(obj_description(t.oid, 'pg_trigger'), '')
          from pg_trigger t join pg_class c on c.oid = t.tgrelid
         where c.relnamespace = {SCHEMA} and not t.tgisinternal""",
    "functions": f"""
        select p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
               p.proowner::regrole::text,
               {acl('p.proacl')}, coalesce(obj_description(p.oid, 'pg_proc'), '')
          from pg_proc p where p.pronamespace = {SCHEMA}""",
    "types": f"""
        select t.typname, t.typtype::text,
               coalesce((select string_agg(e.enumlabel, ',' order by e.enumsortorder)
                           from pg_enum e where e.enumtypid = t.oid), ''),
               coalesce(obj_description(t.oid, 'pg_type'), '')
          from pg_type t
         where t.typnamespace = {SCHEMA} and t.typtype in ('e', 'd', 'c')
           and not exists (select from pg_class c where c.reltype = t.oid)""",
    "policies": f"""
        select c.relname, p.polname, coalesce(obj_description(p.oid, 'pg_policy'), ''), p.polcmd::text,
               p.polpermissive::text,
               coalesce(pg_get_expr(p.polqual, p.polrelid), ''), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''),
               coalesce((select string_agg(r::regrole::text, ',' order by r::regrole::text)
                           from unnest(p.polroles) r), '')
          from pg_policy p join pg_class c on c.oid = p.polrelid
         where c.relnamespace = {SCHEMA}""",
    "extensions": "select extname from pg_extension where extname <> 'plpgsql'",
    "schemas": f"""
        select n.nspname, n.nspowner::regrole::text, {acl('n.nspacl')},
               coalesce(obj_description(n.oid, 'pg_namespace'), '')
          from pg_namespace n where n.nspname in ('public', '{PROJECT_SCHEMA}')""",
    # The database's own settings (its search_path): a template copy or a restore loses them.
    "database settings": """
        select coalesce(array_to_string(s.setconfig, ','), '')
          from pg_db_role_setting s
         where s.setdatabase = (select oid from pg_database where datname = current_database()) and s.setrole = 0""",
    # What the schema revokes beyond itself (large objects, advisory locks).
    "ambient rights": f"""
        select p.oid::regprocedure::text, {acl('p.proacl')}
          from pg_proc p
         where p.pronamespace = 'pg_catalog'::regnamespace
           and (p.proname like 'lo\\_%%' or p.proname like '%%advisory%%'
                or p.proname = 'pg_logical_emit_message')""",
    "reference rows": "select tier::text, max_storage_bytes::text, coalesce(max_datasets::text, ''),"
                      " coalesce(max_workflows::text, ''), coalesce(max_models::text, '') from tier_limits",
}


def snapshot(url: str) -> dict[str, set[tuple[Any, ...]]]:
    with connect(url) as conn:
        # Deparsed definitions qualify what the session's path does not reach: read them all alike.
        conn.execute(f"set search_path = public, {PROJECT_SCHEMA}")
        has_tiers = conn.execute("select to_regclass('tier_limits') is not null").fetchone() == (True,)
        return {name: set(conn.execute(query.replace("%%", "%")).fetchall())
                for name, query in CATALOG_QUERIES.items() if has_tiers or name != "reference rows"}


def build_from_schema(url: str, files: Iterable[Path] | None = None) -> None:
    """Build the schema on the (empty) database at url by running every schema/ file in lexical
    path order, each as one script, nothing else."""
    with connect(url, autocommit=True) as conn:
        for path in (schema_files() if files is None else files):
            conn.execute(path.read_text())


def build_from_migrations(url: str, source: Path | None = None) -> list[str]:
    """Apply every migration of migrations/ (or source) to the database at url; the ids applied."""
    return migrate.apply(url, source)
