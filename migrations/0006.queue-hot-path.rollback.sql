-- 0006 rollback: jobs' CHECKs, its heartbeat index and the pending-charge rules as in 0005.
-- squawk-ignore-file changing-column-type, ban-drop-column, ban-drop-trigger, ban-drop-domain, require-concurrent-index-creation, require-concurrent-index-deletion, constraint-missing-not-valid
set local lock_timeout = '5s';
set local statement_timeout = '5min';

revoke update (updated_at) on users from automl_app;
revoke update (updated_at) on datasets from automl_app;
revoke update (updated_at) on jobs from automl_app;
revoke update (updated_at) on job_nodes from automl_app;
alter table user_tutorial_progress drop column created_at;

create or replace function credit_transactions_post() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    job jobs%rowtype;
    consumed integer;
    account_tier user_tier;
    closed boolean;
    purged boolean;
    package credit_packages%rowtype;
begin
    new.created_at := now();
    if new.user_id is null or new.type is null or new.amount is null then
        raise not_null_violation using message = 'a ledger entry needs user_id, type and amount';
    end if;
    -- The shape of an entry (see the note above the table).
    if not (case new.type when 'purchase' then new.amount > 0 when 'refund' then new.amount > 0
                          when 'consumption' then new.amount < 0 else new.amount <> 0 end) then
        raise check_violation using
            message = format('a %s entry cannot move %s credits', new.type, new.amount),
            constraint = 'credit_transactions_amount_sign';
    elsif new.type in ('consumption', 'refund') and new.job_id is null then
        raise check_violation using message = format('a %s entry names its job', new.type),
            constraint = 'credit_transactions_job_required';
    elsif new.type <> 'purchase' and (new.stripe_payment_id is not null or new.package_id is not null) then
        raise check_violation using message = format('a %s entry carries no payment or package', new.type),
            constraint = 'credit_transactions_payment_only_purchases';
    elsif new.type = 'purchase' and new.stripe_payment_id is null then
        raise check_violation using message = 'a purchase carries its payment reference',
            constraint = 'credit_transactions_purchase_payment';
    end if;

    -- A key unique across users that the client chose could collide with an uncommitted twin of
    -- another account, which ON CONFLICT DO NOTHING would wait for and then skip, after the
    -- balance below had moved. So such keys are locked (transaction-scoped advisory locks keyed by
    -- this table) and looked up before anything moves. An id the database draws itself cannot
    -- collide and costs nothing.
    if new.id is null then
        new.id := gen_random_uuid();
    else
        perform pg_advisory_xact_lock(tg_relid::integer, hashtext(new.id::text));
        if exists (select from credit_transactions c where c.id = new.id) then
            raise unique_violation using message = format('ledger entry %s already exists', new.id),
                constraint = 'credit_transactions_pkey';
        end if;
    end if;
    if new.stripe_payment_id is not null then
        perform pg_advisory_xact_lock(tg_relid::integer, hashtext(new.stripe_payment_id));
        if exists (select from credit_transactions c where c.stripe_payment_id = new.stripe_payment_id) then
            raise unique_violation using
                message = format('payment %s is already credited', new.stripe_payment_id),
                constraint = 'credit_transactions_stripe_payment_key';
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
    returning credit_balance, last_entry_number, tier, is_deleted, purged_at is not null
         into new.balance_after, new.entry_number, account_tier, closed, purged;
    if not found then
        if exists (select from users where id = new.user_id) then
            raise exception 'insufficient credits: user % cannot take %', new.user_id, new.amount
                using errcode = 'AM001', constraint = 'credit_transactions_balance_nonnegative';
        end if;
        raise foreign_key_violation using
            message = format('user %s does not exist', new.user_id),
            constraint = 'credit_transactions_user_fkey';
    end if;
    -- A closed account spends nothing (its refunds and corrections still post); a purged one is final.
    if purged or (closed and new.type in ('consumption', 'purchase')) then
        raise exception 'account % is closed: no % entry', new.user_id, new.type
            using errcode = 'AM004', constraint = 'users_account_closed';
    end if;

    if new.job_id is not null then
        -- FOR SHARE: the job's status cannot change under the policy check below (a concurrent
        -- cancel waits for this entry, and then sees it), nor can the job vanish.
        select * into job from jobs j where j.id = new.job_id for share;
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
            select -c.amount into consumed from credit_transactions c  -- this owner's charge of the job
             where c.job_id = new.job_id and c.type = 'consumption' and c.user_id = new.user_id;
            if job.status not in ('failed', 'cancelled') or new.amount <> coalesce(consumed, 0) then
                raise check_violation using
                    message = format('job %s (%s, consumed %s) cannot be refunded %s', job.id, job.status,
                                     coalesce(consumed, 0), new.amount),
                    constraint = 'credit_transactions_job_policy';
            end if;
        end if;
        -- The job's entries are this user's, so a twin (same job, same type) waited on the users row
        -- above and has committed by now. One probe per type keeps each an index lookup.
        if new.type = 'consumption' and exists (select from credit_transactions c
                                                 where c.job_id = new.job_id and c.type = 'consumption') then
            raise unique_violation using message = format('job %s is already charged', new.job_id),
                constraint = 'credit_transactions_job_consumption_key';
        elsif new.type = 'refund' and exists (select from credit_transactions c
                                              where c.job_id = new.job_id and c.type = 'refund') then
            raise unique_violation using message = format('job %s is already refunded', new.job_id),
                constraint = 'credit_transactions_job_refund_key';
        end if;
    end if;

    -- A purchase of a package credits exactly that package, to a tier allowed to buy it.
    if new.type = 'purchase' and new.package_id is not null then
        select * into package from credit_packages p where p.id = new.package_id;
        if not found then
            raise foreign_key_violation using message = format('package %s does not exist', new.package_id),
                constraint = 'credit_transactions_package_fkey';
        elsif new.amount <> package.credits then
            raise check_violation using
                message = format('package %s grants %s credits, not %s', package.name, package.credits, new.amount),
                constraint = 'credit_transactions_purchase_matches_package';
        elsif not credit_package_on_sale(package.tier_restriction, package.is_active, account_tier) then
            raise check_violation using
                message = format('package %s is not for sale to a %s account', package.name, account_tier),
                constraint = 'credit_transactions_package_for_tier';
        end if;
    end if;
    return new;
end;
$$;
comment on function credit_transactions_post() is
    'BEFORE INSERT on credit_transactions: checks the entry''s shape (sign, job, payment), refuses a '
    'duplicate of a client-chosen id or payment before anything moves, moves the user''s balance and '
    'entry counter in one UPDATE ... RETURNING on the locked user row, fills id, created_at, '
    'balance_after and entry_number, and checks the account, the job, the credit policy and the package.';

drop index jobs_running_idx;
create index jobs_running_heartbeat_idx on jobs (heartbeat_at) where status = 'running';
comment on index jobs_running_heartbeat_idx is 'Running jobs by last heartbeat, for the stall rescuer.';

drop trigger jobs_settle_credits_on_insert on jobs;
drop trigger jobs_settle_credits_on_update on jobs;
alter table jobs
    alter column credit_cost type integer,
    alter column priority type integer,
    alter column max_attempts type integer,
    alter column celery_task_id type text,
    alter column idempotency_key type text,
    alter column worker_id type text;
alter table jobs
    add constraint jobs_credit_cost_nonnegative check (credit_cost >= 0),
    add constraint jobs_priority_range check (priority between -1000 and 1000),
    add constraint jobs_results_shape check (results is null or jsonb_is_object(results)),
    add constraint jobs_celery_task_id_length check (length(celery_task_id) between 1 and 255),
    add constraint jobs_idempotency_key_length check (length(idempotency_key) between 1 and 200),
    add constraint jobs_worker_id_length check (length(worker_id) between 1 and 200),
    add constraint jobs_attempts_range check (attempt >= 0 and max_attempts >= 1 and attempt <= max_attempts),
    add constraint jobs_times_ordered check (
        queued_at >= created_at and started_at >= coalesce(queued_at, created_at)
        and completed_at >= greatest(created_at, queued_at, started_at));
create or replace function jobs_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if tg_op = 'INSERT' then
        if new.status not in ('pending', 'queued') then
            raise exception 'a job starts as pending or queued, not %', new.status
                using errcode = 'AM003', constraint = 'jobs_status_transition';
        end if;
        new.created_at := now();
        new.queued_at := case when new.status = 'queued' then now() end;
        new.started_at := null;
        new.completed_at := null;
        new.attempt := 0;
        new.worker_id := null;
        new.heartbeat_at := null;
        return new;
    end if;

    if new.workflow_snapshot_id <> old.workflow_snapshot_id or new.max_attempts <> old.max_attempts
       or (new.credit_cost <> old.credit_cost and old.status <> 'pending') then
        raise exception 'job %: snapshot, attempts allowed, and credit_cost once queued, cannot change', old.id
            using errcode = 'AM004', constraint = 'jobs_terms_immutable';
    end if;

    new.updated_at := now();  -- this trigger stamps updated_at too: one PL/pgSQL call per update
    new.created_at := old.created_at;
    new.attempt := old.attempt;
    if new.status = old.status then
        new.queued_at := old.queued_at;
        new.started_at := old.started_at;
        new.completed_at := old.completed_at;
        new.worker_id := old.worker_id;
        return new;
    end if;

    if not ((old.status = 'pending' and new.status in ('queued', 'cancelled'))
            or (old.status = 'queued' and new.status in ('running', 'cancelled'))
            or (old.status = 'running' and new.status in ('completed', 'failed', 'cancelled'))
            or (old.status = 'running' and new.status = 'queued' and old.attempt < old.max_attempts)) then
        raise exception 'job % cannot move from % to %', old.id, old.status, new.status
            using errcode = 'AM003', constraint = 'jobs_status_transition';
    end if;

    -- now() is when this transaction began, which may precede a concurrent transaction's stamp
    -- on the same job (a rescuer's requeue, say): each stamp is at least the one before it.
    case new.status
        when 'queued' then
            new.queued_at := greatest(now(), old.created_at);
            new.started_at := null;
            new.completed_at := null;
            new.worker_id := null;
            new.heartbeat_at := null;
        when 'running' then
            new.queued_at := old.queued_at;
            new.started_at := greatest(now(), old.queued_at, old.created_at);
            new.completed_at := null;
            new.heartbeat_at := now();
            new.attempt := old.attempt + 1;  -- a claim; queued jobs always have an attempt left
        else
            new.queued_at := old.queued_at;
            new.started_at := old.started_at;
            new.completed_at := greatest(now(), old.started_at, old.queued_at, old.created_at);
            new.worker_id := old.worker_id;
    end case;
    return new;
end;
$$;
comment on function jobs_check_transition() is
    'BEFORE INSERT/UPDATE on jobs: enforces the status machine (AM003), freezes snapshot, attempts allowed '
    'and queued price (AM004), stamps created_at / queued_at / started_at / completed_at and updated_at, '
    'and keeps attempt and worker_id.';

create or replace function jobs_settle_credits() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    charged integer;
begin
    if new.status = 'queued' and (tg_op = 'INSERT' or old.status = 'pending') and new.credit_cost > 0 then
        insert into credit_transactions (user_id, type, amount, description, job_id)
        values (new.user_id, 'consumption', -new.credit_cost, 'job ' || new.id, new.id);
    elsif tg_op = 'UPDATE' and new.status in ('failed', 'cancelled') and old.status in ('queued', 'running') then
        -- By job and owner: a job id is the client's to choose, and a purged account's ledger keeps
        -- the ids of jobs that no longer exist.
        select -c.amount into charged from credit_transactions c
         where c.job_id = new.id and c.type = 'consumption' and c.user_id = new.user_id;
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

create trigger jobs_settle_credits_on_insert after insert on jobs
    for each row when (new.status = 'queued' and new.credit_cost > 0)
    execute function jobs_settle_credits();
create trigger jobs_settle_credits_on_update after update of status on jobs
    for each row when ((old.status = 'pending' and new.status = 'queued' and new.credit_cost > 0)
                       or (old.status in ('queued', 'running') and new.status in ('failed', 'cancelled')))
    execute function jobs_settle_credits();

drop domain worker_name;
drop domain job_idempotency_key;
drop domain job_task_id;
drop domain job_max_attempts;
drop domain job_priority;
drop domain job_credit_cost;
