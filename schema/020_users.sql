-- 020_users.sql — accounts and the limits of their tiers.
--
-- Owns: tier_limits (reference data: what each tier may use), users (identity, OAuth, tier,
-- credit balance, counters, storage, soft delete) and their indexes and triggers.

create table tier_limits (
    tier                user_tier primary key,
    max_storage_bytes   bigint not null,
    max_datasets        integer,
    max_workflows       integer,
    max_models          integer,
    updated_at          timestamptz not null default now(),
    constraint tier_limits_storage_nonnegative check (max_storage_bytes >= 0),
    constraint tier_limits_counts_nonnegative check (
        coalesce(max_datasets, 0) >= 0 and coalesce(max_workflows, 0) >= 0
        and coalesce(max_models, 0) >= 0)
);
comment on table tier_limits is
    'What each tier may use. Limits live in data, not code, so billing can change them without a deploy.';
comment on column tier_limits.tier is 'The tier these limits apply to; one row per user_tier label.';
comment on column tier_limits.max_storage_bytes is
    'Ceiling on users.storage_used_bytes (sum of a user''s dataset version file sizes).';
comment on column tier_limits.max_datasets is 'Ceiling on users.dataset_count; NULL means unlimited.';
comment on column tier_limits.max_workflows is 'Ceiling on users.workflow_count (live workflows); NULL means unlimited.';
comment on column tier_limits.max_models is 'Ceiling on users.model_count; NULL means unlimited.';
comment on column tier_limits.updated_at is 'Last change of this row (set by trigger).';

create trigger tier_limits_set_updated_at before update on tier_limits
    for each row execute function set_updated_at();

-- This row is the ledger's hot row (one UPDATE per entry), and PostgreSQL parses and runs every
-- CHECK of a table again for each statement that updates it, whichever columns change. So its
-- rules are kept where they cost the ledger nothing: one-column rules are domains (checked when
-- that column is written), and the rules tying the identity and deletion columns together are a
-- trigger that fires only when one of those columns changes (users_rules). Either way the
-- error carries the rule's name as a CHECK would (SQLSTATE 23514).
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

create table users (
    id                 uuid primary key default gen_random_uuid(),
    email              email_address,
    full_name          person_name,
    oauth_provider     oauth_provider,
    oauth_id           oauth_subject,
    tier               user_tier not null default 'free',
    credit_balance     account_credits not null default 0,
    email_verified     boolean not null default false,
    is_deleted         boolean not null default false,
    deleted_at         timestamptz,
    purged_at          timestamptz,
    dataset_count      usage_count not null default 0,
    workflow_count     usage_count not null default 0,
    model_count        usage_count not null default 0,
    storage_used_bytes usage_bytes not null default 0,
    last_entry_number  entry_count not null default 0,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    constraint users_tier_fkey foreign key (tier) references tier_limits (tier)
);
comment on table users is
    'Accounts: identity (e-mail or OAuth), tier, credit balance, usage counters and soft delete. '
    'credit_balance, the counters and storage_used_bytes are maintained by triggers, not clients.';
comment on column users.id is 'Primary key.';
comment on column users.email is
    'Sign-in address, unique regardless of case (users_email_lower_key). NULL only once purged.';
comment on column users.full_name is 'Display name; optional, since an OAuth provider may not give one.';
comment on column users.oauth_provider is 'Provider of an OAuth sign-up; NULL for e-mail sign-up. Set together with oauth_id.';
comment on column users.oauth_id is 'The user''s id at oauth_provider; unique per provider.';
comment on column users.tier is 'Billing tier; selects the row of tier_limits that bounds this user.';
comment on column users.credit_balance is
    'Credits available now. Moves only with credit_transactions entries; never negative.';
comment on column users.email_verified is 'Whether the user proved ownership of the e-mail address.';
comment on column users.is_deleted is 'Soft delete flag: the account is closed but recoverable for the retention period.';
comment on column users.deleted_at is
    'When is_deleted last turned true (stamped by users_rules); purge counts retention from it.';
comment on column users.purged_at is
    'When purge_soft_deleted removed this user''s content and personal data. The row stays so the ledger keeps its owner.';
comment on column users.dataset_count is 'Number of datasets the user owns (trigger-maintained).';
comment on column users.workflow_count is 'Number of live (not soft-deleted) workflows the user owns (trigger-maintained).';
comment on column users.model_count is 'Number of trained models the user owns (trigger-maintained).';
comment on column users.storage_used_bytes is
    'Sum of original_size_bytes + parquet_size_bytes over the user''s dataset versions (trigger-maintained).';
comment on column users.last_entry_number is
    'entry_number of the user''s latest ledger entry: the per-user ledger sequence (trigger-maintained).';
comment on column users.created_at is 'Account creation time.';
comment on column users.updated_at is 'Last change of this row (set by trigger).';

create unique index users_email_lower_key on users (lower(email));
create unique index users_oauth_key on users (oauth_provider, oauth_id);
create index users_tier_idx on users (tier);
create index users_deleted_at_idx on users (deleted_at) where is_deleted;
comment on index users_email_lower_key is 'One account per e-mail address, compared case-insensitively.';
comment on index users_oauth_key is 'One account per OAuth identity.';
comment on index users_tier_idx is 'Foreign key to tier_limits; also serves per-tier reporting.';
comment on index users_deleted_at_idx is 'Finds soft-deleted accounts past retention for purge.';

-- The rules of an account's identity and deletion (see the note above the domains), and the soft
-- delete stamp: only when one of those columns is written.
create function users_check_account_state() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create trigger users_rules
    before insert or update of email, oauth_provider, oauth_id, is_deleted, deleted_at, purged_at on users
    for each row execute function users_check_account_state();

-- credit_balance, last_entry_number, the counters and storage_used_bytes are derived: only the
-- database's own triggers may move them.
create function users_refuse_derived_change() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create trigger users_derived_columns_insert before insert on users
    for each row when (new.credit_balance <> 0 or new.last_entry_number <> 0 or new.dataset_count <> 0
                       or new.workflow_count <> 0 or new.model_count <> 0 or new.storage_used_bytes <> 0)
    execute function users_refuse_derived_change();
-- What a client (not a trigger) changes on a users row, in one trigger: a purged account is final
-- (its personal data must not come back), the derived columns are the database's, and updated_at is
-- stamped. Updates made by the ledger and the counters (trigger depth 1) check and stamp
-- themselves, so the WHEN keeps this, and its evaluation, off their path.
create function users_guard() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create trigger users_guard before update on users
    for each row when (pg_trigger_depth() = 0) execute function users_guard();

-- The single place usage moves and quotas are enforced. The UPDATE locks the user row, so
-- concurrent writers for one user queue here and a limit cannot be slipped past by racing.
create function users_adjust_usage(
    target uuid, datasets integer default 0, workflows integer default 0,
    models integer default 0, storage_bytes bigint default 0
) returns void
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
        if u.is_deleted then
            raise exception 'account % is closed: it cannot take on new content', target
                using errcode = 'AM004', constraint = 'users_account_closed';
        end if;
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
    'Moves a user''s counters and storage by the given deltas and, when any grows, refuses a closed account '
    '(AM004, users_account_closed) and going past the tier''s limits (SQLSTATE AM002, constraint '
    'users_<what>_within_tier). Called by counter triggers.';

-- Rows never change owner: counters, quotas and the composite keys all assume it.
create function refuse_owner_change() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    raise exception '%.user_id cannot change (row %)', tg_table_name, old.id
        using errcode = 'AM004', constraint = tg_table_name || '_owner_immutable';
end;
$$;
comment on function refuse_owner_change() is
    'BEFORE UPDATE OF user_id trigger on owned tables: rows are never moved to another user.';

-- Sign-in looks across users (row-level security hides other accounts from automl_app), so it
-- is a definer; it reveals one id and changes nothing. Sign-up needs no definer: the application
-- acts for the new account's id and inserts it under the tenant policy.
create function user_id_for_oauth(p_provider oauth_provider, p_provider_id text) returns uuid
language sql stable
security definer set search_path = pg_catalog, automl, pg_temp
begin atomic
    select id from users where oauth_provider = p_provider and oauth_id = p_provider_id;
end;
comment on function user_id_for_oauth(oauth_provider, text) is
    'OAuth sign-in: the id of the account this provider identity belongs to, or NULL. Reveals nothing '
    'else and changes nothing; the application then acts for that id (or signs up a new one).';

create function user_id_for_email(p_email text) returns uuid
language sql stable
security definer set search_path = pg_catalog, automl, pg_temp
begin atomic
    select id from users where lower(email) = lower(p_email);
end;
comment on function user_id_for_email(text) is
    'E-mail sign-in: the id of the account with this e-mail (any case), or NULL; the application then '
    'acts for it.';

-- The first step of the lock order (users row, then parent, then child): a statement acting
-- for a user on a table whose rules move that user's counters or balance takes the users row
-- before PostgreSQL locks the rows it changes. Without it, "post to the ledger, then cancel a
-- job" in one transaction and "fail that job" in another lock the same two rows in opposite
-- orders and deadlock. The triggers' WHEN reads the setting itself, not app_user_id(): a WHEN
-- clause is not planned, so a SQL function there is not inlined and its body is planned anew on
-- every statement (~15% of a queue's claim + completion).
create function lock_acting_user() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    perform from users where id = app_user_id() for no key update;
    return null;
end;
$$;
comment on function lock_acting_user() is
    'BEFORE statement trigger on tables whose rules lock the owner''s users row (jobs, datasets, '
    'dataset_versions, workflows, models): takes that row first, so every path locks user, then parent, '
    'then child.';
