-- 070_credits.sql — credit packages and the immutable credit ledger.
--
-- Owns: credit_packages (what can be bought), credit_transactions (the ledger) and the
-- posting trigger that moves users.credit_balance. Rules, all enforced here:
--   * a client inserts user_id, type, amount, description (+ job_id / package_id /
--     stripe_payment_id); the database fills entry_number and balance_after from the
--     locked user row, in constant time (pgledger style UPDATE ... RETURNING);
--   * no entry may take a balance below zero: SQLSTATE AM001, constraint
--     credit_transactions_balance_nonnegative;
--   * sign rules per type; consumption and refund name a job of the same user; a job is
--     charged its credit_cost once, as it is queued, and refunded at most once, exactly what
--     it consumed, once it failed or was cancelled (constraint credit_transactions_job_policy);
--   * a stripe payment is credited once; a package purchase credits exactly the package, and
--     only to a tier allowed to buy it;
--   * entries are never updated, deleted or truncated (SQLSTATE AM004).
-- job_id is deliberately not a foreign key: ledger entries outlive the jobs they explain
-- (purge removes a closed account's jobs, never its ledger). The posting trigger checks the
-- job at insert time, under the same lock a foreign key would take.

create table credit_packages (
    id               uuid primary key default gen_random_uuid(),
    name             text not null,
    credits          integer not null,
    price_cents      integer not null,
    stripe_price_id  text,
    is_active        boolean not null default true,
    tier_restriction tier_restriction not null default 'none',
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint credit_packages_name_key unique (name),
    constraint credit_packages_stripe_price_key unique (stripe_price_id),
    constraint credit_packages_name_length check (length(btrim(name)) between 1 and 100),
    constraint credit_packages_credits_positive check (credits > 0),
    constraint credit_packages_price_nonnegative check (price_cents >= 0),
    constraint credit_packages_stripe_price_id_length check (length(stripe_price_id) between 1 and 255)
);
comment on table credit_packages is 'Credit bundles offered for purchase (reference data).';
comment on column credit_packages.id is 'Primary key.';
comment on column credit_packages.name is 'Display name, unique.';
comment on column credit_packages.credits is 'Credits granted by one purchase.';
comment on column credit_packages.price_cents is 'Price in cents.';
comment on column credit_packages.stripe_price_id is 'Stripe price this package is sold under.';
comment on column credit_packages.is_active is 'Whether it is offered now; retired packages stay for the ledger''s sake.';
comment on column credit_packages.tier_restriction is 'Which tiers may buy it.';
comment on column credit_packages.created_at is 'Creation time.';
comment on column credit_packages.updated_at is 'Last change of this row (set by trigger).';

create trigger credit_packages_set_updated_at before update on credit_packages
    for each row execute function set_updated_at();

create table credit_transactions (
    id                uuid primary key default gen_random_uuid(),
    user_id           uuid not null,
    entry_number      bigint not null,
    type              transaction_type not null,
    amount            integer not null,
    balance_after     integer not null,
    description       text,
    job_id            uuid,
    package_id        uuid,
    stripe_payment_id text,
    created_at        timestamptz not null default now(),
    -- restrict: an account with ledger entries is never hard-deleted, only purged
    constraint credit_transactions_user_fkey foreign key (user_id) references users (id) on delete restrict,
    constraint credit_transactions_package_fkey foreign key (package_id) references credit_packages (id),
    -- also serves a user's history newest first (backward scan, keyset pages by entry_number)
    constraint credit_transactions_entry_key unique (user_id, entry_number),
    constraint credit_transactions_stripe_payment_key unique (stripe_payment_id),
    constraint credit_transactions_entry_number_positive check (entry_number >= 1),
    constraint credit_transactions_balance_nonnegative check (balance_after >= 0),
    constraint credit_transactions_amount_sign check (
        case type
            when 'purchase' then amount > 0
            when 'refund' then amount > 0
            when 'consumption' then amount < 0
            else amount <> 0
        end),
    constraint credit_transactions_job_required check (type not in ('consumption', 'refund') or job_id is not null),
    constraint credit_transactions_description_length check (length(description) <= 1000),
    constraint credit_transactions_stripe_payment_id_length check (length(stripe_payment_id) between 1 and 255)
);
comment on table credit_transactions is
    'Immutable credit ledger: every change of a balance is one entry. users.credit_balance equals the '
    'balance_after of the user''s last entry and the sum of its amounts.';
comment on column credit_transactions.id is 'Primary key.';
comment on column credit_transactions.user_id is 'Account whose balance the entry moves.';
comment on column credit_transactions.entry_number is
    'Position in the user''s ledger: 1, 2, 3... without gaps (filled by the database).';
comment on column credit_transactions.type is 'purchase, consumption, refund or adjustment.';
comment on column credit_transactions.amount is
    'Signed change: purchase and refund > 0, consumption < 0, adjustment non-zero.';
comment on column credit_transactions.balance_after is
    'Balance right after this entry (filled by the database; never negative).';
comment on column credit_transactions.description is 'Human-readable reason.';
comment on column credit_transactions.job_id is
    'Job charged or refunded (required for consumption and refund). Not a foreign key: the ledger outlives jobs.';
comment on column credit_transactions.package_id is 'Package bought, for purchases.';
comment on column credit_transactions.stripe_payment_id is 'Stripe payment credited; unique, so a payment is credited once.';
comment on column credit_transactions.created_at is 'Entry time.';

create unique index credit_transactions_job_consumption_key on credit_transactions (job_id)
    where type = 'consumption';
create unique index credit_transactions_job_refund_key on credit_transactions (job_id)
    where type = 'refund';
create index credit_transactions_package_idx on credit_transactions (package_id) where package_id is not null;
comment on index credit_transactions_job_consumption_key is 'A job is charged at most once.';
comment on index credit_transactions_job_refund_key is 'A job is refunded at most once.';
comment on index credit_transactions_package_idx is 'Foreign key index; sales per package.';

create function credit_transactions_post() returns trigger
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

create function credit_transactions_refuse_change() returns trigger
language plpgsql as $$
begin
    raise exception 'credit_transactions is append-only: % refused', tg_op
        using errcode = 'AM004', constraint = 'credit_transactions_immutable',
              hint = 'Correct a balance with a new adjustment entry.';
end;
$$;
comment on function credit_transactions_refuse_change() is
    'Refuses UPDATE, DELETE and TRUNCATE of the ledger, for every role.';

create trigger credit_transactions_post before insert on credit_transactions
    for each row execute function credit_transactions_post();
create trigger credit_transactions_immutable before update or delete on credit_transactions
    for each row execute function credit_transactions_refuse_change();
create trigger credit_transactions_no_truncate before truncate on credit_transactions
    for each statement execute function credit_transactions_refuse_change();

-- Financial records outlive accounts: an account with ledger entries is closed (soft delete) and
-- purged, never deleted. The foreign key's RESTRICT would refuse too, but PostgreSQL 15/16 report
-- that as 23503 and 17+ as 23001; this rule answers the same on every version.
create function users_refuse_delete_with_ledger() returns trigger
language plpgsql as $$
begin
    raise exception 'user % has ledger entries: close the account instead (purge keeps the ledger)', old.id
        using errcode = 'restrict_violation', constraint = 'users_ledger_keeps_account';
end;
$$;
comment on function users_refuse_delete_with_ledger() is
    'BEFORE DELETE on users with ledger entries: refused (SQLSTATE 23001, users_ledger_keeps_account).';

create trigger users_ledger_keeps_account before delete on users
    for each row when (old.last_entry_number > 0) execute function users_refuse_delete_with_ledger();
