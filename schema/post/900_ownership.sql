-- 900_ownership.sql — everything in the schema automl belongs to automl_owner.
--
-- Idempotent layer (schema/post/): re-applied after every migration run, so a migration writes
-- only its structural change (migrations/post-apply.sql is these files, generated). Owners are
-- changed only where they differ: ALTER ... OWNER takes a table's strongest lock, so a re-run that
-- finds nothing to do locks nothing.

-- The boundary: every object of the project lives in automl; public holds yoyo's bookkeeping only
-- (yoyo keeps its tables in the current schema, the first of the database's search_path). This is
-- the one place that names yoyo's tables; everything else asks for the schema automl.
do $$
declare
    stray text;
begin
    select string_agg(what, ', ' order by what) into stray
      from (select c.relname::text as what from pg_class c
             where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'c')
               and c.relname not in ('_yoyo_migration', '_yoyo_log', '_yoyo_version', 'yoyo_lock')
               and not (c.relkind = 'S' and c.relname like '\_yoyo%')
            union all
            select p.oid::regprocedure::text from pg_proc p where p.pronamespace = 'public'::regnamespace
            union all
            select t.typname::text from pg_type t
             where t.typnamespace = 'public'::regnamespace and t.typtype in ('e', 'd')) x;
    if stray is not null then
        raise exception 'public holds yoyo''s bookkeeping only, but also: %', stray
            using hint = 'Start the migration with `set local search_path = automl, public;` so what it '
                         'creates lands in automl (README, "Writing a migration").';
    end if;
end;
$$;

do $$
declare
    statement text;
begin
    for statement in
        select format('alter schema %I owner to automl_owner', n.nspname)
          from pg_namespace n
         where n.oid = 'automl'::regnamespace and n.nspowner <> 'automl_owner'::regrole
        union all
        -- Indexes and the sequences of identity columns follow their table.
        select format('alter table %s owner to automl_owner', c.oid::regclass)
          from pg_class c
         where c.relnamespace = 'automl'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
           and c.relowner <> 'automl_owner'::regrole
           and not (c.relkind = 'S' and exists (select from pg_depend d
                                                 where d.classid = 'pg_class'::regclass and d.objid = c.oid
                                                   and d.refclassid = 'pg_class'::regclass
                                                   and d.deptype in ('a', 'i')))
        union all
        select format('alter function %s owner to automl_owner', p.oid::regprocedure)
          from pg_proc p
         where p.pronamespace = 'automl'::regnamespace and p.proowner <> 'automl_owner'::regrole
        union all
        select format('alter %s %s owner to automl_owner', case t.typtype when 'd' then 'domain' else 'type' end,
                      t.oid::regtype)
          from pg_type t
         where t.typnamespace = 'automl'::regnamespace and t.typtype in ('e', 'd', 'c')
           and t.typowner <> 'automl_owner'::regrole
           and not exists (select from pg_class c where c.reltype = t.oid and c.relkind <> 'c')
    loop
        execute statement;
    end loop;
end;
$$;
