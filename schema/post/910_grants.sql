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
