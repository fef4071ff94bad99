-- post-apply.sql — GENERATED from schema/post/ by `just post-apply`; do not edit (just lint fails
-- when it is stale). yoyo runs it after every `yoyo apply` that applied a migration, and
-- `automl-db migrate` after every run: ownership, grants, row-level security and reference data,
-- re-applied from the catalog, so a migration carries only its structural change. Idempotent:
-- a re-run that finds everything in place changes nothing and takes no table lock.
set local lock_timeout = '5s';
set local statement_timeout = '5min';
set local search_path = automl, public;

-- ==== schema/post/900_ownership.sql ====
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

-- ==== schema/post/910_grants.sql ====
-- 910_grants.sql — what each role may do: schema usage, functions, tables, and nothing beyond.
--
-- Idempotent layer (schema/post/): re-applied after every migration run. The roles are described
-- in 005_roles.sql. Rules of thumb a reviewer can check here:
--   * automl_app owns nothing, is not superuser and has no BYPASSRLS;
--   * credits are created only by automl_billing (purchases with a payment reference,
--     adjustments, tiers); automl_app may post only the consumption and refund entries the
--     credit policy allows, and the ledger is SELECT + INSERT only for everyone;
--   * EXECUTE is revoked from PUBLIC on every function and granted on purpose;
--   * a table with a user_id that is not listed below with grants of its own gets what the
--     tenant tables get: SELECT, INSERT, UPDATE, DELETE for automl_app (row-level security then
--     keeps it to the rows of app_user_id(), 920_row_security.sql); automl_readonly reads every
--     table;
--   * beyond the schema: no temporary objects, no large objects, no advisory locks for the
--     runtime roles (apply_database_privileges()).

-- public holds yoyo's bookkeeping only: nothing there for the project's roles.
revoke create on schema public from public;
revoke usage on schema public from automl_app, automl_billing, automl_readonly;
grant usage on schema automl to automl_app, automl_billing, automl_readonly;

-- Functions: nothing for PUBLIC; each role gets what it calls.
revoke execute on all functions in schema automl from public;
grant execute on function app_user_id(), jsonb_is_object(jsonb), jsonb_is_number_map(jsonb),
    workflow_graph_is_valid(jsonb), tutorial_steps_are_valid(jsonb),
    credit_package_on_sale(tier_restriction, boolean, user_tier)
    to automl_app, automl_readonly;
grant execute on function app_user_id(), credit_package_on_sale(tier_restriction, boolean, user_tier)
    to automl_billing;
grant execute on function user_id_for_oauth(oauth_provider, text), user_id_for_email(text) to automl_app;
grant execute on function claim_jobs(text, integer), heartbeat_job(uuid, text),
    rescue_stalled_jobs(interval), purge_soft_deleted(interval)
    to automl_worker;
grant execute on function check_integrity() to automl_worker, automl_readonly;

-- Reference data: readable by every role, written by the owner only.
grant select on tier_limits, credit_packages, tutorials to automl_app, automl_billing, automl_readonly;

-- Every table: automl_readonly reads (its policies say which rows: all of them).
grant select on all tables in schema automl to automl_readonly;

-- Tenant tables with grants of their own.
grant select on users to automl_app;
grant insert (id, email, full_name, oauth_provider, oauth_id, email_verified) on users to automl_app;
grant update (email, full_name, email_verified, is_deleted, updated_at) on users to automl_app;
grant select, insert, delete on datasets to automl_app;
grant update (name, description, problem_type, target_column, current_version_id, updated_at)
    on datasets to automl_app;
grant select, insert on workflow_snapshots, credit_transactions to automl_app;
-- The queue tables: column-level UPDATE only (what the queries change), so no runtime role may
-- LOCK TABLE them, which table-level UPDATE or DELETE would allow whatever the policies say.
grant select, insert on jobs, job_nodes to automl_app;
grant update (status, priority, credit_cost, celery_task_id, results, error_message, error_traceback,
    updated_at) on jobs to automl_app;
grant update (worker_id) on jobs to automl_worker;
grant update (status, output_data, error_message, updated_at) on job_nodes to automl_app;
grant select, update (tier) on users to automl_billing;
grant select, insert on credit_transactions to automl_billing;

-- Every other table with a user_id (dataset_versions, workflows, models, ... and any added later):
-- the tenant tables' grants, made only where missing.
do $$
declare
    tenant regclass;
begin
    for tenant in
        select c.oid::regclass
          from pg_class c
         where c.relnamespace = 'automl'::regnamespace and c.relkind in ('r', 'p')
           and c.relname not in ('users', 'datasets', 'workflow_snapshots', 'credit_transactions', 'jobs',
                                 'job_nodes')
           and exists (select from pg_attribute a
                        where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped)
           and (select count(*) from aclexplode(c.relacl) x
                 where x.grantee = 'automl_app'::regrole
                   and x.privilege_type in ('SELECT', 'INSERT', 'UPDATE', 'DELETE')) < 4
         order by c.relname
    loop
        execute format('grant select, insert, update, delete on %s to automl_app', tenant);
    end loop;
end;
$$;

-- Less ambient power: no temporary objects, large objects or advisory locks for the runtime
-- roles (the reasons are on apply_database_privileges(), in 100_maintenance.sql).
do $$ begin perform apply_database_privileges(); end $$;

revoke execute on function pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid),
    pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text), pg_catalog.lo_import(text, oid)
    from public;
revoke execute on function pg_catalog.pg_advisory_lock(bigint), pg_catalog.pg_advisory_lock(integer, integer),
    pg_catalog.pg_advisory_lock_shared(bigint), pg_catalog.pg_advisory_lock_shared(integer, integer),
    pg_catalog.pg_advisory_xact_lock(bigint), pg_catalog.pg_advisory_xact_lock(integer, integer),
    pg_catalog.pg_advisory_xact_lock_shared(bigint), pg_catalog.pg_advisory_xact_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_lock(bigint), pg_catalog.pg_try_advisory_lock(integer, integer),
    pg_catalog.pg_try_advisory_lock_shared(bigint), pg_catalog.pg_try_advisory_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock(bigint), pg_catalog.pg_try_advisory_xact_lock(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock_shared(bigint), pg_catalog.pg_try_advisory_xact_lock_shared(integer, integer)
    from public;
grant execute on function pg_catalog.pg_advisory_xact_lock(integer, integer) to automl_owner;
-- Arbitrary WAL records (logical decoding messages): writes, even for automl_readonly.
do $$
declare
    signature regprocedure;
begin
    for signature in select oid::regprocedure from pg_proc where proname = 'pg_logical_emit_message'
    loop
        execute format('revoke execute on function %s from public', signature);
    end loop;
end;
$$;

-- ==== schema/post/920_row_security.sql ====
-- 920_row_security.sql — row-level security: every table with a user_id, found in the catalog.
--
-- Idempotent layer (schema/post/): re-applied after every migration run, so a tenant table cannot
-- ship without row-level security. Every table of the schema with a user_id column (and users,
-- keyed on id) gets ENABLE + FORCE row level security and two policies keyed on
-- (select app_user_id()): no user set, no rows; WITH CHECK keeps rows from being created for, or
-- moved to, another user:
--   <table>_tenant    automl_app (and its member automl_worker) reads and writes the rows of
--                     app_user_id() only;
--   <table>_readonly  automl_readonly reads every row, explicitly.
-- The ledger has no <table>_tenant policy: its own policies below let automl_app post only the
-- entries the credit policy allows. Work that spans users goes through SECURITY DEFINER
-- functions with a pinned search_path, or, for the job queue's hot path, through automl_worker's
-- own policies on jobs. Only what is missing is changed: ALTER TABLE and CREATE POLICY take the
-- table's strongest lock, so a re-run that finds everything in place locks nothing.

do $$
declare
    tenant record;
    tenant_key text;
begin
    for tenant in
        select c.oid::regclass as tbl, c.relname, c.relrowsecurity, c.relforcerowsecurity
          from pg_class c
         where c.relnamespace = 'automl'::regnamespace and c.relkind in ('r', 'p')
           and (c.relname = 'users'
                or exists (select from pg_attribute a
                            where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped))
         order by c.relname
    loop
        tenant_key := case tenant.relname when 'users' then 'id' else 'user_id' end;
        if not tenant.relrowsecurity then
            execute format('alter table %s enable row level security', tenant.tbl);
        end if;
        if not tenant.relforcerowsecurity then
            execute format('alter table %s force row level security', tenant.tbl);
        end if;
        if tenant.relname <> 'credit_transactions'
           and not exists (select from pg_policy p
                            where p.polrelid = tenant.tbl and p.polname = tenant.relname || '_tenant') then
            execute format('create policy %I on %s to automl_app using (%I = (select app_user_id()))'
                           ' with check (%I = (select app_user_id()))',
                           tenant.relname || '_tenant', tenant.tbl, tenant_key, tenant_key);
            execute format('comment on policy %I on %s is %L', tenant.relname || '_tenant', tenant.tbl,
                           case tenant.relname
                               when 'users' then 'automl_app reads and writes only the account of '
                                                 'app_user_id(); sign-up inserts it under that id.'
                               else 'automl_app reads and writes only the rows of app_user_id().'
                           end);
        end if;
        if not exists (select from pg_policy p
                        where p.polrelid = tenant.tbl and p.polname = tenant.relname || '_readonly') then
            execute format('create policy %I on %s for select to automl_readonly using (true)',
                           tenant.relname || '_readonly', tenant.tbl);
            execute format('comment on policy %I on %s is %L', tenant.relname || '_readonly', tenant.tbl,
                           case tenant.relname
                               when 'users' then 'automl_readonly reads every account (analytics, support).'
                               when 'credit_transactions' then 'automl_readonly reads every entry (finance, support).'
                               else 'automl_readonly reads every row (analytics, support).'
                           end);
        end if;
    end loop;
end;
$$;

-- Policies of their own, each created when missing: (table, policy, its definition, its comment).
do $$
declare
    rule record;
begin
    for rule in
        select r.tbl, r.policy, r.definition, r.description
          from (values
            -- Workers take jobs from every user's queue: automl_worker reads and updates any job
            -- (claim, heartbeat, finish). It has no DELETE, and inserts stay under the tenant policy.
            ('jobs', 'jobs_worker_read', 'for select to automl_worker using (true)',
             'automl_worker sees every job: the queue spans users.'),
            ('jobs', 'jobs_worker_update',
             'for update to automl_worker using (status in (''queued'', ''running'')) with check (true)',
             'automl_worker claims, heartbeats and finishes any user''s queued or running job; a pending job '
             'is its owner''s alone (its price may still change).'),
            -- Billing credits any account and changes its tier (its column privilege is tier alone).
            ('users', 'users_billing_read', 'for select to automl_billing using (true)',
             'automl_billing reads every account: it credits any of them.'),
            ('users', 'users_billing_update', 'for update to automl_billing using (true) with check (true)',
             'automl_billing changes any account''s tier (its column privilege is tier alone).'),
            -- The ledger: automl_app posts only for itself and creates no credits.
            ('credit_transactions', 'credit_transactions_tenant_read',
             'for select to automl_app using (user_id = (select app_user_id()))',
             'automl_app reads only the ledger of app_user_id().'),
            ('credit_transactions', 'credit_transactions_tenant_insert',
             'for insert to automl_app with check (user_id = (select app_user_id())'
             ' and type in (''consumption'', ''refund'') and stripe_payment_id is null and package_id is null)',
             'automl_app posts only for app_user_id(), and only consumption and refund entries (which the '
             'credit policy then checks against the job): it creates no credits.'),
            ('credit_transactions', 'credit_transactions_billing_read', 'for select to automl_billing using (true)',
             'automl_billing reads every entry.'),
            ('credit_transactions', 'credit_transactions_billing_insert',
             'for insert to automl_billing with check (type in (''purchase'', ''adjustment''))',
             'automl_billing posts purchases (each with its payment reference) and adjustments, for any account.')
          ) as r(tbl, policy, definition, description)
         where not exists (select from pg_policy p
                            where p.polrelid = to_regclass('automl.' || r.tbl) and p.polname = r.policy)
    loop
        execute format('create policy %I on %I %s', rule.policy, rule.tbl, rule.definition);
        execute format('comment on policy %I on %I is %L', rule.policy, rule.tbl, rule.description);
    end loop;
end;
$$;

-- ==== schema/post/930_reference_data.sql ====
-- 930_reference_data.sql — the reference rows every database holds: tier limits, credit packages,
-- tutorials.
--
-- Idempotent layer (schema/post/): re-applied after every migration run, so `yoyo apply` alone
-- gives a database its reference data. These rows are the source of truth: a row that differs is
-- brought back to what is written here (a tutorial whose steps change gets the next
-- content_version), rows added by hand are left alone, and a row that already matches is not
-- even locked (a purchase in flight holds a key-share lock on its package). Ids are fixed, so
-- every database names the same package and tutorial by the same id (a data-only restore leaves
-- these tables out, README "Restoring a dump"); a row created earlier under another id keeps it.

-- What each tier may use (users.tier references these rows).
insert into tier_limits as t (tier, max_storage_bytes, max_datasets, max_workflows, max_models)
select v.tier, v.max_storage_bytes, v.max_datasets, v.max_workflows, v.max_models
  from (values ('free'::user_tier, 1073741824::bigint, 10,   10,   20),    -- 1 GiB
               ('pro',             53687091200,         200,  200,  1000),  -- 50 GiB
               ('enterprise',      1099511627776,       null, null, null)   -- 1 TiB
       ) as v(tier, max_storage_bytes, max_datasets, max_workflows, max_models)
 where not exists (select from tier_limits x
                    where x.tier = v.tier
                      and (x.max_storage_bytes, x.max_datasets, x.max_workflows, x.max_models)
                          is not distinct from (v.max_storage_bytes, v.max_datasets, v.max_workflows, v.max_models))
on conflict (tier) do update
   set max_storage_bytes = excluded.max_storage_bytes, max_datasets = excluded.max_datasets,
       max_workflows = excluded.max_workflows, max_models = excluded.max_models;

-- What can be bought.
insert into credit_packages as p (id, name, credits, price_cents, stripe_price_id, is_active, tier_restriction)
select v.id, v.name, v.credits, v.price_cents, v.stripe_price_id, v.is_active, v.tier_restriction
  from (values ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0001'::uuid, 'Starter', 100, 999, 'price_starter_100', true,
                'none'::tier_restriction),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0002', 'Builder', 500, 3999, 'price_builder_500', true, 'none'),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0003', 'Pro Pack', 2500, 14999, 'price_pro_2500', true, 'pro_only'),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0004', 'Enterprise', 20000, 99999, 'price_enterprise_20000', true,
                'enterprise_only')
       ) as v(id, name, credits, price_cents, stripe_price_id, is_active, tier_restriction)
 where not exists (select from credit_packages x
                    where x.name = v.name
                      and (x.credits, x.price_cents, x.stripe_price_id, x.is_active, x.tier_restriction)
                          is not distinct from (v.credits, v.price_cents, v.stripe_price_id, v.is_active,
                                                v.tier_restriction))
on conflict (name) do update
   set (credits, price_cents, stripe_price_id, is_active, tier_restriction)
       = (excluded.credits, excluded.price_cents, excluded.stripe_price_id, excluded.is_active,
          excluded.tier_restriction);

-- The starter tutorials.
insert into tutorials as t (id, slug, title, description, difficulty, steps, estimated_minutes, sort_order,
                            is_published)
select v.id, v.slug, v.title, v.description, v.difficulty, v.steps, v.estimated_minutes, v.sort_order,
       v.is_published
  from (values ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1001'::uuid, 'first-model', 'Train your first model',
                'Upload a CSV, build a three-node workflow and train a classifier.', 'beginner',
                '[{"id": "upload", "title": "Upload a dataset"},
                  {"id": "workflow", "title": "Build a workflow"},
                  {"id": "train", "title": "Run the job"},
                  {"id": "inspect", "title": "Inspect the model"}]'::jsonb, 15, 10, true),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1002', 'compare-models', 'Compare models in an experiment',
                'Train two algorithms on one dataset and read the leaderboard.', 'intermediate',
                '[{"id": "experiment", "title": "Create an experiment"},
                  {"id": "runs", "title": "Add runs"},
                  {"id": "leaderboard", "title": "Read the leaderboard"}]', 20, 20, true),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1003', 'feature-engineering', 'Feature engineering basics',
                'Scale, encode and select features before training.', 'advanced',
                '[{"id": "scale", "title": "Scale numeric columns"},
                  {"id": "encode", "title": "Encode categories"}]', 30, 30, false)
       ) as v(id, slug, title, description, difficulty, steps, estimated_minutes, sort_order, is_published)
 where not exists (select from tutorials x
                    where x.slug = v.slug
                      and (x.title, x.description, x.difficulty, x.steps::jsonb, x.estimated_minutes, x.sort_order,
                           x.is_published)
                          is not distinct from (v.title, v.description, v.difficulty, v.steps, v.estimated_minutes,
                                                v.sort_order, v.is_published))
on conflict (slug) do update
   set title = excluded.title, description = excluded.description, difficulty = excluded.difficulty,
       steps = excluded.steps, estimated_minutes = excluded.estimated_minutes, sort_order = excluded.sort_order,
       is_published = excluded.is_published,
       content_version = t.content_version + (t.steps::jsonb is distinct from excluded.steps::jsonb)::integer;
