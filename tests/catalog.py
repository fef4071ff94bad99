"""A comparable picture of a database's catalog: what the schema-vs-migrations test diffs."""

from typing import Any

import psycopg

from automl_db.tools.project import NAMESPACE, SCHEMA

# Each query yields rows of text that identify one catalog object completely. Nothing here depends
# on OIDs or the order grants were made in. Columns carry their rank among live columns (not attnum,
# which a dropped column leaves a gap in): `select *` and `\d` must read the same either way. The
# project's objects are the schema automl (yoyo's bookkeeping lives in public).


def acl(column: str) -> str:
    """An ACL as sorted text: the same grants made in another order read the same."""
    return f"coalesce((select string_agg(a::text, ',' order by a::text) from unnest({column}) a), '')"


CATALOG_QUERIES: dict[str, str] = {
    "tables": f"""
        select c.relname, c.relkind::text, c.relowner::regrole::text, c.relrowsecurity::text,
               c.relforcerowsecurity::text,
               {acl('c.relacl')}, coalesce(obj_description(c.oid, 'pg_class'), '')
          from pg_class c
         where c.relnamespace = {NAMESPACE} and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')""",
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
         where c.relnamespace = {NAMESPACE} and c.relkind in ('r', 'p', 'v', 'm', 'f')
           and a.attnum > 0 and not a.attisdropped""",
    "constraints": f"""
        select c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid),
               coalesce(obj_description(k.oid, 'pg_constraint'), '')
          from pg_constraint k join pg_class c on c.oid = k.conrelid
         where c.relnamespace = {NAMESPACE}""",
    "indexes": f"""
        select c.relname, pg_get_indexdef(i.indexrelid), coalesce(obj_description(i.indexrelid, 'pg_class'), '')
          from pg_index i join pg_class c on c.oid = i.indrelid
         where c.relnamespace = {NAMESPACE}""",
    "triggers": f"""
        select c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text,
               coalesce(obj_description(t.oid, 'pg_trigger'), '')
          from pg_trigger t join pg_class c on c.oid = t.tgrelid
         where c.relnamespace = {NAMESPACE} and not t.tgisinternal""",
    "functions": f"""
        select p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
               p.proowner::regrole::text,
               {acl('p.proacl')}, coalesce(obj_description(p.oid, 'pg_proc'), '')
          from pg_proc p where p.pronamespace = {NAMESPACE}""",
    "types": f"""
        select t.typname, t.typtype::text,
               coalesce((select string_agg(e.enumlabel, ',' order by e.enumsortorder)
                           from pg_enum e where e.enumtypid = t.oid), ''),
               coalesce(obj_description(t.oid, 'pg_type'), '')
          from pg_type t
         where t.typnamespace = {NAMESPACE} and t.typtype in ('e', 'd', 'c')
           and not exists (select from pg_class c where c.reltype = t.oid)""",
    "policies": f"""
        select c.relname, p.polname, coalesce(obj_description(p.oid, 'pg_policy'), ''), p.polcmd::text,
               p.polpermissive::text,
               coalesce(pg_get_expr(p.polqual, p.polrelid), ''), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''),
               coalesce((select string_agg(r::regrole::text, ',' order by r::regrole::text)
                           from unnest(p.polroles) r), '')
          from pg_policy p join pg_class c on c.oid = p.polrelid
         where c.relnamespace = {NAMESPACE}""",
    "extensions": "select extname from pg_extension where extname <> 'plpgsql'",
    "schemas": f"""
        select n.nspname, n.nspowner::regrole::text, {acl('n.nspacl')},
               coalesce(obj_description(n.oid, 'pg_namespace'), '')
          from pg_namespace n where n.nspname in ('public', '{SCHEMA}')""",
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
    with psycopg.connect(url) as conn:
        # Deparsed definitions qualify what the session's path does not reach: read them all alike.
        conn.execute(f"set search_path = public, {SCHEMA}")
        has_tiers = conn.execute("select to_regclass('tier_limits') is not null").fetchone() == (True,)
        return {name: set(conn.execute(query.replace("%%", "%")).fetchall())
                for name, query in CATALOG_QUERIES.items() if has_tiers or name != "reference rows"}
