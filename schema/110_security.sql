-- 110_security.sql — who may do what: ownership, grants and row-level security.
--
-- Owns: the ownership of every object (automl_owner), the privileges of automl_app,
-- automl_worker, automl_billing and automl_readonly, the row-level security policies of every
-- table that carries a user, and what the roles may do beyond the schema. Rules of thumb a
-- reviewer can check here:
--   * automl_app owns nothing, is not superuser and has no BYPASSRLS;
--   * every tenant table has ENABLE + FORCE row level security and a policy keyed on
--     (select app_user_id()): no user set, no rows; WITH CHECK keeps rows from being created
--     for, or moved to, another user;
--   * credits are created only by automl_billing (purchases with a payment reference,
--     adjustments, tiers); automl_app may post only the consumption and refund entries the
--     credit policy allows, and the ledger is SELECT + INSERT only for everyone;
--   * EXECUTE is revoked from PUBLIC on every function and granted on purpose;
--   * work that spans users goes through SECURITY DEFINER functions with a pinned search_path,
--     or, for the job queue's hot path, through automl_worker's own policies on jobs;
--   * beyond the schema: no temporary objects, no large objects, no advisory locks for the
--     runtime roles (apply_database_privileges()).

-- Ownership: everything in this schema belongs to automl_owner.
do $$
declare
    statement text;
begin
    for statement in
        select format('alter table %I owner to automl_owner', c.relname)
          from pg_class c
         where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'S')
           and c.relname not like '\_yoyo%' and c.relname <> 'yoyo_lock'
        union all
        select format('alter function %s owner to automl_owner', p.oid::regprocedure)
          from pg_proc p where p.pronamespace = 'public'::regnamespace
        union all
        select format('alter type %s owner to automl_owner', t.oid::regtype)
          from pg_type t
         where t.typnamespace = 'public'::regnamespace and t.typtype in ('e', 'd')
    loop
        execute statement;
    end loop;
end;
$$;

revoke create on schema public from public;
grant usage on schema public to automl_app, automl_billing, automl_readonly;

-- Functions: nothing for PUBLIC; each role gets what it calls.
revoke execute on all functions in schema public from public;
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

-- Tenant tables.
grant select on all tables in schema public to automl_readonly;
grant select on users to automl_app;
grant insert (id, email, full_name, oauth_provider, oauth_id, email_verified) on users to automl_app;
grant update (email, full_name, email_verified, is_deleted, updated_at) on users to automl_app;
grant select, insert, update, delete on datasets, dataset_versions, dataset_profiles, ingestion_jobs,
    workflows, models, experiments, experiment_runs, user_tutorial_progress to automl_app;
revoke update on datasets from automl_app;
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

-- Row-level security: automl_app (and its member automl_worker) sees and writes the rows of
-- app_user_id() only; automl_readonly reads everything, explicitly.
do $$
declare
    tenant text;
begin
    foreach tenant in array array['datasets', 'dataset_versions', 'dataset_profiles', 'ingestion_jobs',
                                  'workflows', 'workflow_snapshots', 'jobs', 'job_nodes', 'models',
                                  'experiments', 'experiment_runs', 'user_tutorial_progress']
    loop
        execute format('alter table %I enable row level security', tenant);
        execute format('alter table %I force row level security', tenant);
        execute format('create policy %I on %I to automl_app using (user_id = (select app_user_id()))'
                       ' with check (user_id = (select app_user_id()))', tenant || '_tenant', tenant);
        execute format('create policy %I on %I for select to automl_readonly using (true)',
                       tenant || '_readonly', tenant);
        execute format('comment on policy %I on %I is %L', tenant || '_tenant', tenant,
                       'automl_app reads and writes only the rows of app_user_id().');
        execute format('comment on policy %I on %I is %L', tenant || '_readonly', tenant,
                       'automl_readonly reads every row (analytics, support).');
    end loop;
end;
$$;

-- Workers take jobs from every user's queue: automl_worker reads and updates any job (claim,
-- heartbeat, finish). It has no DELETE, and inserts stay under the tenant policy.
create policy jobs_worker_read on jobs for select to automl_worker using (true);
create policy jobs_worker_update on jobs for update to automl_worker
    using (status in ('queued', 'running')) with check (true);
comment on policy jobs_worker_read on jobs is 'automl_worker sees every job: the queue spans users.';
comment on policy jobs_worker_update on jobs is
    'automl_worker claims, heartbeats and finishes any user''s queued or running job; a pending job '
    'is its owner''s alone (its price may still change).';

alter table users enable row level security;
alter table users force row level security;
create policy users_tenant on users to automl_app
    using (id = (select app_user_id())) with check (id = (select app_user_id()));
create policy users_readonly on users for select to automl_readonly using (true);
comment on policy users_tenant on users is
    'automl_app reads and writes only the account of app_user_id(); sign-up inserts it under that id.';
comment on policy users_readonly on users is 'automl_readonly reads every account (analytics, support).';
create policy users_billing_read on users for select to automl_billing using (true);
create policy users_billing_update on users for update to automl_billing using (true) with check (true);
comment on policy users_billing_read on users is 'automl_billing reads every account: it credits any of them.';
comment on policy users_billing_update on users is
    'automl_billing changes any account''s tier (its column privilege is tier alone).';

alter table credit_transactions enable row level security;
alter table credit_transactions force row level security;
create policy credit_transactions_tenant_read on credit_transactions for select to automl_app
    using (user_id = (select app_user_id()));
create policy credit_transactions_tenant_insert on credit_transactions for insert to automl_app
    with check (user_id = (select app_user_id()) and type in ('consumption', 'refund')
                and stripe_payment_id is null and package_id is null);
create policy credit_transactions_billing_read on credit_transactions for select to automl_billing using (true);
create policy credit_transactions_billing_insert on credit_transactions for insert to automl_billing
    with check (type in ('purchase', 'adjustment'));
create policy credit_transactions_readonly on credit_transactions for select to automl_readonly using (true);
comment on policy credit_transactions_tenant_read on credit_transactions is
    'automl_app reads only the ledger of app_user_id().';
comment on policy credit_transactions_tenant_insert on credit_transactions is
    'automl_app posts only for app_user_id(), and only consumption and refund entries (which the '
    'credit policy then checks against the job): it creates no credits.';
comment on policy credit_transactions_billing_read on credit_transactions is 'automl_billing reads every entry.';
comment on policy credit_transactions_billing_insert on credit_transactions is
    'automl_billing posts purchases (each with its payment reference) and adjustments, for any account.';
comment on policy credit_transactions_readonly on credit_transactions is
    'automl_readonly reads every entry (finance, support).';

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
