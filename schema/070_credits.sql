-- 070_credits.sql — credit packages and the immutable credit ledger.
--
-- Owns: credit_packages (what can be bought), credit_package_on_sale() (the one statement of
-- which tier may buy which package), credit_transactions (the ledger) and the posting trigger
-- that moves users.credit_balance. Rules, all enforced here:
--   * a client inserts user_id, type, amount, description (+ job_id / package_id /
--     stripe_payment_id); the database fills id (when not given), entry_number and
--     balance_after from the locked user row, in constant time (pgledger style UPDATE ...
--     RETURNING);
--   * a client may post only for a user it may see: another tenant's account is refused before
--     anything of it is locked (constraint credit_transactions_acting_user);
--   * no entry may take a balance below zero: SQLSTATE AM001, constraint
--     credit_transactions_balance_nonnegative;
--   * sign rules per type; consumption and refund name a job of the same user; a job is
--     charged its credit_cost once, as it is queued (or while still pending, by its owner's
--     service), and refunded at most once, exactly what it consumed, once it failed or was
--     cancelled (constraint credit_transactions_job_policy);
--   * a purchase carries its payment reference, credited once; a package purchase credits
--     exactly the package, and only to a tier allowed to buy it;
--   * a balance moves only with its entry: duplicates are refused before the move, so an
--     INSERT ... ON CONFLICT cannot skip a row whose balance already moved;
--   * entries are never updated, deleted or truncated (SQLSTATE AM004).
-- job_id is deliberately not a foreign key: ledger entries outlive the jobs they explain
-- (purge removes a closed account's jobs, never its ledger). The posting trigger checks the
-- job at insert time and holds it (FOR SHARE) until the entry commits.

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

-- Which tier may buy which package: written once, used by the posting trigger and the queries.
create function credit_package_on_sale(p_restriction tier_restriction, p_is_active boolean, p_tier user_tier)
returns boolean
language sql immutable parallel safe
begin atomic
    select coalesce(p_is_active and case p_restriction
                                        when 'none' then true
                                        when 'pro_only' then p_tier = 'pro'
                                        when 'enterprise_only' then p_tier = 'enterprise'
                                    end, false);
end;
comment on function credit_package_on_sale(tier_restriction, boolean, user_tier) is
    'True when a package with this restriction and active flag may be bought by an account of p_tier: '
    'active, and none (anyone), pro_only (pro) or enterprise_only (enterprise).';

-- As for users: one-column rules of the ledger are domains, parsed once and checked as a value is
-- written, instead of table CHECKs read again for every entry. The rules that relate several
-- columns of an entry (credit_transactions_amount_sign, _job_required, _payment_only_purchases,
-- _purchase_payment) are checked by the posting trigger for the same reason: PostgreSQL parses every
-- CHECK of a table anew for each statement that writes it, which cost the ledger ~8% of its
-- throughput. They raise SQLSTATE 23514 with those constraint names, as CHECKs would.
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

-- user_id is deliberately not a foreign key either: the posting trigger finds and locks the account
-- for every entry anyway (a foreign key would look it up a second time), and
-- users_ledger_keeps_account refuses deleting an account that has entries.
create table credit_transactions (
    id                uuid primary key,
    user_id           uuid not null,
    entry_number      ledger_entry_number not null,
    type              transaction_type not null,
    amount            integer not null,
    balance_after     ledger_balance not null,
    description       ledger_description,
    job_id            uuid,
    package_id        uuid,
    stripe_payment_id payment_reference,
    created_at        timestamptz not null default now(),
    constraint credit_transactions_package_fkey foreign key (package_id) references credit_packages (id),
    -- also serves a user's history newest first (backward scan, keyset pages by entry_number)
    constraint credit_transactions_entry_key unique (user_id, entry_number),
    constraint credit_transactions_stripe_payment_key unique (stripe_payment_id)
);
comment on table credit_transactions is
    'Immutable credit ledger: every change of a balance is one entry. users.credit_balance equals the '
    'balance_after of the user''s last entry and the sum of its amounts.';
comment on column credit_transactions.id is
    'Primary key. No column default on purpose: the posting trigger draws one when the client gives none, '
    'and only a client-chosen id pays for the duplicate check.';
comment on column credit_transactions.user_id is
    'Account whose balance the entry moves (checked and locked by the posting trigger; not a foreign key).';
comment on column credit_transactions.entry_number is
    'Position in the user''s ledger: 1, 2, 3... without gaps (filled by the database).';
comment on column credit_transactions.type is 'purchase, consumption, refund or adjustment.';
comment on column credit_transactions.amount is
    'Signed change: purchase and refund > 0, consumption < 0, adjustment non-zero (credit_transactions_amount_sign).';
comment on column credit_transactions.balance_after is
    'Balance right after this entry (filled by the database; never negative).';
comment on column credit_transactions.description is 'Human-readable reason.';
comment on column credit_transactions.job_id is
    'Job charged or refunded (required for consumption and refund). Not a foreign key: the ledger outlives jobs.';
comment on column credit_transactions.package_id is 'Package bought, for purchases.';
comment on column credit_transactions.stripe_payment_id is
    'Stripe payment credited; required for purchases and unique, so a payment is credited once.';
comment on column credit_transactions.created_at is 'Entry time (stamped by the database).';

create unique index credit_transactions_job_consumption_key on credit_transactions (job_id)
    where type = 'consumption';
create unique index credit_transactions_job_refund_key on credit_transactions (job_id)
    where type = 'refund';
create index credit_transactions_package_idx on credit_transactions (package_id) where package_id is not null;
comment on index credit_transactions_job_consumption_key is 'A job is charged at most once.';
comment on index credit_transactions_job_refund_key is 'A job is refunded at most once.';
comment on index credit_transactions_package_idx is 'Foreign key index; sales per package.';

-- Runs first (triggers fire in name order) when the caller is under row-level security (the owner,
-- posting for the settlement, and superusers are not), and looks at entries for another user than
-- the transaction acts for or that create credits: not a definer, so it sees exactly the accounts
-- the caller may see. The policies say the same, but only after the BEFORE triggers have run; this
-- refuses before the posting locks anything (another tenant's balance, a payment id billing is
-- about to credit). automl_billing sees every account.
create function credit_transactions_check_acting_user() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create function credit_transactions_post() returns trigger
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
        -- The credit policy (see 050_jobs.sql): a job is charged its credit_cost as it is queued, or
        -- by its owner's service while it is still pending (then queueing charges nothing more), and
        -- refunded exactly what it consumed once it has failed or been cancelled. A wrong sign is
        -- left to credit_transactions_amount_sign, which names that problem better.
        if new.type = 'consumption' and new.amount < 0
           and not (job.status in ('pending', 'queued') and new.amount = -job.credit_cost) then
            raise check_violation using
                message = format('job %s (%s, cost %s) cannot be charged %s', job.id, job.status,
                                 job.credit_cost, -new.amount),
                constraint = 'credit_transactions_job_policy';
        end if;
        if new.type = 'consumption' and job.status = 'pending' then
            -- A charge while pending writes the job row: a transaction whose snapshot predates the
            -- charge then cannot cancel (unrefunded) or reprice the job; REPEATABLE READ and
            -- SERIALIZABLE fail with 40001, READ COMMITTED waits and re-reads.
            update jobs set updated_at = now() where id = job.id;
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

create function credit_transactions_refuse_change() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    raise exception 'credit_transactions is append-only: % refused', tg_op
        using errcode = 'AM004', constraint = 'credit_transactions_immutable',
              hint = 'Correct a balance with a new adjustment entry.';
end;
$$;
comment on function credit_transactions_refuse_change() is
    'Refuses UPDATE, DELETE and TRUNCATE of the ledger, for every role.';

create trigger credit_transactions_acting_user before insert on credit_transactions
    for each row when (row_security_active('users')) execute function credit_transactions_check_acting_user();
create trigger credit_transactions_post before insert on credit_transactions
    for each row execute function credit_transactions_post();
create trigger credit_transactions_immutable before update or delete on credit_transactions
    for each row execute function credit_transactions_refuse_change();
create trigger credit_transactions_no_truncate before truncate on credit_transactions
    for each statement execute function credit_transactions_refuse_change();
-- Even with session_replication_role = replica (bulk loads, logical replication), which silences
-- ordinary triggers; pg_restore --disable-triggers still turns them off for a data-only restore.
alter table credit_transactions enable always trigger credit_transactions_immutable;
alter table credit_transactions enable always trigger credit_transactions_no_truncate;

-- Financial records outlive accounts: an account with ledger entries is closed (soft delete) and
-- purged, never deleted. SQLSTATE 23001 (restrict_violation), as a RESTRICT foreign key would.
create function users_refuse_delete_with_ledger() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    raise exception 'user % has ledger entries: close the account instead (purge keeps the ledger)', old.id
        using errcode = 'restrict_violation', constraint = 'users_ledger_keeps_account';
end;
$$;
comment on function users_refuse_delete_with_ledger() is
    'BEFORE DELETE on users with ledger entries: refused (SQLSTATE 23001, users_ledger_keeps_account).';

create trigger users_ledger_keeps_account before delete on users
    for each row when (old.last_entry_number > 0) execute function users_refuse_delete_with_ledger();
-- The ledger's only guard against losing its owner (there is no foreign key): even in replica mode.
alter table users enable always trigger users_ledger_keeps_account;
