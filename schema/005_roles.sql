-- 005_roles.sql — the roles this schema grants to, and the tenant context helper.
--
-- Owns: the five roles (cluster-wide, so created only when missing and never dropped by a
-- rollback: other databases of the cluster may use them) and app_user_id(), the one place the
-- per-transaction tenant setting is read. Ownership, grants and row-level security are in the
-- idempotent layer, schema/post/ (re-applied after every migration run).
--   automl_owner     NOLOGIN, BYPASSRLS: owns every object; migrations and SECURITY DEFINER
--                    functions act as it.
--   automl_app       the web-facing runtime role: DML on tenant tables through row-level
--                    security, SELECT on reference data; owns nothing, creates no credits.
--   automl_worker    member of automl_app; may also claim jobs, beat heartbeats, rescue and purge.
--   automl_billing   the only path that creates credits: purchases (each with its unique payment
--                    reference), adjustments and tier changes, for any account. Not a member of
--                    automl_app: a compromised web role cannot mint credits or lift its own tier.
--   automl_readonly  SELECT on everything through explicit read-all policies, and the audit.
-- Creating a BYPASSRLS role takes a superuser: run migrations as one (or have the DBA create the
-- roles first; these statements then do nothing).

do $$
begin
    if not exists (select from pg_roles where rolname = 'automl_owner') then
        create role automl_owner nologin bypassrls;
    end if;
    if not exists (select from pg_roles where rolname = 'automl_app') then
        create role automl_app nologin;
    end if;
    if not exists (select from pg_roles where rolname = 'automl_worker') then
        create role automl_worker nologin;
    end if;
    if not exists (select from pg_roles where rolname = 'automl_billing') then
        create role automl_billing nologin;
    end if;
    if not exists (select from pg_roles where rolname = 'automl_readonly') then
        create role automl_readonly nologin;
    end if;
end;
$$;
grant automl_app to automl_worker;

-- The tenant of the current transaction: set by the application with
-- set_config('automl.user_id', <uuid>, true); '' after a transaction ends, NULL if never set.
create function app_user_id() returns uuid
language sql stable parallel safe
begin atomic
    select nullif(current_setting('automl.user_id', true), '')::uuid;
end;
comment on function app_user_id() is
    'The user the current transaction acts for (setting automl.user_id), or NULL. Row-level security '
    'policies call it as (select app_user_id()) so it is evaluated once per statement.';
