-- Rolls back 0002: the rules as 0001 left them.
-- Restoring the earlier functions and constraints is the point of this file:
-- squawk-ignore-file ban-drop-function, ban-drop-trigger, ban-drop-column, ban-drop-type, changing-column-type, constraint-missing-not-valid, ban-drop-constraint, ban-drop-default
set local lock_timeout = '5s';
set local statement_timeout = '5min';

-- Ambient rights and grants back to 0001's.
do $$ begin execute format('grant temporary on database %I to public', current_database()); end $$;
grant execute on function pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid),
    pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text), pg_catalog.lo_import(text, oid)
    to public;
grant execute on function pg_catalog.pg_advisory_lock(bigint), pg_catalog.pg_advisory_lock(integer, integer),
    pg_catalog.pg_advisory_lock_shared(bigint), pg_catalog.pg_advisory_lock_shared(integer, integer),
    pg_catalog.pg_advisory_xact_lock(bigint), pg_catalog.pg_advisory_xact_lock(integer, integer),
    pg_catalog.pg_advisory_xact_lock_shared(bigint), pg_catalog.pg_advisory_xact_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_lock(bigint), pg_catalog.pg_try_advisory_lock(integer, integer),
    pg_catalog.pg_try_advisory_lock_shared(bigint), pg_catalog.pg_try_advisory_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock(bigint), pg_catalog.pg_try_advisory_xact_lock(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock_shared(bigint), pg_catalog.pg_try_advisory_xact_lock_shared(integer, integer)
    to public;
revoke execute on function pg_catalog.pg_advisory_xact_lock(integer, integer) from automl_owner;
drop policy users_billing_read on users;
drop policy users_billing_update on users;
drop policy credit_transactions_billing_read on credit_transactions;
drop policy credit_transactions_billing_insert on credit_transactions;
drop policy credit_transactions_tenant_insert on credit_transactions;
create policy credit_transactions_tenant_insert on credit_transactions for insert to automl_app
    with check (user_id = (select app_user_id()) and type <> 'adjustment'
                and (type <> 'purchase' or package_id is not null));
comment on policy credit_transactions_tenant_insert on credit_transactions is
    'automl_app posts only for app_user_id(), never adjustments, and purchases only of a package.';
revoke all on users, credit_transactions, tier_limits, credit_packages, tutorials from automl_billing;
revoke update (status, priority, credit_cost, celery_task_id, results, error_message, error_traceback) on jobs from automl_app;
revoke update (worker_id) on jobs from automl_worker;
revoke update (status, output_data, error_message) on job_nodes from automl_app;
grant update on jobs, job_nodes to automl_app;
do $$
declare
    signature regprocedure;
begin
    for signature in select oid::regprocedure from pg_proc where proname = 'pg_logical_emit_message'
    loop
        execute format('grant execute on function %s to public', signature);
    end loop;
end;
$$;
revoke insert (oauth_provider, oauth_id, email_verified) on users from automl_app;
revoke usage on schema public from automl_billing;

-- Credits.
drop trigger credit_transactions_acting_user on credit_transactions;
drop function credit_transactions_check_acting_user();
create or replace function credit_transactions_post() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    job jobs%rowtype;
    consumed integer;
    duplicate text;
    account_tier user_tier;
    package credit_packages%rowtype;
begin
    if new.job_id is not null then
        -- KEY SHARE, as a foreign key check would take: the job cannot vanish under us.
        select * into job from jobs j where j.id = new.job_id for key share;
        if job.user_id is distinct from new.user_id then
            raise foreign_key_violation using
                message = format('job %s is not a job of user %s', new.job_id, new.user_id),
                constraint = 'credit_transactions_job_owner';
        end if;
        -- The credit policy (see 050_jobs.sql): a job is charged its credit_cost as it is queued,
        -- and refunded exactly what it consumed once it has failed or been cancelled. A wrong sign
        -- is left to credit_transactions_amount_sign, which names that problem better.
        if new.type = 'consumption' and new.amount < 0 and not (job.status = 'queued' and new.amount = -job.credit_cost) then
            raise check_violation using
                message = format('job %s (%s, cost %s) cannot be charged %s', job.id, job.status,
                                 job.credit_cost, -new.amount),
                constraint = 'credit_transactions_job_policy';
        end if;
        if new.type = 'refund' and new.amount > 0 then
            select -c.amount into consumed from credit_transactions c
             where c.job_id = new.job_id and c.type = 'consumption';
            if job.status not in ('failed', 'cancelled') or new.amount <> coalesce(consumed, 0) then
                raise check_violation using
                    message = format('job %s (%s, consumed %s) cannot be refunded %s', job.id, job.status,
                                     coalesce(consumed, 0), new.amount),
                    constraint = 'credit_transactions_job_policy';
            end if;
        end if;
    end if;

    -- The row lock on the user serializes postings per user; the WHERE re-checks the bound on
    -- the latest balance after any wait, so concurrent spends cannot overdraw.
    update users
       set credit_balance = credit_balance + new.amount,
           last_entry_number = last_entry_number + 1,
           updated_at = now()
     where id = new.user_id
       and credit_balance + new.amount >= 0
    returning credit_balance, last_entry_number, tier into new.balance_after, new.entry_number, account_tier;
    if not found then
        if exists (select from users where id = new.user_id) then
            raise exception 'insufficient credits: user % cannot take %', new.user_id, new.amount
                using errcode = 'AM001', constraint = 'credit_transactions_balance_nonnegative';
        end if;
        raise foreign_key_violation using
            message = format('user %s does not exist', new.user_id),
            constraint = 'credit_transactions_user_fkey';
    end if;

    -- A purchase of a package credits exactly that package, to a tier allowed to buy it: the
    -- application may insert purchases, so this is what stops it minting credits.
    if new.type = 'purchase' and new.package_id is not null then
        select * into package from credit_packages p where p.id = new.package_id;
        if not found then
            raise foreign_key_violation using message = format('package %s does not exist', new.package_id),
                constraint = 'credit_transactions_package_fkey';
        elsif new.amount <> package.credits then
            raise check_violation using
                message = format('package %s grants %s credits, not %s', package.name, package.credits, new.amount),
                constraint = 'credit_transactions_purchase_matches_package';
        elsif not package.is_active
              or (package.tier_restriction = 'pro_only' and account_tier <> 'pro')
              or (package.tier_restriction = 'enterprise_only' and account_tier <> 'enterprise') then
            raise check_violation using
                message = format('package %s is not for sale to a %s account', package.name, account_tier),
                constraint = 'credit_transactions_package_for_tier';
        end if;
    end if;

    -- BEFORE triggers run ahead of INSERT ... ON CONFLICT's own check, so a duplicate that
    -- ON CONFLICT DO NOTHING would silently skip must be refused here, or the balance would move
    -- without an entry. Checked after the user lock: a concurrent twin has committed by now.
    -- One query, each probe an index lookup, short-circuited by CASE.
    select case
               when exists (select from credit_transactions c where c.id = new.id)
                   then 'credit_transactions_pkey'
               when new.stripe_payment_id is not null and exists (
                        select from credit_transactions c where c.stripe_payment_id = new.stripe_payment_id)
                   then 'credit_transactions_stripe_payment_key'
               when new.type in ('consumption', 'refund') and exists (
                        select from credit_transactions c where c.job_id = new.job_id and c.type = new.type)
                   then 'credit_transactions_job_' || new.type || '_key'
           end
      into duplicate;
    if duplicate is not null then
        raise unique_violation using
            message = format('duplicate ledger entry (%s): id %s, payment %s, job %s',
                             duplicate, new.id, new.stripe_payment_id, new.job_id),
            constraint = duplicate;
    end if;
    return new;
end;
$$;
comment on function credit_transactions_post() is
    'BEFORE INSERT on credit_transactions: checks the job and the credit policy, moves the user''s '
    'balance and entry counter in one UPDATE ... RETURNING on the locked user row, fills balance_after '
    'and entry_number, and refuses duplicates itself so ON CONFLICT cannot skip a row after the move.';

drop function credit_package_on_sale(tier_restriction, boolean, user_tier);
alter table credit_transactions drop constraint credit_transactions_purchase_payment;
alter table credit_transactions drop constraint credit_transactions_payment_only_purchases;
alter table credit_transactions enable trigger credit_transactions_immutable;
alter table credit_transactions enable trigger credit_transactions_no_truncate;
alter table credit_transactions alter column id set default gen_random_uuid();
comment on column credit_transactions.id is 'Primary key.';
comment on column credit_transactions.stripe_payment_id is 'Stripe payment credited; unique, so a payment is credited once.';
comment on column credit_transactions.created_at is 'Entry time.';

-- Lock order triggers.
drop trigger datasets_lock_acting_user on datasets;
drop trigger dataset_versions_lock_acting_user on dataset_versions;
drop trigger workflows_lock_acting_user on workflows;
drop trigger jobs_lock_acting_user on jobs;
drop trigger models_lock_acting_user on models;
drop function lock_acting_user();

-- Jobs and nodes.
create or replace function jobs_check_transition() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if new.status not in ('pending', 'queued') then
            raise exception 'a job starts as pending or queued, not %', new.status
                using errcode = 'AM003', constraint = 'jobs_status_transition';
        end if;
        new.queued_at := case when new.status = 'queued' then now() end;
        new.started_at := null;
        new.completed_at := null;
        return new;
    end if;

    if new.workflow_snapshot_id <> old.workflow_snapshot_id
       or (new.credit_cost <> old.credit_cost and old.status <> 'pending') then
        raise exception 'job %: snapshot, and credit_cost once queued, cannot change', old.id
            using errcode = 'AM004', constraint = 'jobs_terms_immutable';
    end if;

    new.updated_at := now();  -- this trigger stamps updated_at too: one PL/pgSQL call per update
    if new.status = old.status then
        new.queued_at := old.queued_at;
        new.started_at := old.started_at;
        new.completed_at := old.completed_at;
        return new;
    end if;

    if not ((old.status = 'pending' and new.status in ('queued', 'cancelled'))
            or (old.status = 'queued' and new.status in ('running', 'cancelled'))
            or (old.status = 'running' and new.status in ('completed', 'failed', 'cancelled'))
            or (old.status = 'running' and new.status = 'queued' and old.attempt < old.max_attempts)) then
        raise exception 'job % cannot move from % to %', old.id, old.status, new.status
            using errcode = 'AM003', constraint = 'jobs_status_transition';
    end if;

    case new.status
        when 'queued' then
            new.queued_at := now();
            new.started_at := null;
            new.worker_id := null;
            new.heartbeat_at := null;
        when 'running' then
            new.queued_at := old.queued_at;
            new.started_at := now();
            new.heartbeat_at := now();
        else
            new.queued_at := old.queued_at;
            new.started_at := old.started_at;
            new.completed_at := now();
    end case;
    return new;
end;
$$;
comment on function jobs_check_transition() is
    'BEFORE INSERT/UPDATE on jobs: enforces the status machine (AM003), freezes snapshot and queued '
    'price (AM004), and stamps queued_at / started_at / completed_at and updated_at.';

create or replace function jobs_settle_credits() returns trigger
language plpgsql as $$
declare
    charged integer;
begin
    if new.status = 'queued' and (tg_op = 'INSERT' or old.status = 'pending') and new.credit_cost > 0 then
        insert into credit_transactions (user_id, type, amount, description, job_id)
        values (new.user_id, 'consumption', -new.credit_cost, 'job ' || new.id, new.id);
    elsif tg_op = 'UPDATE' and new.status in ('failed', 'cancelled') and old.status in ('queued', 'running') then
        select -c.amount into charged from credit_transactions c
         where c.job_id = new.id and c.type = 'consumption';
        if charged > 0 and not exists (select from credit_transactions c
                                       where c.job_id = new.id and c.type = 'refund') then
            insert into credit_transactions (user_id, type, amount, description, job_id)
            values (new.user_id, 'refund', charged, 'refund: job ' || new.id || ' ' || new.status, new.id);
        end if;
    end if;
    return null;
end;
$$;
comment on function jobs_settle_credits() is
    'AFTER INSERT/UPDATE OF status on jobs: charges credit_cost on first queueing and refunds it once '
    'when the job ends failed or cancelled. Completed jobs keep their charge.';

create or replace function claim_jobs(worker text, how_many integer default 1) returns setof jobs
language plpgsql as $$
begin
    -- PL/pgSQL, not SQL: the statement's plan is cached for the session, not re-planned per call.
    return query
    update jobs j
       set status = 'running', worker_id = worker, attempt = j.attempt + 1
      from (select id from jobs
             where status = 'queued'
             order by priority desc, queued_at, id
             limit how_many
               for update skip locked) picked
     where j.id = picked.id
    returning j.*;
end;
$$;
comment on function claim_jobs(text, integer) is
    'Worker API: claims up to how_many queued jobs (highest priority, then oldest) with FOR UPDATE '
    'SKIP LOCKED, marks them running for worker and returns them. Concurrent callers never share a job.';

create or replace function rescue_stalled_jobs(stalled_after interval default '5 minutes')
returns table (job_id uuid, action text)
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    j record;
begin
    for j in select id, attempt, max_attempts from jobs
              where status = 'running' and heartbeat_at < now() - stalled_after
              order by heartbeat_at
                for update skip locked
    loop
        if j.attempt < j.max_attempts then
            update jobs set status = 'queued' where id = j.id;
            job_id := j.id; action := 'requeued';
        else
            update jobs set status = 'failed',
                            error_message = format('worker stopped heartbeating (attempt %s of %s)',
                                                   j.attempt, j.max_attempts)
             where id = j.id;
            job_id := j.id; action := 'failed';
        end if;
        return next;
    end loop;
end;
$$;
comment on function rescue_stalled_jobs(interval) is
    'Maintenance: running jobs whose heartbeat is older than stalled_after are requeued while attempts '
    'remain, else failed (and so refunded). Returns what it did to each.';

create or replace function job_nodes_check_transition() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if new.status <> 'pending' then
            raise exception 'a job node starts as pending, not %', new.status
                using errcode = 'AM003', constraint = 'job_nodes_status_transition';
        end if;
        new.started_at := null;
        new.completed_at := null;
        return new;
    end if;
    if new.job_id <> old.job_id or new.node_id <> old.node_id then
        raise exception 'job node % cannot move to another job or node id', old.id
            using errcode = 'AM004', constraint = 'job_nodes_identity_immutable';
    end if;
    if new.status = old.status then
        new.started_at := old.started_at;
        new.completed_at := old.completed_at;
        return new;
    end if;
    if not ((old.status = 'pending' and new.status in ('running', 'skipped'))
            or (old.status = 'running' and new.status in ('success', 'failed'))) then
        raise exception 'job node % cannot move from % to %', old.id, old.status, new.status
            using errcode = 'AM003', constraint = 'job_nodes_status_transition';
    end if;
    if new.status = 'running' then
        new.started_at := now();
        new.completed_at := null;
    else
        new.started_at := old.started_at;
        new.completed_at := now();
    end if;
    return new;
end;
$$;
comment on function job_nodes_check_transition() is
    'BEFORE INSERT/UPDATE on job_nodes: enforces the node status machine and stamps started_at / completed_at.';

alter table jobs drop constraint jobs_times_ordered;
alter table jobs add constraint jobs_times_ordered check (completed_at >= started_at);
alter table job_nodes drop constraint job_nodes_times_ordered;
alter table job_nodes add constraint job_nodes_times_ordered check (completed_at >= started_at);
comment on column jobs.created_at is 'Job creation time.';
comment on column jobs.attempt is 'Times a worker has claimed this job; the rescuer gives up at max_attempts.';
comment on column jobs.max_attempts is 'Claims allowed before a stalled job is failed instead of requeued.';
comment on column jobs.worker_id is 'Worker holding the current attempt.';
comment on column job_nodes.created_at is 'Row creation time.';

-- Ingestion runs.
drop trigger ingestion_jobs_check_transition on ingestion_jobs;
drop function ingestion_jobs_check_transition();
alter table ingestion_jobs drop constraint ingestion_jobs_times_ordered;
alter table ingestion_jobs add constraint ingestion_jobs_times_ordered check (completed_at >= started_at);
comment on column ingestion_jobs.status is 'Run state (same lifecycle as jobs).';
comment on column ingestion_jobs.created_at is 'When the run was requested.';
comment on column ingestion_jobs.started_at is 'When the current attempt started.';
comment on column ingestion_jobs.completed_at is 'When the run reached a terminal state.';

-- Dataset versions.
drop trigger dataset_versions_check_transition on dataset_versions;
drop trigger dataset_versions_advance_sequence on dataset_versions;
drop function dataset_versions_check_transition();
drop function dataset_versions_advance_sequence();
create or replace function dataset_versions_assign_number() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    owner uuid;
begin
    update datasets
       set last_version_number = last_version_number + 1
     where id = new.dataset_id
    returning user_id, last_version_number into owner, new.version_number;
    new.user_id := coalesce(new.user_id, owner);
    if not found then
        raise foreign_key_violation using
            message = format('dataset %s does not exist', new.dataset_id),
            constraint = 'dataset_versions_dataset_fkey';
    end if;
    return new;
end;
$$;
comment on function dataset_versions_assign_number() is
    'BEFORE INSERT on dataset_versions: takes the next number from datasets.last_version_number and '
    'copies the owner. A client-given user_id that differs is kept so the composite key refuses it.';

create or replace function dataset_versions_freeze_identity() returns trigger
language plpgsql as $$
begin
    if new.dataset_id <> old.dataset_id or new.user_id <> old.user_id
       or new.version_number <> old.version_number or new.upload_id <> old.upload_id then
        raise exception 'dataset version % cannot change its dataset, owner, number or upload id', old.id
            using errcode = 'integrity_constraint_violation',
                  constraint = 'dataset_versions_identity_immutable';
    end if;
    return new;
end;
$$;
comment on function dataset_versions_freeze_identity() is
    'BEFORE UPDATE on dataset_versions: a version''s dataset, owner, number and upload id are fixed once assigned.';

create trigger dataset_versions_freeze_identity before update on dataset_versions
    for each row execute function dataset_versions_freeze_identity();
alter table dataset_versions drop constraint dataset_versions_times_ordered;
alter table dataset_versions drop column processed_at;
alter table dataset_versions drop constraint dataset_versions_completed_has_output;
alter table dataset_versions alter column status drop default;
alter table dataset_versions alter column status type text using status::text;
alter table dataset_versions alter column status set default 'pending';
alter table dataset_versions add constraint dataset_versions_completed_has_output check (
    status <> 'completed' or (s3_path is not null and parquet_size_bytes is not null
                              and row_count is not null and column_count is not null));
alter table dataset_versions add constraint dataset_versions_status_valid
    check (status in ('pending', 'processing', 'completed', 'failed'));
comment on column dataset_versions.status is 'Processing state: pending, processing, completed or failed.';
comment on column dataset_versions.created_at is 'Upload time.';
drop type version_status;
comment on type job_status is
    'Lifecycle of a job or ingestion job: pending -> queued -> running -> completed | failed; '
    'cancelled from pending, queued or running. completed, failed and cancelled are terminal.';

-- Accounts.
drop function user_id_for_oauth(oauth_provider, text);
drop trigger users_purged_immutable on users;
drop function users_refuse_purged_change();
drop trigger datasets_derived_columns on datasets;
drop function datasets_refuse_sequence_on_insert();
create or replace function users_adjust_usage(
    target uuid, datasets integer default 0, workflows integer default 0,
    models integer default 0, storage_bytes bigint default 0
) returns void
language plpgsql as $$
declare
    u users%rowtype;
    lim tier_limits%rowtype;
begin
    update users
       set dataset_count = dataset_count + datasets,
           workflow_count = workflow_count + workflows,
           model_count = model_count + models,
           storage_used_bytes = storage_used_bytes + storage_bytes,
           updated_at = now()
     where id = target
    returning * into u;
    if not found then
        return;  -- the owner is being deleted in this same statement (cascade)
    end if;
    if datasets > 0 or workflows > 0 or models > 0 or storage_bytes > 0 then
        select * into lim from tier_limits where tier = u.tier;
        if storage_bytes > 0 and u.storage_used_bytes > lim.max_storage_bytes then
            raise exception 'storage quota exceeded: % of % bytes allowed for tier %',
                u.storage_used_bytes, lim.max_storage_bytes, u.tier
                using errcode = 'AM002', constraint = 'users_storage_within_tier';
        elsif datasets > 0 and u.dataset_count > lim.max_datasets then
            raise exception 'dataset quota exceeded: % allowed for tier %', lim.max_datasets, u.tier
                using errcode = 'AM002', constraint = 'users_datasets_within_tier';
        elsif workflows > 0 and u.workflow_count > lim.max_workflows then
            raise exception 'workflow quota exceeded: % allowed for tier %', lim.max_workflows, u.tier
                using errcode = 'AM002', constraint = 'users_workflows_within_tier';
        elsif models > 0 and u.model_count > lim.max_models then
            raise exception 'model quota exceeded: % allowed for tier %', lim.max_models, u.tier
                using errcode = 'AM002', constraint = 'users_models_within_tier';
        end if;
    end if;
end;
$$;
comment on function users_adjust_usage(uuid, integer, integer, integer, bigint) is
    'Moves a user''s counters and storage by the given deltas and, when any grows, refuses going past '
    'the tier''s limits (SQLSTATE AM002, constraint users_<what>_within_tier). Called by counter triggers.';

create function oauth_sign_in(p_email text, p_full_name text, p_provider oauth_provider, p_provider_id text)
returns setof users
language sql
security definer set search_path = pg_catalog, public, pg_temp as $$
    insert into users (email, full_name, oauth_provider, oauth_id, email_verified)
    values (p_email, p_full_name, p_provider, p_provider_id, true)
    on conflict (oauth_provider, oauth_id) do update
       set full_name = coalesce(excluded.full_name, users.full_name), email_verified = true
    returning *
$$;
comment on function oauth_sign_in(text, text, oauth_provider, text) is
    'Creates or refreshes the account of an OAuth identity (the provider vouches for the e-mail) and '
    'returns it: the one way the application finds an account it does not act for yet.';

create or replace function user_id_for_email(p_email text) returns uuid
language sql stable
security definer set search_path = pg_catalog, public, pg_temp as $$
    select id from users where lower(email) = lower(p_email)
$$;
comment on function user_id_for_email(text) is
    'The id of the account with this e-mail (any case), for sign-in; the application then acts for it.';

create function change_user_tier(p_user uuid, p_tier user_tier) returns setof users
language sql
security definer set search_path = pg_catalog, public, pg_temp as $$
    update users set tier = p_tier where id = p_user and id = app_user_id() returning *
$$;
comment on function change_user_tier(uuid, user_tier) is
    'Moves the account the transaction acts for to another tier (automl_app cannot write users.tier).';

alter function oauth_sign_in(text, text, oauth_provider, text) owner to automl_owner;
alter function change_user_tier(uuid, user_tier) owner to automl_owner;
revoke execute on function oauth_sign_in(text, text, oauth_provider, text), change_user_tier(uuid, user_tier) from public;
grant execute on function oauth_sign_in(text, text, oauth_provider, text), change_user_tier(uuid, user_tier) to automl_app;

-- Audit and helpers as 0001 wrote them.
drop function apply_database_privileges();
create or replace function check_integrity()
returns table (invariant text, subject text, detail text)
language sql stable
security definer set search_path = pg_catalog, public, pg_temp as $$
    -- Set-based throughout: each source table is read once and grouped, so the audit stays
    -- linear on millions of ledger entries and jobs.
    with ledger as (
        select c.user_id, sum(c.amount) as total, count(*) as entries,
               (array_agg(c.balance_after order by c.entry_number desc))[1] as last_balance
          from credit_transactions c group by c.user_id
    ), job_ledger as (
        select c.job_id,
               -sum(c.amount) filter (where c.type = 'consumption') as consumed,
               sum(c.amount) filter (where c.type = 'refund') as refunded,
               min(c.user_id::text) as entry_owner, count(distinct c.user_id) as owners
          from credit_transactions c where c.job_id is not null group by c.job_id
    ), dataset_counts as (
        select user_id, count(*) as n from datasets group by user_id
    ), workflow_counts as (
        select user_id, count(*) as n from workflows where not is_deleted group by user_id
    ), model_counts as (
        select user_id, count(*) as n from models group by user_id
    ), storage as (
        select user_id, sum(original_size_bytes + coalesce(parquet_size_bytes, 0)) as bytes
          from dataset_versions group by user_id
    )
    -- Balance, entry counter and last entry agree with the ledger.
    select 'users.credit_balance = ledger', u.id::text,
           format('balance %s / last_entry_number %s, but ledger sums to %s over %s entries, last balance_after %s',
                  u.credit_balance, u.last_entry_number, coalesce(l.total, 0), coalesce(l.entries, 0),
                  coalesce(l.last_balance, 0))
      from users u left join ledger l on l.user_id = u.id
     where u.credit_balance <> coalesce(l.total, 0) or u.last_entry_number <> coalesce(l.entries, 0)
        or u.credit_balance <> coalesce(l.last_balance, 0)
    union all
    -- Each entry is numbered 1, 2, 3... and its balance_after is the running sum.
    select 'credit_transactions chain', t.id::text,
           format('entry %s of user %s: expected number %s and balance_after %s, found %s',
                  t.entry_number, t.user_id, t.position, t.running, t.balance_after)
      from (select c.id, c.user_id, c.entry_number, c.balance_after,
                   row_number() over w as position, sum(c.amount) over w as running
              from credit_transactions c
            window w as (partition by c.user_id order by c.entry_number)) t
     where t.entry_number <> t.position or t.balance_after <> t.running
    union all
    -- Refunds never exceed consumption; a live account's charged job exists and is its own.
    select 'credit_transactions job rules', jl.job_id::text,
           format('job consumed %s, refunded %s, job owner %s, entry owner %s',
                  jl.consumed, jl.refunded, j.user_id, jl.entry_owner)
      from job_ledger jl
      join users u on u.id::text = jl.entry_owner
      left join jobs j on j.id = jl.job_id
     where coalesce(jl.refunded, 0) > coalesce(jl.consumed, 0)
        or jl.owners > 1
        or (u.purged_at is null and (j.id is null or j.user_id::text <> jl.entry_owner))
    union all
    -- Jobs are charged by the policy: credit_cost once when queued, refunded once if failed or cancelled.
    select 'jobs credits follow policy', j.id::text,
           format('status %s, credit_cost %s, charged %s, refunded %s', j.status, j.credit_cost,
                  coalesce(jl.consumed, 0), coalesce(jl.refunded, 0))
      from jobs j
      left join job_ledger jl on jl.job_id = j.id
     where (jl.consumed is not null and jl.consumed <> j.credit_cost)
        or (j.status = 'pending' and jl.consumed is not null)
        or (j.status in ('queued', 'running', 'completed') and j.credit_cost > 0 and jl.consumed is null)
        or (j.status in ('queued', 'running', 'completed') and jl.refunded is not null)
        or (j.status in ('failed', 'cancelled') and coalesce(jl.consumed, 0) <> coalesce(jl.refunded, 0))
    union all
    -- Lifecycle stamps match the status.
    select 'jobs timestamps match status', j.id::text,
           format('status %s, queued_at %s, started_at %s, completed_at %s',
                  j.status, j.queued_at, j.started_at, j.completed_at)
      from jobs j
     where (j.status in ('completed', 'failed', 'cancelled')) <> (j.completed_at is not null)
        or (j.status in ('running', 'completed', 'failed') and j.started_at is null)
        or (j.status in ('queued', 'running') and j.queued_at is null)
    union all
    select 'job_nodes timestamps match status', n.id::text,
           format('status %s, started_at %s, completed_at %s', n.status, n.started_at, n.completed_at)
      from job_nodes n
     where (n.status in ('success', 'failed', 'skipped')) <> (n.completed_at is not null)
        or (n.status in ('running', 'success', 'failed')) <> (n.started_at is not null)
    union all
    -- Counters and storage equal what they count.
    select 'users counters and storage', u.id::text,
           format('datasets %s/%s, workflows %s/%s, models %s/%s, storage %s/%s (stored/actual)',
                  u.dataset_count, coalesce(d.n, 0), u.workflow_count, coalesce(w.n, 0),
                  u.model_count, coalesce(m.n, 0), u.storage_used_bytes, coalesce(s.bytes, 0))
      from users u
      left join dataset_counts d on d.user_id = u.id
      left join workflow_counts w on w.user_id = u.id
      left join model_counts m on m.user_id = u.id
      left join storage s on s.user_id = u.id
     where u.dataset_count <> coalesce(d.n, 0) or u.workflow_count <> coalesce(w.n, 0)
        or u.model_count <> coalesce(m.n, 0) or u.storage_used_bytes <> coalesce(s.bytes, 0)
    union all
    -- Version numbers come from the dataset's sequence.
    select 'dataset_versions numbering', v.id::text,
           format('version %s of dataset %s, whose sequence is at %s', v.version_number, v.dataset_id,
                  d.last_version_number)
      from dataset_versions v
      left join datasets d on d.id = v.dataset_id
     where d.id is null or v.version_number > d.last_version_number
    union all
    -- Ownership links hold (foreign key triggers can be switched off by a superuser).
    select 'owner links', x.tbl || ' ' || x.id::text, x.detail
      from (select 'dataset_versions' as tbl, v.id, 'dataset owner differs or dataset missing' as detail
              from dataset_versions v left join datasets p on p.id = v.dataset_id
             where p.user_id is distinct from v.user_id
            union all
            select 'jobs', j.id, 'snapshot owner differs or snapshot missing'
              from jobs j left join workflow_snapshots p on p.id = j.workflow_snapshot_id
             where p.user_id is distinct from j.user_id
            union all
            select 'job_nodes', n.id, 'job owner differs or job missing'
              from job_nodes n left join jobs p on p.id = n.job_id
             where p.user_id is distinct from n.user_id
            union all
            select 'models', m.id, 'job owner differs or job missing'
              from models m left join jobs p on p.id = m.job_id
             where p.user_id is distinct from m.user_id
            union all
            select 'workflow_snapshots', s.id, 'workflow owner differs or workflow missing'
              from workflow_snapshots s left join workflows p on p.id = s.workflow_id
             where s.workflow_id is not null and p.user_id is distinct from s.user_id) x
$$;
comment on function check_integrity() is
    'DBA audit: one row per broken invariant (ledger chain and balances, credit policy per job, '
    'lifecycle stamps, counters, storage, version numbering, owner links); no rows when healthy. '
    'Recomputes from the base rows, so it notices drift written behind the triggers'' back.';

create or replace function purge_soft_deleted(retention interval default '30 days')
returns table (item text, removed bigint)
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    cutoff timestamptz := now() - retention;
    doomed uuid[];
    n bigint;
begin
    -- Lock the accounts first: a concurrent restore either wins before us or waits and fails.
    select coalesce(array_agg(id), '{}') into doomed
      from (select id from users
             where is_deleted and purged_at is null and deleted_at < cutoff
             order by id
               for update) u;

    delete from experiments where user_id = any (doomed);
    get diagnostics n = row_count; item := 'experiments'; removed := n; return next;
    delete from models where user_id = any (doomed);
    get diagnostics n = row_count; item := 'models'; removed := n; return next;
    delete from jobs where user_id = any (doomed);
    get diagnostics n = row_count; item := 'jobs'; removed := n; return next;
    delete from workflows where user_id = any (doomed) or (is_deleted and deleted_at < cutoff);
    get diagnostics n = row_count; item := 'workflows'; removed := n; return next;
    delete from workflow_snapshots where user_id = any (doomed);
    get diagnostics n = row_count; item := 'workflow_snapshots'; removed := n; return next;
    delete from datasets where user_id = any (doomed);
    get diagnostics n = row_count; item := 'datasets'; removed := n; return next;
    delete from user_tutorial_progress where user_id = any (doomed);
    get diagnostics n = row_count; item := 'user_tutorial_progress'; removed := n; return next;

    -- The account row stays, anonymized: its ledger entries keep their owner and exact amounts.
    update users
       set email = null, full_name = null, oauth_provider = null, oauth_id = null,
           email_verified = false, purged_at = now()
     where id = any (doomed);
    get diagnostics n = row_count; item := 'users_anonymized'; removed := n; return next;
end;
$$;
comment on function purge_soft_deleted(interval) is
    'Retention: hard-deletes workflows soft-deleted before now() - retention; for accounts soft-deleted '
    'that long ago, deletes all their content and personal data (e-mail, name, OAuth ids) and stamps '
    'purged_at, leaving every ledger entry untouched. Returns rows removed per table.';

create or replace function app_user_id() returns uuid
language sql stable parallel safe as $$
    select nullif(current_setting('automl.user_id', true), '')::uuid
$$;
comment on function app_user_id() is
    'The user the current transaction acts for (setting automl.user_id), or NULL. Row-level security '
    'policies call it as (select app_user_id()) so it is evaluated once per statement.';

create or replace function jsonb_is_object(doc jsonb) returns boolean
language sql immutable parallel safe as $$
    select coalesce(jsonb_typeof(doc) = 'object', false)
$$;
comment on function jsonb_is_object(jsonb) is
    'True when doc is a JSON object; false (never NULL) for anything else, so CHECKs cannot pass by NULL.';

create or replace function jsonb_is_number_map(doc jsonb) returns boolean
language sql immutable parallel safe as $$
    select jsonb_is_object(doc)
       and not exists (select from jsonb_each(doc) as e(key, value)
                       where jsonb_typeof(e.value) <> 'number')
$$;
comment on function jsonb_is_number_map(jsonb) is
    'True when doc is an object whose values are all numbers (metric summaries: {"accuracy": 0.93}).';

create or replace function workflow_graph_is_valid(doc jsonb) returns boolean
language sql immutable parallel safe as $$
    select jsonb_is_object(doc)
       and coalesce(jsonb_typeof(doc -> 'nodes') = 'array', false)
       and coalesce(jsonb_typeof(doc -> 'edges') = 'array', false)
       and not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                       where coalesce(jsonb_typeof(n.node -> 'id') <> 'string', true)
                          or n.node ->> 'id' = '')
       and (select count(*) = count(distinct n.node ->> 'id')
            from jsonb_array_elements(doc -> 'nodes') as n(node))
       and not exists (select from jsonb_array_elements(doc -> 'edges') as e(edge)
                       where coalesce(jsonb_typeof(e.edge -> 'source') <> 'string', true)
                          or coalesce(jsonb_typeof(e.edge -> 'target') <> 'string', true)
                          or not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                                         where n.node ->> 'id' = e.edge ->> 'source')
                          or not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                                         where n.node ->> 'id' = e.edge ->> 'target'))
$$;
comment on function workflow_graph_is_valid(jsonb) is
    'True when doc is {"nodes": [...], "edges": [...]}: nodes carry unique non-empty string ids, '
    'edges carry string source/target naming existing nodes. Used by workflow and snapshot CHECKs.';

create or replace function tutorial_steps_are_valid(steps jsonb) returns boolean
language sql immutable parallel safe as $$
    select coalesce(jsonb_typeof(steps) = 'array', false)
       and not exists (select from jsonb_array_elements(steps) as s(step)
                       where coalesce(jsonb_typeof(s.step -> 'id') <> 'string', true)
                          or coalesce(jsonb_typeof(s.step -> 'title') <> 'string', true)
                          or s.step ->> 'id' = '')
       and (select count(*) = count(distinct s.step ->> 'id') from jsonb_array_elements(steps) as s(step))
$$;
comment on function tutorial_steps_are_valid(jsonb) is
    'True when steps is an array of objects with a unique non-empty string "id" and a string "title".';

alter function set_updated_at() reset search_path;
alter function stamp_deleted_at() reset search_path;
alter function users_refuse_derived_change() reset search_path;
alter function refuse_owner_change() reset search_path;
alter function fill_owner_from_dataset_version() reset search_path;
alter function workflow_snapshots_refuse_change() reset search_path;
alter function job_nodes_fill_owner() reset search_path;
alter function models_stamp_deployed_at() reset search_path;
alter function credit_transactions_refuse_change() reset search_path;
alter function users_refuse_delete_with_ledger() reset search_path;
alter function experiment_runs_fill_owner() reset search_path;
alter function job_nodes_skip_downstream() security invoker reset search_path;

-- The role stays: roles are cluster-wide and other databases may use it.
