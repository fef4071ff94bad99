-- 0005 the ledger's hot path (issue 10): an entry costs what the data movement costs.
-- PostgreSQL parses and runs every CHECK of a table, and every WHEN of its triggers, again for each
-- statement that writes it, whatever columns change; the ledger updates its account's users row
-- once per entry. So, with every rule kept and every error named as before:
--   * one-column rules of users and of the ledger become domains (parsed once, checked when the
--     column is written), their constraints named as the table's were;
--   * users' rules tying identity and deletion columns together become users_rules, a trigger
--     on those columns only; its three client-update triggers become one, users_guard;
--   * the ledger's multi-column entry rules move into the posting trigger (same SQLSTATE and names);
--   * the ledger's foreign key to users goes: the posting trigger finds and locks the account for
--     every entry anyway, and users_ledger_keeps_account (now ENABLE ALWAYS) keeps it from deletion.
-- A column moves to a domain over its own type without a rewrite, after one scan that checks it.
-- squawk-ignore-file changing-column-type, ban-drop-constraint, ban-drop-function, ban-drop-trigger, ban-create-domain-with-constraint
set local lock_timeout = '5s';
set local statement_timeout = '5min';

-- ==== Domains ====
create domain email_address as text
    constraint users_email_format check (length(value) <= 254 and value ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:].]+$');
comment on domain email_address is 'An e-mail address: at most 254 characters, one @, a dot in the domain part.';
create domain person_name as text
    constraint users_full_name_length check (length(btrim(value)) between 1 and 200);
comment on domain person_name is 'A display name of a person: 1-200 characters, not blank.';
create domain oauth_subject as text
    constraint users_oauth_id_length check (length(value) between 1 and 255);
comment on domain oauth_subject is 'An identity''s id at its OAuth provider: 1-255 characters.';
create domain account_credits as integer
    constraint users_credit_balance_nonnegative check (value >= 0);
comment on domain account_credits is 'Credits an account holds: never negative.';
create domain usage_count as integer
    constraint users_counters_nonnegative check (value >= 0);
comment on domain usage_count is 'How many of something an account owns: never negative.';
create domain usage_bytes as bigint
    constraint users_storage_nonnegative check (value >= 0);
comment on domain usage_bytes is 'Bytes an account stores: never negative.';
create domain entry_count as bigint
    constraint users_last_entry_number_nonnegative check (value >= 0);
comment on domain entry_count is 'Ledger entries an account has: never negative.';
create domain ledger_entry_number as bigint
    constraint credit_transactions_entry_number_positive check (value >= 1);
comment on domain ledger_entry_number is 'Position of an entry in its account''s ledger: 1, 2, 3...';
create domain ledger_balance as integer
    constraint credit_transactions_balance_nonnegative check (value >= 0);
comment on domain ledger_balance is 'A balance after an entry: never negative.';
create domain ledger_description as text
    constraint credit_transactions_description_length check (length(value) <= 1000);
comment on domain ledger_description is 'Why an entry was posted: at most 1,000 characters.';
create domain payment_reference as text
    constraint credit_transactions_stripe_payment_id_length check (length(value) between 1 and 255);
comment on domain payment_reference is 'A payment processor''s id of a payment: 1-255 characters.';

-- ==== What depends on the columns that change type ====
drop function user_id_for_email(text);
drop function user_id_for_oauth(oauth_provider, text);
drop trigger users_derived_columns_insert on users;
drop trigger users_derived_columns_update on users;
drop trigger users_set_updated_at on users;
drop trigger users_purged_immutable on users;
drop trigger users_stamp_deleted_at on users;
drop trigger users_ledger_keeps_account on users;
drop trigger credit_transactions_acting_user on credit_transactions;
drop policy credit_transactions_tenant_insert on credit_transactions;
drop function users_refuse_purged_change();

-- ==== users ====
alter table users
    drop constraint users_email_required, drop constraint users_email_format, drop constraint users_full_name_length,
    drop constraint users_oauth_pair, drop constraint users_oauth_id_length, drop constraint users_credit_balance_nonnegative,
    drop constraint users_counters_nonnegative, drop constraint users_storage_nonnegative,
    drop constraint users_last_entry_number_nonnegative, drop constraint users_deleted_at_matches,
    drop constraint users_purged_is_deleted;
alter table users
    alter column email type email_address, alter column full_name type person_name,
    alter column oauth_id type oauth_subject, alter column credit_balance type account_credits,
    alter column dataset_count type usage_count, alter column workflow_count type usage_count,
    alter column model_count type usage_count, alter column storage_used_bytes type usage_bytes,
    alter column last_entry_number type entry_count;
comment on column users.deleted_at is
    'When is_deleted last turned true (stamped by users_rules); purge counts retention from it.';

create function users_check_account_state() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if new.is_deleted then  -- is_deleted is what clients set; deleted_at is the database's record of when
        new.deleted_at := case when tg_op = 'INSERT' or not old.is_deleted then now() else old.deleted_at end;
    else
        new.deleted_at := null;
    end if;
    if new.email is null and new.purged_at is null then
        raise check_violation using message = 'an account has an e-mail address until it is purged',
            constraint = 'users_email_required';
    elsif (new.oauth_provider is null) <> (new.oauth_id is null) then
        raise check_violation using message = 'oauth_provider and oauth_id are given together or not at all',
            constraint = 'users_oauth_pair';
    elsif new.purged_at is not null and not new.is_deleted then
        raise check_violation using message = 'a purged account stays closed',
            constraint = 'users_purged_is_deleted';
    end if;
    return new;
end;
$$;
comment on function users_check_account_state() is
    'BEFORE INSERT, or UPDATE of e-mail, OAuth identity or deletion columns, on users: stamps deleted_at '
    '(when is_deleted turns true; cleared on restore) and refuses an account without e-mail before purge '
    '(users_email_required), half an OAuth identity (users_oauth_pair) or a purged account reopened '
    '(users_purged_is_deleted), SQLSTATE 23514.';

create function users_guard() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if old.purged_at is not null then
        raise exception 'account % was purged on %: it cannot change', old.id, old.purged_at
            using errcode = 'AM004', constraint = 'users_account_closed';
    end if;
    if new.credit_balance <> old.credit_balance or new.last_entry_number <> old.last_entry_number
       or new.dataset_count <> old.dataset_count or new.workflow_count <> old.workflow_count
       or new.model_count <> old.model_count or new.storage_used_bytes <> old.storage_used_bytes then
        raise exception 'users.% is maintained by the database and cannot be written directly',
            case when new.credit_balance <> old.credit_balance or new.last_entry_number <> old.last_entry_number
                 then 'credit_balance' else 'counters/storage' end
            using errcode = 'AM005', constraint = 'users_derived_columns',
                  hint = 'Credits move with credit_transactions entries; counters and storage follow the rows they count.';
    end if;
    new.updated_at := now();
    return new;
end;
$$;
comment on function users_guard() is
    'BEFORE UPDATE on users by a client: refuses changing a purged account (AM004, users_account_closed) '
    'or a derived column (AM005, users_derived_columns), and stamps updated_at.';

create or replace function users_refuse_derived_change() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    raise exception 'users.% is maintained by the database and cannot be written directly',
        case when tg_op = 'INSERT' then 'credit_balance/counters/storage'
             when new.credit_balance <> old.credit_balance or new.last_entry_number <> old.last_entry_number
                 then 'credit_balance'
             else 'counters/storage' end
        using errcode = 'AM005', constraint = 'users_derived_columns',
              hint = 'Credits move with credit_transactions entries; counters and storage follow the rows they count.';
end;
$$;
comment on function users_refuse_derived_change() is
    'Refuses a client INSERT that sets users.credit_balance, last_entry_number, the counters or '
    'storage_used_bytes (SQLSTATE AM005, constraint users_derived_columns).';

create trigger users_rules
    before insert or update of email, oauth_provider, oauth_id, is_deleted, deleted_at, purged_at on users
    for each row execute function users_check_account_state();
create trigger users_derived_columns_insert before insert on users
    for each row when (new.credit_balance <> 0 or new.last_entry_number <> 0 or new.dataset_count <> 0
                       or new.workflow_count <> 0 or new.model_count <> 0 or new.storage_used_bytes <> 0)
    execute function users_refuse_derived_change();
create trigger users_guard before update on users
    for each row when (pg_trigger_depth() = 0) execute function users_guard();

create function user_id_for_oauth(p_provider oauth_provider, p_provider_id text) returns uuid
language sql stable
security definer set search_path = pg_catalog, public, pg_temp
begin atomic
    select id from users where oauth_provider = p_provider and oauth_id = p_provider_id;
end;
comment on function user_id_for_oauth(oauth_provider, text) is
    'OAuth sign-in: the id of the account this provider identity belongs to, or NULL. Reveals nothing '
    'else and changes nothing; the application then acts for that id (or signs up a new one).';

create function user_id_for_email(p_email text) returns uuid
language sql stable
security definer set search_path = pg_catalog, public, pg_temp
begin atomic
    select id from users where lower(email) = lower(p_email);
end;
comment on function user_id_for_email(text) is
    'E-mail sign-in: the id of the account with this e-mail (any case), or NULL; the application then '
    'acts for it.';

-- ==== credit_transactions ====
alter table credit_transactions
    drop constraint credit_transactions_user_fkey,
    drop constraint credit_transactions_entry_number_positive, drop constraint credit_transactions_balance_nonnegative,
    drop constraint credit_transactions_amount_sign, drop constraint credit_transactions_job_required,
    drop constraint credit_transactions_payment_only_purchases, drop constraint credit_transactions_purchase_payment,
    drop constraint credit_transactions_description_length, drop constraint credit_transactions_stripe_payment_id_length;
alter table credit_transactions
    alter column entry_number type ledger_entry_number, alter column balance_after type ledger_balance,
    alter column description type ledger_description, alter column stripe_payment_id type payment_reference;
comment on column credit_transactions.user_id is
    'Account whose balance the entry moves (checked and locked by the posting trigger; not a foreign key).';
comment on column credit_transactions.amount is
    'Signed change: purchase and refund > 0, consumption < 0, adjustment non-zero (credit_transactions_amount_sign).';
create policy credit_transactions_tenant_insert on credit_transactions for insert to automl_app
    with check (user_id = (select app_user_id()) and type in ('consumption', 'refund')
                and stripe_payment_id is null and package_id is null);
comment on policy credit_transactions_tenant_insert on credit_transactions is
    'automl_app posts only for app_user_id(), and only consumption and refund entries (which the '
    'credit policy then checks against the job): it creates no credits.';

create or replace function credit_transactions_check_acting_user() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
declare
    creates_credits boolean := new.type in ('purchase', 'adjustment') or new.stripe_payment_id is not null
                               or new.package_id is not null;
begin
    if new.user_id = app_user_id() and not creates_credits then
        return new;
    end if;
    if creates_credits and not pg_has_role('automl_billing', 'usage') then
        raise insufficient_privilege using
            message = format('only billing creates credits (%s entry for user %s)', new.type, new.user_id),
            constraint = 'credit_transactions_acting_user';
    end if;
    if not exists (select from users u where u.id = new.user_id) then
        raise insufficient_privilege using
            message = format('this transaction may not post to the ledger of user %s', new.user_id),
            constraint = 'credit_transactions_acting_user';
    end if;
    return new;
end;
$$;
comment on function credit_transactions_check_acting_user() is
    'BEFORE INSERT on credit_transactions under row-level security, for an entry of another user than '
    'app_user_id() or one that creates credits: refused (42501, credit_transactions_acting_user) unless '
    'the caller may see that account and, for credits, is billing; before anything is locked.';

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

create or replace function users_refuse_delete_with_ledger() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    raise exception 'user % has ledger entries: close the account instead (purge keeps the ledger)', old.id
        using errcode = 'restrict_violation', constraint = 'users_ledger_keeps_account';
end;
$$;
comment on function users_refuse_delete_with_ledger() is
    'BEFORE DELETE on users with ledger entries: refused (SQLSTATE 23001, users_ledger_keeps_account).';

create trigger credit_transactions_acting_user before insert on credit_transactions
    for each row when (row_security_active('users')) execute function credit_transactions_check_acting_user();
create trigger users_ledger_keeps_account before delete on users
    for each row when (old.last_entry_number > 0) execute function users_refuse_delete_with_ledger();
-- The ledger's only guard against losing its owner (there is no foreign key): even in replica mode.
alter table users enable always trigger users_ledger_keeps_account;

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
    ), job_ledger as (  -- per job and owner: a purged account's ledger keeps ids a new job may reuse
        select c.job_id, c.user_id,
               -sum(c.amount) filter (where c.type = 'consumption') as consumed,
               sum(c.amount) filter (where c.type = 'refund') as refunded
          from credit_transactions c where c.job_id is not null group by c.job_id, c.user_id
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
                  jl.consumed, jl.refunded, j.user_id, jl.user_id)
      from job_ledger jl
      join users u on u.id = jl.user_id
      left join jobs j on j.id = jl.job_id
     where coalesce(jl.refunded, 0) > coalesce(jl.consumed, 0)
        or (u.purged_at is null and (j.id is null or j.user_id <> jl.user_id))
    union all
    -- Jobs are charged by the policy: credit_cost once when queued, refunded once if failed or cancelled.
    select 'jobs credits follow policy', j.id::text,
           format('status %s, credit_cost %s, charged %s, refunded %s', j.status, j.credit_cost,
                  coalesce(jl.consumed, 0), coalesce(jl.refunded, 0))
      from jobs j
      left join job_ledger jl on jl.job_id = j.id and jl.user_id = j.user_id
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
    select 'dataset_versions timestamps match status', v.id::text,
           format('status %s, processed_at %s', v.status, v.processed_at)
      from dataset_versions v
     where (v.status in ('completed', 'failed')) <> (v.processed_at is not null)
    union all
    select 'ingestion_jobs timestamps match status', i.id::text,
           format('status %s, started_at %s, completed_at %s', i.status, i.started_at, i.completed_at)
      from ingestion_jobs i
     where (i.status in ('completed', 'failed', 'cancelled')) <> (i.completed_at is not null)
        or (i.status in ('running', 'completed', 'failed') and i.started_at is null)
        or (i.status in ('pending', 'queued') and i.started_at is not null)
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
      from (select 'credit_transactions' as tbl, c.id, 'account missing' as detail
              from credit_transactions c left join users u on u.id = c.user_id
             where u.id is null
            union all
            select 'dataset_versions', v.id, 'dataset owner differs or dataset missing'
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
    'lifecycle stamps of jobs, nodes, versions and ingestion runs, counters, storage, version '
    'numbering, owner links); no rows when healthy. '
    'Recomputes from the base rows, so it notices drift written behind the triggers'' back.';

-- ==== Ownership and grants of what was created here ====
do $$
declare
    statement text;
begin
    for statement in
        select format('alter function %s owner to automl_owner', p.oid::regprocedure)
          from pg_proc p where p.pronamespace = 'public'::regnamespace and p.proowner <> 'automl_owner'::regrole
        union all
        select format('alter domain %s owner to automl_owner', t.oid::regtype)
          from pg_type t
         where t.typnamespace = 'public'::regnamespace and t.typtype = 'd' and t.typowner <> 'automl_owner'::regrole
    loop
        execute statement;
    end loop;
end;
$$;
revoke execute on all functions in schema public from public;
grant execute on function user_id_for_oauth(oauth_provider, text), user_id_for_email(text) to automl_app;
