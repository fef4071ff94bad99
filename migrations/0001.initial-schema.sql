-- 0001 initial schema: every object of schema/ (roles, tables, functions, triggers, security) as first released.
-- Frozen once landed: later changes come as new migrations.
-- Every table is created here, empty, so the rules about live tables do not apply:
-- squawk-ignore-file require-concurrent-index-creation, constraint-missing-not-valid, adding-foreign-key-constraint
set local lock_timeout = '5s';
set local statement_timeout = '5min';

-- ==== schema/000_common.sql ====
-- 000_common.sql — helpers shared by every domain file.
--
-- Owns: set_updated_at() (the timestamp trigger every table with updated_at uses),
-- and the JSON shape predicates that CHECK constraints call. All of them are core
-- PostgreSQL (no extensions), immutable where a CHECK needs them to be.

-- Stamps updated_at on every UPDATE, whatever the client wrote: the database owns the clock.
create function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;
comment on function set_updated_at() is
    'BEFORE UPDATE trigger: sets updated_at to now() so no client can forge or forget it.';

-- A CHECK on a missing key evaluates to NULL and passes; these predicates return false instead.
create function jsonb_is_object(doc jsonb) returns boolean
language sql immutable parallel safe as $$
    select coalesce(jsonb_typeof(doc) = 'object', false)
$$;
comment on function jsonb_is_object(jsonb) is
    'True when doc is a JSON object; false (never NULL) for anything else, so CHECKs cannot pass by NULL.';

create function jsonb_is_number_map(doc jsonb) returns boolean
language sql immutable parallel safe as $$
    select jsonb_is_object(doc)
       and not exists (select from jsonb_each(doc) as e(key, value)
                       where jsonb_typeof(e.value) <> 'number')
$$;
comment on function jsonb_is_number_map(jsonb) is
    'True when doc is an object whose values are all numbers (metric summaries: {"accuracy": 0.93}).';

-- A workflow graph: {"nodes": [{"id": "..."}...], "edges": [{"source": "...", "target": "..."}...]}
-- with unique node ids and edges between existing nodes.
create function workflow_graph_is_valid(doc jsonb) returns boolean
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

-- Soft delete: is_deleted is what clients set; deleted_at is the database's record of when.
create function stamp_deleted_at() returns trigger
language plpgsql as $$
begin
    if new.is_deleted then
        if tg_op = 'INSERT' or not old.is_deleted then
            new.deleted_at := now();
        else
            new.deleted_at := old.deleted_at;
        end if;
    else
        new.deleted_at := null;
    end if;
    return new;
end;
$$;
comment on function stamp_deleted_at() is
    'BEFORE INSERT/UPDATE trigger for soft-deletable tables: stamps deleted_at when is_deleted turns '
    'true, keeps it while it stays true, clears it on restore. Client-written values are ignored.';

-- ==== schema/005_roles.sql ====
-- 005_roles.sql — the roles this schema grants to, and the tenant context helper.
--
-- Owns: the four roles (cluster-wide, so created only when missing and never dropped by a
-- rollback: other databases of the cluster may use them) and app_user_id(), the one place the
-- per-transaction tenant setting is read. Grants and row-level security are in 110_security.sql.
--   automl_owner     NOLOGIN, BYPASSRLS: owns every object; migrations and SECURITY DEFINER
--                    functions act as it.
--   automl_app       the runtime role: DML on tenant tables through row-level security, SELECT on
--                    reference data; owns nothing. A deployment gives it (or a member) LOGIN.
--   automl_worker    member of automl_app; may also claim jobs, beat heartbeats, rescue and purge.
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
    if not exists (select from pg_roles where rolname = 'automl_readonly') then
        create role automl_readonly nologin;
    end if;
end;
$$;
grant automl_app to automl_worker;

-- The tenant of the current transaction: set by the application with
-- set_config('automl.user_id', <uuid>, true); '' after a transaction ends, NULL if never set.
create function app_user_id() returns uuid
language sql stable parallel safe as $$
    select nullif(current_setting('automl.user_id', true), '')::uuid
$$;
comment on function app_user_id() is
    'The user the current transaction acts for (setting automl.user_id), or NULL. Row-level security '
    'policies call it as (select app_user_id()) so it is evaluated once per statement.';

-- ==== schema/010_enums.sql ====
-- 010_enums.sql — the enumerated types shared across domains.
--
-- Owns every PostgreSQL enum. Labels are the seed's, in the seed's order; new labels are
-- added by migration with ALTER TYPE ... ADD VALUE (never removed: rows may hold them).

create type user_tier as enum ('free', 'pro', 'enterprise');
comment on type user_tier is 'Billing tier of a user; its limits live in tier_limits.';

create type oauth_provider as enum ('google', 'github');
comment on type oauth_provider is 'Identity provider of an OAuth sign-up (NULL on users means e-mail sign-up).';

create type file_format as enum ('csv', 'json', 'parquet', 'excel', 'unknown');
comment on type file_format is 'Format of an uploaded dataset file, as detected at ingestion.';

create type problem_type as enum ('classification', 'regression', 'clustering', 'other');
comment on type problem_type is 'Kind of ML task a dataset, model or experiment is about.';

create type job_status as enum ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled');
comment on type job_status is
    'Lifecycle of a job or ingestion job: pending -> queued -> running -> completed | failed; '
    'cancelled from pending, queued or running. completed, failed and cancelled are terminal.';

create type node_status as enum ('pending', 'running', 'success', 'failed', 'skipped');
comment on type node_status is
    'Lifecycle of one workflow node inside a job: pending -> running -> success | failed; '
    'skipped when an upstream node failed.';

create type node_type as enum (
    'dataset', 'preprocess', 'feature_engineering', 'split', 'model', 'evaluate', 'predict', 'export'
);
comment on type node_type is 'Kinds of node a workflow graph is built from.';

create type transaction_type as enum ('purchase', 'consumption', 'refund', 'adjustment');
comment on type transaction_type is
    'Kind of credit ledger entry: purchase (+, bought), consumption (-, a job), refund (+, a job), '
    'adjustment (either sign, by an admin).';

create type tier_restriction as enum ('none', 'pro_only', 'enterprise_only');
comment on type tier_restriction is 'Which tiers may buy a credit package.';

create type metric_goal as enum ('maximize', 'minimize');
comment on type metric_goal is 'Whether a larger or a smaller value of an experiment''s primary metric is better.';

-- ==== schema/020_users.sql ====
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

-- Reference rows every database needs: users.tier references them.
insert into tier_limits (tier, max_storage_bytes, max_datasets, max_workflows, max_models)
values ('free',       1073741824,    10,   10,   20),    -- 1 GiB
       ('pro',        53687091200,   200,  200,  1000),  -- 50 GiB
       ('enterprise', 1099511627776, null, null, null);  -- 1 TiB

create table users (
    id                 uuid primary key default gen_random_uuid(),
    email              text,
    full_name          text,
    oauth_provider     oauth_provider,
    oauth_id           text,
    tier               user_tier not null default 'free',
    credit_balance     integer not null default 0,
    email_verified     boolean not null default false,
    is_deleted         boolean not null default false,
    deleted_at         timestamptz,
    purged_at          timestamptz,
    dataset_count      integer not null default 0,
    workflow_count     integer not null default 0,
    model_count        integer not null default 0,
    storage_used_bytes bigint not null default 0,
    last_entry_number  bigint not null default 0,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    constraint users_tier_fkey foreign key (tier) references tier_limits (tier),
    constraint users_email_required check (email is not null or purged_at is not null),
    constraint users_email_format check (
        length(email) <= 254 and email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:].]+$'),
    constraint users_full_name_length check (length(btrim(full_name)) between 1 and 200),
    constraint users_oauth_pair check ((oauth_provider is null) = (oauth_id is null)),
    constraint users_oauth_id_length check (length(oauth_id) between 1 and 255),
    constraint users_credit_balance_nonnegative check (credit_balance >= 0),
    constraint users_counters_nonnegative check (
        dataset_count >= 0 and workflow_count >= 0 and model_count >= 0),
    constraint users_storage_nonnegative check (storage_used_bytes >= 0),
    constraint users_last_entry_number_nonnegative check (last_entry_number >= 0),
    constraint users_deleted_at_matches check (is_deleted = (deleted_at is not null)),
    constraint users_purged_is_deleted check (purged_at is null or is_deleted)
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
comment on column users.deleted_at is 'When is_deleted last turned true (stamped by trigger); purge counts retention from it.';
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

-- Trigger-made updates (ledger postings, counters) stamp updated_at themselves; skipping this
-- function for them keeps the ledger's hot path to one PL/pgSQL call.
create trigger users_set_updated_at before update on users
    for each row when (pg_trigger_depth() = 0) execute function set_updated_at();
create trigger users_stamp_deleted_at before insert or update of is_deleted, deleted_at on users
    for each row execute function stamp_deleted_at();

-- credit_balance, last_entry_number, the counters and storage_used_bytes are derived: only the
-- database's own triggers may move them. pg_trigger_depth() = 0 in the WHEN clause means the
-- UPDATE came straight from a client, not from a trigger, so the ledger path pays nothing.
create function users_refuse_derived_change() returns trigger
language plpgsql as $$
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
    'Refuses a client INSERT or UPDATE that sets users.credit_balance, last_entry_number, the counters '
    'or storage_used_bytes (SQLSTATE AM005, constraint users_derived_columns).';

create trigger users_derived_columns_insert before insert on users
    for each row when (new.credit_balance <> 0 or new.last_entry_number <> 0 or new.dataset_count <> 0
                       or new.workflow_count <> 0 or new.model_count <> 0 or new.storage_used_bytes <> 0)
    execute function users_refuse_derived_change();
create trigger users_derived_columns_update before update on users
    for each row when (pg_trigger_depth() = 0 and (
        new.credit_balance <> old.credit_balance or new.last_entry_number <> old.last_entry_number
        or new.dataset_count <> old.dataset_count or new.workflow_count <> old.workflow_count
        or new.model_count <> old.model_count or new.storage_used_bytes <> old.storage_used_bytes))
    execute function users_refuse_derived_change();

-- The single place usage moves and quotas are enforced. The UPDATE locks the user row, so
-- concurrent writers for one user queue here and a limit cannot be slipped past by racing.
create function users_adjust_usage(
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

-- Rows never change owner: counters, quotas and the composite keys all assume it.
create function refuse_owner_change() returns trigger
language plpgsql as $$
begin
    raise exception '%.user_id cannot change (row %)', tg_table_name, old.id
        using errcode = 'AM004', constraint = tg_table_name || '_owner_immutable';
end;
$$;
comment on function refuse_owner_change() is
    'BEFORE UPDATE OF user_id trigger on owned tables: rows are never moved to another user.';

-- Account entry points that must look across users (row-level security hides other accounts
-- from automl_app): owned by automl_owner, granted to automl_app in 110_security.sql.
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

create function user_id_for_email(p_email text) returns uuid
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

-- ==== schema/030_datasets.sql ====
-- 030_datasets.sql — datasets, their versions, profiles and ingestion jobs.
--
-- Owns: datasets (the container), dataset_versions (one uploaded file each, numbered per
-- dataset by the database), dataset_profiles (ydata-profiling style statistics of a version),
-- ingestion_jobs (the processing run of an upload). Children carry user_id, filled from their
-- parent and tied to it by composite foreign keys, so no row can point across owners.
-- Deleting a dataset cascades to all of them.

create table datasets (
    id                  uuid primary key default gen_random_uuid(),
    user_id             uuid not null references users (id) on delete cascade,
    name                text not null,
    description         text,
    problem_type        problem_type,
    target_column       text,
    current_version_id  uuid,
    last_version_number integer not null default 0,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint datasets_id_user_key unique (id, user_id),
    constraint datasets_name_length check (length(btrim(name)) between 1 and 200),
    constraint datasets_description_length check (length(description) <= 5000),
    constraint datasets_target_column_length check (length(target_column) between 1 and 255),
    constraint datasets_last_version_number_nonnegative check (last_version_number >= 0)
);
comment on table datasets is 'An uploaded dataset: the named container whose files are its dataset_versions.';
comment on column datasets.id is 'Primary key.';
comment on column datasets.user_id is 'Owner.';
comment on column datasets.name is 'Display name (1-200 characters, not blank).';
comment on column datasets.description is 'Optional free text (at most 5000 characters).';
comment on column datasets.problem_type is 'ML task the user means to solve with it; NULL until chosen.';
comment on column datasets.target_column is 'Column to predict; NULL for unsupervised tasks or until chosen.';
comment on column datasets.current_version_id is
    'The version in use; must be a version of this dataset (datasets_current_version_fkey). NULL when none.';
comment on column datasets.last_version_number is
    'Highest version_number handed out so far: the per-dataset sequence. Numbers are never reused.';
comment on column datasets.created_at is 'Creation time.';
comment on column datasets.updated_at is 'Last change of this row (set by trigger).';

create index datasets_user_created_idx on datasets (user_id, created_at desc, id desc);
comment on index datasets_user_created_idx is 'A user''s datasets newest first; also the user_id foreign key index.';

create trigger datasets_set_updated_at before update on datasets
    for each row execute function set_updated_at();

create table dataset_versions (
    id                  uuid primary key default gen_random_uuid(),
    dataset_id          uuid not null,
    user_id             uuid not null,
    upload_id           uuid not null default gen_random_uuid(),
    version_number      integer not null,
    version_label       text,
    original_filename   text,
    original_format     file_format not null default 'unknown',
    original_size_bytes bigint not null default 0,
    s3_path             text,
    parquet_size_bytes  bigint,
    row_count           integer,
    column_count        integer,
    columns_metadata    jsonb,
    status              text not null default 'pending',
    content_sha256      text,
    error_message       text,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint dataset_versions_dataset_fkey foreign key (dataset_id, user_id)
        references datasets (id, user_id) on delete cascade,
    constraint dataset_versions_id_dataset_key unique (id, dataset_id),
    constraint dataset_versions_id_user_key unique (id, user_id),
    constraint dataset_versions_number_key unique (dataset_id, version_number),
    constraint dataset_versions_upload_key unique (upload_id),
    constraint dataset_versions_version_number_positive check (version_number >= 1),
    constraint dataset_versions_label_length check (length(btrim(version_label)) between 1 and 100),
    constraint dataset_versions_filename_length check (length(btrim(original_filename)) between 1 and 255),
    constraint dataset_versions_sizes_nonnegative check (
        original_size_bytes >= 0 and coalesce(parquet_size_bytes, 0) >= 0),
    constraint dataset_versions_counts_nonnegative check (
        coalesce(row_count, 0) >= 0 and coalesce(column_count, 0) >= 0),
    constraint dataset_versions_columns_metadata_shape check (
        columns_metadata is null or jsonb_typeof(columns_metadata) in ('object', 'array')),
    constraint dataset_versions_status_valid check (status in ('pending', 'processing', 'completed', 'failed')),
    constraint dataset_versions_completed_has_output check (
        status <> 'completed' or (s3_path is not null and parquet_size_bytes is not null
                                  and row_count is not null and column_count is not null)),
    constraint dataset_versions_sha256_format check (content_sha256 ~ '^[0-9a-f]{64}$')
);
comment on table dataset_versions is
    'One uploaded file of a dataset and its processed Parquet copy. version_number is assigned by the '
    'database per dataset (1, 2, 3...) and never changes.';
comment on column dataset_versions.id is 'Primary key.';
comment on column dataset_versions.dataset_id is 'Parent dataset.';
comment on column dataset_versions.user_id is
    'Owner, copied from the dataset on insert; the composite key to datasets keeps the two equal.';
comment on column dataset_versions.upload_id is
    'Upload tracking id; unique, so a retried upload with the same id cannot create a second version.';
comment on column dataset_versions.version_number is 'Sequential number within the dataset, assigned by trigger.';
comment on column dataset_versions.version_label is 'Optional label, e.g. "cleaned".';
comment on column dataset_versions.original_filename is 'File name as uploaded.';
comment on column dataset_versions.original_format is 'Detected format of the uploaded file.';
comment on column dataset_versions.original_size_bytes is 'Size of the uploaded file; counts toward storage.';
comment on column dataset_versions.s3_path is 'Object-store path of the processed Parquet file; set when processing completes.';
comment on column dataset_versions.parquet_size_bytes is 'Size of the Parquet file; counts toward storage.';
comment on column dataset_versions.row_count is 'Number of data rows.';
comment on column dataset_versions.column_count is 'Number of columns.';
comment on column dataset_versions.columns_metadata is 'Column names, types and basic stats (JSON object or array).';
comment on column dataset_versions.status is 'Processing state: pending, processing, completed or failed.';
comment on column dataset_versions.content_sha256 is
    'Hex SHA-256 of the uploaded bytes, so clients can skip a new version when the content is unchanged (as DVC and W&B do).';
comment on column dataset_versions.error_message is 'Why processing failed, when status is failed.';
comment on column dataset_versions.created_at is 'Upload time.';
comment on column dataset_versions.updated_at is 'Last change of this row (set by trigger).';

create index dataset_versions_dataset_idx on dataset_versions (dataset_id, version_number desc);
create index dataset_versions_user_idx on dataset_versions (user_id);
comment on index dataset_versions_dataset_idx is 'A dataset''s versions newest first; also the dataset foreign key index.';
comment on index dataset_versions_user_idx is 'Per-user storage accounting and the user_id half of the foreign key.';

alter table datasets
    add constraint datasets_current_version_fkey foreign key (current_version_id, id)
        references dataset_versions (id, dataset_id) on delete set null (current_version_id);
create index datasets_current_version_idx on datasets (current_version_id);
comment on index datasets_current_version_idx is 'Foreign key index: deleting a version finds the dataset pointing at it.';

-- Numbers the version from the dataset row itself: the UPDATE locks that row, so concurrent
-- uploads to one dataset queue up and each gets the next number, in constant time.
create function dataset_versions_assign_number() returns trigger
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

create function dataset_versions_freeze_identity() returns trigger
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

create trigger dataset_versions_assign_number before insert on dataset_versions
    for each row execute function dataset_versions_assign_number();
create trigger dataset_versions_freeze_identity before update on dataset_versions
    for each row execute function dataset_versions_freeze_identity();
create trigger dataset_versions_set_updated_at before update on dataset_versions
    for each row execute function set_updated_at();

create table dataset_profiles (
    id                 uuid primary key default gen_random_uuid(),
    dataset_version_id uuid not null,
    user_id            uuid not null,
    row_count          bigint,
    column_count       integer,
    missing_cells      bigint,
    duplicate_rows     bigint,
    memory_bytes       bigint,
    columns            jsonb not null default '{}',
    correlations       jsonb,
    alerts             jsonb not null default '[]',
    profiler           text not null default 'ydata-profiling',
    profiler_version   text,
    duration_ms        integer,
    created_at         timestamptz not null default now(),
    constraint dataset_profiles_version_fkey foreign key (dataset_version_id, user_id)
        references dataset_versions (id, user_id) on delete cascade,
    constraint dataset_profiles_version_key unique (dataset_version_id),
    constraint dataset_profiles_counts_nonnegative check (
        coalesce(row_count, 0) >= 0 and coalesce(column_count, 0) >= 0 and coalesce(missing_cells, 0) >= 0
        and coalesce(duplicate_rows, 0) >= 0 and coalesce(memory_bytes, 0) >= 0 and coalesce(duration_ms, 0) >= 0),
    constraint dataset_profiles_columns_shape check (jsonb_is_object(columns)),
    constraint dataset_profiles_correlations_shape check (correlations is null or jsonb_is_object(correlations)),
    constraint dataset_profiles_alerts_shape check (coalesce(jsonb_typeof(alerts) = 'array', false)),
    constraint dataset_profiles_profiler_length check (length(btrim(profiler)) between 1 and 100)
);
comment on table dataset_profiles is
    'Statistical profile of one dataset version, in the shape ydata-profiling reports: table-level '
    'counts, per-column statistics, correlations and data-quality alerts. At most one per version.';
comment on column dataset_profiles.id is 'Primary key.';
comment on column dataset_profiles.dataset_version_id is 'The version profiled (one profile per version).';
comment on column dataset_profiles.user_id is 'Owner, copied from the version on insert; tied to it by the composite key.';
comment on column dataset_profiles.row_count is 'Rows seen by the profiler (may differ from the version if sampled).';
comment on column dataset_profiles.column_count is 'Columns profiled.';
comment on column dataset_profiles.missing_cells is 'Cells holding no value, over the whole table: the first data-quality figure a user reads.';
comment on column dataset_profiles.duplicate_rows is 'Rows that repeat another row exactly.';
comment on column dataset_profiles.memory_bytes is 'In-memory size of the table when profiled, to size training workers.';
comment on column dataset_profiles.columns is
    'Per-column statistics keyed by column name: type, missing, distinct, min/max/mean/std, quantiles, '
    'histogram, top values.';
comment on column dataset_profiles.correlations is 'Pairwise correlation matrices keyed by method (pearson, spearman...), when computed.';
comment on column dataset_profiles.alerts is
    'Data-quality alerts as an array of {column, kind, detail}: constant, high cardinality, skewed, missing, ...';
comment on column dataset_profiles.profiler is 'Tool that produced the profile.';
comment on column dataset_profiles.profiler_version is 'Its version, since statistics change between versions.';
comment on column dataset_profiles.duration_ms is 'How long profiling took, to spot datasets that need sampling.';
comment on column dataset_profiles.created_at is 'When the profile was stored.';

create index dataset_profiles_user_idx on dataset_profiles (user_id);
comment on index dataset_profiles_user_idx is 'Owner filter; the version key already indexes dataset_version_id.';

create function fill_owner_from_dataset_version() returns trigger
language plpgsql as $$
begin
    if new.user_id is null then
        select v.user_id into new.user_id from dataset_versions v where v.id = new.dataset_version_id;
    end if;
    return new;
end;
$$;
comment on function fill_owner_from_dataset_version() is
    'BEFORE INSERT on dataset_profiles and ingestion_jobs: copies the owner from the dataset version '
    'when the client left it out.';

create trigger dataset_profiles_fill_owner before insert on dataset_profiles
    for each row execute function fill_owner_from_dataset_version();

create table ingestion_jobs (
    id                 uuid primary key default gen_random_uuid(),
    dataset_version_id uuid not null,
    user_id            uuid not null,
    status             job_status not null default 'pending',
    stage              text,
    progress_percent   smallint not null default 0,
    rows_processed     bigint not null default 0,
    bytes_processed    bigint not null default 0,
    attempt            integer not null default 0,
    max_attempts       integer not null default 3,
    worker_id          text,
    heartbeat_at       timestamptz,
    error_message      text,
    created_at         timestamptz not null default now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    updated_at         timestamptz not null default now(),
    constraint ingestion_jobs_version_fkey foreign key (dataset_version_id, user_id)
        references dataset_versions (id, user_id) on delete cascade,
    constraint ingestion_jobs_stage_valid check (stage in ('upload', 'parse', 'convert', 'profile')),
    constraint ingestion_jobs_progress_range check (progress_percent between 0 and 100),
    constraint ingestion_jobs_processed_nonnegative check (rows_processed >= 0 and bytes_processed >= 0),
    constraint ingestion_jobs_attempts_range check (attempt >= 0 and max_attempts >= 1 and attempt <= max_attempts),
    constraint ingestion_jobs_worker_id_length check (length(worker_id) between 1 and 200),
    constraint ingestion_jobs_times_ordered check (completed_at >= started_at)
);
comment on table ingestion_jobs is
    'Processing run of an uploaded version (parse, convert to Parquet, profile), shaped like an '
    'Airflow/Prefect task run: state, progress, attempts, worker and heartbeat.';
comment on column ingestion_jobs.id is 'Primary key.';
comment on column ingestion_jobs.dataset_version_id is 'The version being ingested.';
comment on column ingestion_jobs.user_id is 'Owner, copied from the version on insert; tied to it by the composite key.';
comment on column ingestion_jobs.status is 'Run state (same lifecycle as jobs).';
comment on column ingestion_jobs.stage is 'Step in progress: upload, parse, convert or profile; NULL before the first.';
comment on column ingestion_jobs.progress_percent is 'Progress shown to the user, 0-100.';
comment on column ingestion_jobs.rows_processed is 'Rows processed so far, for progress on large files.';
comment on column ingestion_jobs.bytes_processed is 'Bytes read so far, for progress before rows are known.';
comment on column ingestion_jobs.attempt is 'Attempts started so far (Airflow try_number).';
comment on column ingestion_jobs.max_attempts is 'Attempts allowed before the run fails for good.';
comment on column ingestion_jobs.worker_id is 'Worker running the attempt, to trace and rescue it.';
comment on column ingestion_jobs.heartbeat_at is 'Last sign of life from the worker; a stale beat marks the run as stalled.';
comment on column ingestion_jobs.error_message is 'Why the run failed.';
comment on column ingestion_jobs.created_at is 'When the run was requested.';
comment on column ingestion_jobs.started_at is 'When the current attempt started.';
comment on column ingestion_jobs.completed_at is 'When the run reached a terminal state.';
comment on column ingestion_jobs.updated_at is 'Last change of this row (set by trigger).';

create index ingestion_jobs_version_idx on ingestion_jobs (dataset_version_id, created_at desc);
create index ingestion_jobs_user_created_idx on ingestion_jobs (user_id, created_at desc);
create index ingestion_jobs_active_idx on ingestion_jobs (created_at) where status in ('queued', 'running');
comment on index ingestion_jobs_version_idx is 'A version''s runs newest first; also the foreign key index.';
comment on index ingestion_jobs_user_created_idx is 'A user''s ingestion runs newest first.';
comment on index ingestion_jobs_active_idx is 'Runs a worker may pick up or a rescuer must watch.';

create trigger ingestion_jobs_fill_owner before insert on ingestion_jobs
    for each row execute function fill_owner_from_dataset_version();
create trigger ingestion_jobs_set_updated_at before update on ingestion_jobs
    for each row execute function set_updated_at();

-- Usage counters and quotas (users_adjust_usage owns the arithmetic and the limits).
create function datasets_count_usage() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
begin
    if tg_op = 'INSERT' then
        perform users_adjust_usage(new.user_id, datasets => 1);
    else
        perform users_adjust_usage(old.user_id, datasets => -1);
    end if;
    return null;
end;
$$;
comment on function datasets_count_usage() is
    'AFTER INSERT/DELETE on datasets: keeps users.dataset_count exact and enforces the tier''s dataset limit.';

create function dataset_versions_count_storage() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    delta bigint := 0;
begin
    if tg_op in ('INSERT', 'UPDATE') then
        delta := new.original_size_bytes + coalesce(new.parquet_size_bytes, 0);
    end if;
    if tg_op in ('UPDATE', 'DELETE') then
        delta := delta - old.original_size_bytes - coalesce(old.parquet_size_bytes, 0);
    end if;
    if delta <> 0 then
        perform users_adjust_usage(coalesce(new.user_id, old.user_id), storage_bytes => delta);
    end if;
    return null;
end;
$$;
comment on function dataset_versions_count_storage() is
    'AFTER INSERT/UPDATE/DELETE on dataset_versions: moves users.storage_used_bytes by the change in '
    'original_size_bytes + parquet_size_bytes and enforces the tier''s storage limit.';

create trigger datasets_count_usage after insert or delete on datasets
    for each row execute function datasets_count_usage();
create trigger dataset_versions_count_storage
    after insert or delete or update of original_size_bytes, parquet_size_bytes on dataset_versions
    for each row execute function dataset_versions_count_storage();

create trigger datasets_owner_immutable before update of user_id on datasets
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
create trigger dataset_profiles_owner_immutable before update of user_id on dataset_profiles
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
create trigger ingestion_jobs_owner_immutable before update of user_id on ingestion_jobs
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- ==== schema/040_workflows.sql ====
-- 040_workflows.sql — workflows (mutable designs) and their immutable snapshots.
--
-- Owns: workflows (a user's editable graph of nodes and edges, soft-deletable) and
-- workflow_snapshots (the frozen copy a job executes). Deleting a workflow keeps its
-- snapshots and their jobs: workflow_id becomes NULL.

create table workflows (
    id          uuid primary key default gen_random_uuid(),
    user_id     uuid not null references users (id) on delete cascade,
    name        text not null,
    description text,
    definition  jsonb not null default '{"nodes": [], "edges": []}',
    is_deleted  boolean not null default false,
    deleted_at  timestamptz,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint workflows_id_user_key unique (id, user_id),
    constraint workflows_name_length check (length(btrim(name)) between 1 and 200),
    constraint workflows_description_length check (length(description) <= 5000),
    constraint workflows_definition_shape check (workflow_graph_is_valid(definition)),
    constraint workflows_deleted_at_matches check (is_deleted = (deleted_at is not null))
);
comment on table workflows is
    'A user''s ML pipeline design: a graph of nodes and edges that the user edits. Jobs never run it '
    'directly; they run a workflow_snapshot of it.';
comment on column workflows.id is 'Primary key.';
comment on column workflows.user_id is 'Owner.';
comment on column workflows.name is 'Display name (1-200 characters, not blank).';
comment on column workflows.description is 'Optional free text (at most 5000 characters).';
comment on column workflows.definition is
    'The graph: {"nodes": [{"id", "type", ...}], "edges": [{"source", "target"}]} (workflows_definition_shape).';
comment on column workflows.is_deleted is 'Soft delete flag; a deleted workflow is hidden and not counted, but restorable.';
comment on column workflows.deleted_at is 'When is_deleted last turned true (stamped by trigger); purge counts retention from it.';
comment on column workflows.created_at is 'Creation time.';
comment on column workflows.updated_at is 'Last change of this row (set by trigger).';

create index workflows_user_created_idx on workflows (user_id, created_at desc, id desc) where not is_deleted;
create index workflows_user_idx on workflows (user_id);
create index workflows_deleted_at_idx on workflows (deleted_at) where is_deleted;
comment on index workflows_user_created_idx is 'A user''s live workflows newest first.';
comment on index workflows_user_idx is 'Foreign key index (covers soft-deleted rows too).';
comment on index workflows_deleted_at_idx is 'Finds soft-deleted workflows past retention for purge.';

create trigger workflows_set_updated_at before update on workflows
    for each row execute function set_updated_at();
create trigger workflows_stamp_deleted_at before insert or update of is_deleted, deleted_at on workflows
    for each row execute function stamp_deleted_at();

create table workflow_snapshots (
    id            uuid primary key default gen_random_uuid(),
    workflow_id   uuid,
    user_id       uuid not null references users (id) on delete cascade,
    snapshot_data jsonb not null,
    created_at    timestamptz not null default now(),
    constraint workflow_snapshots_workflow_fkey foreign key (workflow_id, user_id)
        references workflows (id, user_id) on delete set null (workflow_id),
    constraint workflow_snapshots_id_user_key unique (id, user_id),
    constraint workflow_snapshots_data_shape check (workflow_graph_is_valid(snapshot_data))
);
comment on table workflow_snapshots is
    'Immutable copy of a workflow''s graph taken when a job is submitted, so every job can be reproduced '
    'exactly even after the workflow is edited or deleted.';
comment on column workflow_snapshots.id is 'Primary key.';
comment on column workflow_snapshots.workflow_id is
    'Workflow it was taken from, of the same owner; NULL once that workflow is deleted.';
comment on column workflow_snapshots.user_id is 'Owner.';
comment on column workflow_snapshots.snapshot_data is 'The complete graph as it was, same shape as workflows.definition.';
comment on column workflow_snapshots.created_at is 'Snapshot time.';

create index workflow_snapshots_workflow_idx on workflow_snapshots (workflow_id, created_at desc);
create index workflow_snapshots_user_created_idx on workflow_snapshots (user_id, created_at desc);
comment on index workflow_snapshots_workflow_idx is 'A workflow''s snapshots newest first; also the foreign key index.';
comment on index workflow_snapshots_user_created_idx is 'A user''s snapshots newest first; also the user_id foreign key index.';

create function workflows_count_usage() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    delta integer := 0;
begin
    if tg_op in ('INSERT', 'UPDATE') and not new.is_deleted then
        delta := 1;
    end if;
    if tg_op in ('UPDATE', 'DELETE') and not old.is_deleted then
        delta := delta - 1;
    end if;
    if delta <> 0 then
        perform users_adjust_usage(coalesce(new.user_id, old.user_id), workflows => delta);
    end if;
    return null;
end;
$$;
comment on function workflows_count_usage() is
    'AFTER INSERT/DELETE/UPDATE OF is_deleted on workflows: keeps users.workflow_count equal to the '
    'live workflows (soft delete -1, restore +1) and enforces the tier''s workflow limit.';

create trigger workflows_count_usage after insert or delete or update of is_deleted on workflows
    for each row execute function workflows_count_usage();
create trigger workflows_owner_immutable before update of user_id on workflows
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- A snapshot is frozen: only the foreign key's own ON DELETE SET NULL may touch it.
create function workflow_snapshots_refuse_change() returns trigger
language plpgsql as $$
begin
    if new.id = old.id and new.user_id = old.user_id and new.snapshot_data = old.snapshot_data
       and new.created_at = old.created_at and new.workflow_id is null then
        return new;
    end if;
    raise exception 'workflow snapshot % is immutable', old.id
        using errcode = 'AM004', constraint = 'workflow_snapshots_immutable';
end;
$$;
comment on function workflow_snapshots_refuse_change() is
    'BEFORE UPDATE on workflow_snapshots: refuses every change except clearing workflow_id '
    '(what deleting the source workflow does).';

create trigger workflow_snapshots_immutable before update on workflow_snapshots
    for each row execute function workflow_snapshots_refuse_change();

-- ==== schema/050_jobs.sql ====
-- 050_jobs.sql — job executions and the status of each node inside them.
--
-- Owns: jobs (one execution of a workflow snapshot; also the work queue) and job_nodes (one
-- row per node of the snapshot's graph). A job's snapshot belongs to the job's owner
-- (composite key); a snapshot cannot be deleted while a job references it.

create table jobs (
    id                   uuid primary key default gen_random_uuid(),
    user_id              uuid not null references users (id) on delete cascade,
    workflow_snapshot_id uuid not null,
    status               job_status not null default 'pending',
    credit_cost          integer not null default 0,
    priority             integer not null default 0,
    celery_task_id       text,
    results              jsonb,
    error_message        text,
    error_traceback      text,
    idempotency_key      text,
    attempt              integer not null default 0,
    max_attempts         integer not null default 3,
    worker_id            text,
    heartbeat_at         timestamptz,
    queued_at            timestamptz,
    created_at           timestamptz not null default now(),
    started_at           timestamptz,
    completed_at         timestamptz,
    updated_at           timestamptz not null default now(),
    constraint jobs_snapshot_fkey foreign key (workflow_snapshot_id, user_id)
        references workflow_snapshots (id, user_id),
    constraint jobs_id_user_key unique (id, user_id),
    constraint jobs_credit_cost_nonnegative check (credit_cost >= 0),
    constraint jobs_priority_range check (priority between -1000 and 1000),
    constraint jobs_results_shape check (results is null or jsonb_is_object(results)),
    constraint jobs_celery_task_id_length check (length(celery_task_id) between 1 and 255),
    constraint jobs_idempotency_key_length check (length(idempotency_key) between 1 and 200),
    constraint jobs_worker_id_length check (length(worker_id) between 1 and 200),
    constraint jobs_attempts_range check (attempt >= 0 and max_attempts >= 1 and attempt <= max_attempts),
    constraint jobs_times_ordered check (completed_at >= started_at)
);
comment on table jobs is
    'One execution of a workflow snapshot, and the work queue: workers claim queued jobs by priority.';
comment on column jobs.id is 'Primary key.';
comment on column jobs.user_id is 'Owner.';
comment on column jobs.workflow_snapshot_id is 'The frozen graph to execute; a snapshot of the same owner.';
comment on column jobs.status is 'Lifecycle state (see type job_status).';
comment on column jobs.credit_cost is 'Credits this job costs, charged to the owner''s ledger.';
comment on column jobs.priority is 'Queue priority, -1000..1000: higher runs first, then older.';
comment on column jobs.celery_task_id is 'Id of the task in the external runner (ARQ/Celery) executing it, for tracing.';
comment on column jobs.results is 'Execution results (JSON object), set when the job completes.';
comment on column jobs.error_message is 'Short error when the job failed.';
comment on column jobs.error_traceback is 'Full stack trace when the job failed.';
comment on column jobs.idempotency_key is
    'Optional client key, unique per user, so a retried submission cannot start (and charge) a job twice.';
comment on column jobs.attempt is 'Times a worker has claimed this job; the rescuer gives up at max_attempts.';
comment on column jobs.max_attempts is 'Claims allowed before a stalled job is failed instead of requeued.';
comment on column jobs.worker_id is 'Worker holding the current attempt.';
comment on column jobs.heartbeat_at is 'Last sign of life from that worker; a stale beat lets the rescuer requeue the job.';
comment on column jobs.queued_at is 'When the job entered the queue (latest time, after a requeue).';
comment on column jobs.created_at is 'Job creation time.';
comment on column jobs.started_at is 'When the current attempt started running.';
comment on column jobs.completed_at is 'When the job reached a terminal state.';
comment on column jobs.updated_at is 'Last change of this row (set by trigger).';

create unique index jobs_idempotency_key on jobs (user_id, idempotency_key) where idempotency_key is not null;
create index jobs_user_created_idx on jobs (user_id, created_at desc, id desc);
create index jobs_snapshot_idx on jobs (workflow_snapshot_id);
create index jobs_claimable_idx on jobs (priority desc, queued_at, id) where status = 'queued';
create index jobs_running_heartbeat_idx on jobs (heartbeat_at) where status = 'running';
comment on index jobs_idempotency_key is
    'One job per client idempotency key and user; partial, so keyless jobs cost this index nothing.';
comment on index jobs_user_created_idx is 'A user''s jobs newest first (keyset pages); also the user_id foreign key index.';
comment on index jobs_snapshot_idx is 'Foreign key index: deleting a snapshot checks for jobs quickly.';
comment on index jobs_claimable_idx is
    'Only queued jobs, in claim order: claiming stays fast however many finished jobs the table holds.';
comment on index jobs_running_heartbeat_idx is 'Running jobs by last heartbeat, for the stall rescuer.';

create table job_nodes (
    id            uuid primary key default gen_random_uuid(),
    job_id        uuid not null,
    user_id       uuid not null,
    node_id       text not null,
    node_type     node_type,
    status        node_status not null default 'pending',
    output_data   jsonb,
    error_message text,
    started_at    timestamptz,
    completed_at  timestamptz,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint job_nodes_job_fkey foreign key (job_id, user_id) references jobs (id, user_id) on delete cascade,
    constraint job_nodes_node_key unique (job_id, node_id),
    constraint job_nodes_node_id_length check (length(node_id) between 1 and 200),
    constraint job_nodes_output_shape check (output_data is null or jsonb_is_object(output_data)),
    constraint job_nodes_times_ordered check (completed_at >= started_at)
);
comment on table job_nodes is 'Status of each node of a job''s graph, for progress display and failure diagnosis.';
comment on column job_nodes.id is 'Primary key.';
comment on column job_nodes.job_id is 'Parent job.';
comment on column job_nodes.user_id is 'Owner, copied from the job on insert; tied to it by the composite key.';
comment on column job_nodes.node_id is 'The node''s id in the snapshot graph; unique within the job.';
comment on column job_nodes.node_type is 'Kind of node (dataset, preprocess, model, ...); NULL when the graph gives none.';
comment on column job_nodes.status is 'Node state (see type node_status).';
comment on column job_nodes.output_data is 'Node-specific outputs (JSON object).';
comment on column job_nodes.error_message is 'Why the node failed.';
comment on column job_nodes.started_at is 'When the node started running.';
comment on column job_nodes.completed_at is 'When the node ended (success, failed or skipped).';
comment on column job_nodes.created_at is 'Row creation time.';
comment on column job_nodes.updated_at is 'Last change of this row (set by trigger).';

create index job_nodes_user_idx on job_nodes (user_id);
comment on index job_nodes_user_idx is 'Owner filter; job_nodes_node_key already serves a job''s nodes.';

create function job_nodes_fill_owner() returns trigger
language plpgsql as $$
begin
    if new.user_id is null then
        select j.user_id into new.user_id from jobs j where j.id = new.job_id;
    end if;
    return new;
end;
$$;
comment on function job_nodes_fill_owner() is
    'BEFORE INSERT on job_nodes: copies the owner from the job when the client left it out.';

create trigger job_nodes_fill_owner before insert on job_nodes
    for each row execute function job_nodes_fill_owner();
create trigger job_nodes_set_updated_at before update on job_nodes
    for each row execute function set_updated_at();

-- Lifecycle. Legal moves (anything else is SQLSTATE AM003, constraint jobs_status_transition):
--   pending -> queued | cancelled        queued -> running | cancelled
--   running -> completed | failed | cancelled
--   running -> queued  (requeue by the stall rescuer, only while attempt < max_attempts)
-- A job is inserted as pending or queued. The database stamps queued_at, started_at and
-- completed_at; client-written values of those are ignored.
create function jobs_check_transition() returns trigger
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

-- Credit policy: a job is charged credit_cost when it enters the queue for the first time
-- (insert as queued, or pending -> queued), and refunded in full, once, when it ends failed
-- or cancelled after being charged. A completed job keeps its charge; a requeue after a stall
-- charges nothing more. Both are ledger entries, so the ledger explains every balance, and an
-- owner without enough credits cannot queue (AM001 from the ledger).
create function jobs_settle_credits() returns trigger
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

create trigger jobs_check_transition before insert or update on jobs
    for each row execute function jobs_check_transition();
-- WHEN clauses keep the function off the hot path: most transitions move no credits.
create trigger jobs_settle_credits_on_insert after insert on jobs
    for each row when (new.status = 'queued' and new.credit_cost > 0)
    execute function jobs_settle_credits();
create trigger jobs_settle_credits_on_update after update of status on jobs
    for each row when ((old.status = 'pending' and new.status = 'queued' and new.credit_cost > 0)
                       or (old.status in ('queued', 'running') and new.status in ('failed', 'cancelled')))
    execute function jobs_settle_credits();
create trigger jobs_owner_immutable before update of user_id on jobs
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- The queue. One statement picks the most urgent queued job, skipping rows other workers hold,
-- and marks it running; jobs_claimable_idx keeps this fast beside millions of finished jobs.
-- Not SECURITY DEFINER: automl_worker reaches every job through its own policies
-- (110_security.sql), which keeps the per-call search_path switch a definer needs off the hot path.
create function claim_jobs(worker text, how_many integer default 1) returns setof jobs
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

create function heartbeat_job(job uuid, worker text) returns boolean
language sql
security definer set search_path = pg_catalog, public, pg_temp as $$
    update jobs set heartbeat_at = now()
     where id = job and worker_id = worker and status = 'running'
    returning true
$$;
comment on function heartbeat_job(uuid, text) is
    'Worker API: records that worker still runs job. NULL (no row) means the job is no longer this '
    'worker''s to run (rescued, cancelled or finished): the worker should stop.';

create function rescue_stalled_jobs(stalled_after interval default '5 minutes')
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

-- Nodes: pending -> running -> success | failed, pending -> skipped (AM003 otherwise).
create function job_nodes_check_transition() returns trigger
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

create function job_nodes_skip_downstream() returns trigger
language plpgsql as $$
begin
    with recursive edge as (
        select e ->> 'source' as source, e ->> 'target' as target
          from jobs j
          join workflow_snapshots s on s.id = j.workflow_snapshot_id
         cross join lateral jsonb_array_elements(s.snapshot_data -> 'edges') as e
         where j.id = new.job_id
    ), downstream (node_id) as (
        select target from edge where source = new.node_id
        union
        select edge.target from edge join downstream d on edge.source = d.node_id
    )
    update job_nodes n set status = 'skipped'
      from downstream d
     where n.job_id = new.job_id and n.node_id = d.node_id and n.status = 'pending';
    return null;
end;
$$;
comment on function job_nodes_skip_downstream() is
    'AFTER UPDATE on job_nodes when a node fails: every pending node downstream of it, following the '
    'snapshot''s edges transitively, becomes skipped.';

create trigger job_nodes_check_transition before insert or update on job_nodes
    for each row execute function job_nodes_check_transition();
create trigger job_nodes_skip_downstream after update of status on job_nodes
    for each row when (new.status = 'failed' and old.status is distinct from 'failed')
    execute function job_nodes_skip_downstream();
create trigger job_nodes_owner_immutable before update of user_id on job_nodes
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- ==== schema/060_models.sql ====
-- 060_models.sql — trained model artifacts.
--
-- Owns: models, each produced by a job of the same owner (composite key).

create table models (
    id              uuid primary key default gen_random_uuid(),
    user_id         uuid not null references users (id) on delete cascade,
    job_id          uuid not null,
    name            text not null,
    algorithm       text,
    problem_type    problem_type,
    metrics         jsonb not null default '{}',
    hyperparameters jsonb not null default '{}',
    s3_path         text,
    is_deployed     boolean not null default false,
    deployed_at     timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint models_job_fkey foreign key (job_id, user_id) references jobs (id, user_id),
    constraint models_id_user_key unique (id, user_id),
    constraint models_name_length check (length(btrim(name)) between 1 and 200),
    constraint models_algorithm_length check (length(btrim(algorithm)) between 1 and 100),
    constraint models_metrics_shape check (jsonb_is_number_map(metrics)),
    constraint models_hyperparameters_shape check (jsonb_is_object(hyperparameters)),
    constraint models_deployed_at_matches check (is_deployed = (deployed_at is not null))
);
comment on table models is 'A trained model artifact, produced by a job.';
comment on column models.id is 'Primary key.';
comment on column models.user_id is 'Owner.';
comment on column models.job_id is 'Job that trained it; a job of the same owner.';
comment on column models.name is 'Display name (1-200 characters, not blank).';
comment on column models.algorithm is 'Algorithm used, e.g. "random_forest".';
comment on column models.problem_type is 'ML task the model solves.';
comment on column models.metrics is 'Performance metrics as {"name": number} (models_metrics_shape).';
comment on column models.hyperparameters is 'Training hyperparameters (JSON object).';
comment on column models.s3_path is 'Object-store path of the saved model file.';
comment on column models.is_deployed is 'Whether the model serves predictions.';
comment on column models.deployed_at is 'When it was last deployed (stamped by trigger); NULL while not deployed.';
comment on column models.created_at is 'Creation time.';
comment on column models.updated_at is 'Last change of this row (set by trigger).';

create index models_user_created_idx on models (user_id, created_at desc, id desc);
create index models_job_idx on models (job_id);
create index models_deployed_idx on models (user_id) where is_deployed;
comment on index models_user_created_idx is 'A user''s models newest first; also the user_id foreign key index.';
comment on index models_job_idx is 'Foreign key index; finds the models a job produced.';
comment on index models_deployed_idx is 'A user''s deployed models.';

create function models_stamp_deployed_at() returns trigger
language plpgsql as $$
begin
    if new.is_deployed then
        if tg_op = 'INSERT' or not old.is_deployed then
            new.deployed_at := now();
        else
            new.deployed_at := old.deployed_at;
        end if;
    else
        new.deployed_at := null;
    end if;
    return new;
end;
$$;
comment on function models_stamp_deployed_at() is
    'BEFORE INSERT/UPDATE on models: stamps deployed_at when is_deployed turns true, clears it on undeploy.';

create trigger models_stamp_deployed_at before insert or update of is_deployed, deployed_at on models
    for each row execute function models_stamp_deployed_at();
create trigger models_set_updated_at before update on models
    for each row execute function set_updated_at();

create function models_count_usage() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
begin
    if tg_op = 'INSERT' then
        perform users_adjust_usage(new.user_id, models => 1);
    else
        perform users_adjust_usage(old.user_id, models => -1);
    end if;
    return null;
end;
$$;
comment on function models_count_usage() is
    'AFTER INSERT/DELETE on models: keeps users.model_count exact and enforces the tier''s model limit.';

create trigger models_count_usage after insert or delete on models
    for each row execute function models_count_usage();
create trigger models_owner_immutable before update of user_id on models
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- ==== schema/070_credits.sql ====
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

-- ==== schema/080_experiments.sql ====
-- 080_experiments.sql — experiments and their runs (MLflow-style model comparison).
--
-- Owns: experiments (a question: "which model predicts churn best?", with the metric that
-- decides) and experiment_runs (one attempt at answering it: a job and/or the model it made,
-- with params and metric summaries). Every link stays within one owner (composite keys).

create table experiments (
    id             uuid primary key default gen_random_uuid(),
    user_id        uuid not null references users (id) on delete cascade,
    name           text not null,
    description    text,
    dataset_id     uuid,
    problem_type   problem_type,
    primary_metric text,
    metric_goal    metric_goal not null default 'maximize',
    tags           jsonb not null default '{}',
    archived_at    timestamptz,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    constraint experiments_dataset_fkey foreign key (dataset_id, user_id)
        references datasets (id, user_id) on delete set null (dataset_id),
    constraint experiments_id_user_key unique (id, user_id),
    constraint experiments_name_key unique (user_id, name),
    constraint experiments_name_length check (length(btrim(name)) between 1 and 200),
    constraint experiments_description_length check (length(description) <= 5000),
    constraint experiments_primary_metric_length check (length(btrim(primary_metric)) between 1 and 100),
    constraint experiments_tags_shape check (jsonb_is_object(tags))
);
comment on table experiments is
    'A group of runs answering one question, compared on one primary metric (an MLflow experiment).';
comment on column experiments.id is 'Primary key.';
comment on column experiments.user_id is 'Owner.';
comment on column experiments.name is 'Display name, unique per user.';
comment on column experiments.description is 'What is being compared and why.';
comment on column experiments.dataset_id is 'Dataset the runs train on, of the same owner; NULL if mixed or deleted.';
comment on column experiments.problem_type is 'ML task compared.';
comment on column experiments.primary_metric is 'Metric key that ranks runs on the leaderboard, e.g. "accuracy".';
comment on column experiments.metric_goal is 'Whether a larger or smaller primary_metric wins.';
comment on column experiments.tags is 'Free key/value labels (JSON object), as MLflow tags.';
comment on column experiments.archived_at is 'When the experiment was archived (hidden from default lists); NULL while active.';
comment on column experiments.created_at is 'Creation time.';
comment on column experiments.updated_at is 'Last change of this row (set by trigger).';

create index experiments_user_created_idx on experiments (user_id, created_at desc, id desc);
create index experiments_dataset_idx on experiments (dataset_id) where dataset_id is not null;
comment on index experiments_user_created_idx is 'A user''s experiments newest first; the name key also covers user_id.';
comment on index experiments_dataset_idx is 'Foreign key index: deleting a dataset finds its experiments.';

create trigger experiments_set_updated_at before update on experiments
    for each row execute function set_updated_at();
create trigger experiments_owner_immutable before update of user_id on experiments
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

create table experiment_runs (
    id            uuid primary key default gen_random_uuid(),
    experiment_id uuid not null,
    user_id       uuid not null,
    job_id        uuid,
    model_id      uuid,
    run_name      text,
    params        jsonb not null default '{}',
    metrics       jsonb not null default '{}',
    tags          jsonb not null default '{}',
    notes         text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint experiment_runs_experiment_fkey foreign key (experiment_id, user_id)
        references experiments (id, user_id) on delete cascade,
    constraint experiment_runs_job_fkey foreign key (job_id, user_id)
        references jobs (id, user_id) on delete set null (job_id),
    constraint experiment_runs_model_fkey foreign key (model_id, user_id)
        references models (id, user_id) on delete set null (model_id),
    constraint experiment_runs_model_key unique (experiment_id, model_id),
    constraint experiment_runs_run_name_length check (length(btrim(run_name)) between 1 and 200),
    constraint experiment_runs_params_shape check (jsonb_is_object(params)),
    constraint experiment_runs_metrics_shape check (jsonb_is_number_map(metrics)),
    constraint experiment_runs_tags_shape check (jsonb_is_object(tags)),
    constraint experiment_runs_notes_length check (length(notes) <= 5000)
);
comment on table experiment_runs is
    'One run inside an experiment: the job that trained and/or the model it produced, with its '
    'parameters and final metric values (MLflow run: params, latest metrics, tags).';
comment on column experiment_runs.id is 'Primary key.';
comment on column experiment_runs.experiment_id is 'Experiment the run belongs to.';
comment on column experiment_runs.user_id is
    'Owner, copied from the experiment on insert; the composite keys make job and model the same owner''s.';
comment on column experiment_runs.job_id is 'Job that executed the run; NULL if that job was removed.';
comment on column experiment_runs.model_id is 'Model the run produced; a model appears once per experiment.';
comment on column experiment_runs.run_name is 'Optional display name.';
comment on column experiment_runs.params is 'Parameters of the run (JSON object), searchable apart from model hyperparameters.';
comment on column experiment_runs.metrics is 'Final metric values as {"name": number}; the leaderboard ranks on the primary metric.';
comment on column experiment_runs.tags is 'Free key/value labels (JSON object).';
comment on column experiment_runs.notes is 'The user''s notes on this run.';
comment on column experiment_runs.created_at is 'When the run was recorded.';
comment on column experiment_runs.updated_at is 'Last change of this row (set by trigger).';

create index experiment_runs_experiment_idx on experiment_runs (experiment_id, created_at desc);
create index experiment_runs_user_idx on experiment_runs (user_id);
create index experiment_runs_job_idx on experiment_runs (job_id) where job_id is not null;
create index experiment_runs_model_idx on experiment_runs (model_id) where model_id is not null;
comment on index experiment_runs_experiment_idx is 'An experiment''s runs newest first; also its foreign key index.';
comment on index experiment_runs_user_idx is 'Owner filter.';
comment on index experiment_runs_job_idx is 'Foreign key index: deleting a job finds its runs.';
comment on index experiment_runs_model_idx is 'Foreign key index: deleting a model finds its runs.';

create function experiment_runs_fill_owner() returns trigger
language plpgsql as $$
begin
    if new.user_id is null then
        select e.user_id into new.user_id from experiments e where e.id = new.experiment_id;
    end if;
    return new;
end;
$$;
comment on function experiment_runs_fill_owner() is
    'BEFORE INSERT on experiment_runs: copies the owner from the experiment when the client left it out.';

create trigger experiment_runs_fill_owner before insert on experiment_runs
    for each row execute function experiment_runs_fill_owner();
create trigger experiment_runs_set_updated_at before update on experiment_runs
    for each row execute function set_updated_at();
create trigger experiment_runs_owner_immutable before update of user_id on experiment_runs
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- ==== schema/090_tutorials.sql ====
-- 090_tutorials.sql — tutorials and each user's progress through them.
--
-- Owns: tutorials (reference content: ordered steps, versioned) and user_tutorial_progress
-- (one row per user and tutorial, as Open edX / Oppia keep it: steps done, last activity,
-- completion, and the content version the learner saw).

create function tutorial_steps_are_valid(steps jsonb) returns boolean
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

create table tutorials (
    id                uuid primary key default gen_random_uuid(),
    slug              text not null,
    title             text not null,
    description       text,
    difficulty        text not null default 'beginner',
    steps             jsonb not null default '[]',
    step_count        integer generated always as (
        case when jsonb_typeof(steps) = 'array' then jsonb_array_length(steps) end) stored,
    content_version   integer not null default 1,
    estimated_minutes integer,
    sort_order        integer not null default 0,
    is_published      boolean not null default false,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint tutorials_slug_key unique (slug),
    constraint tutorials_slug_format check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(slug) <= 100),
    constraint tutorials_title_length check (length(btrim(title)) between 1 and 200),
    constraint tutorials_description_length check (length(description) <= 5000),
    constraint tutorials_difficulty_valid check (difficulty in ('beginner', 'intermediate', 'advanced')),
    constraint tutorials_steps_shape check (tutorial_steps_are_valid(steps)),
    constraint tutorials_content_version_positive check (content_version >= 1),
    constraint tutorials_estimated_minutes_positive check (estimated_minutes > 0)
);
comment on table tutorials is 'Interactive learning content (reference data): an ordered list of steps.';
comment on column tutorials.id is 'Primary key.';
comment on column tutorials.slug is 'Stable URL name, lower-case words joined by dashes; unique.';
comment on column tutorials.title is 'Display title.';
comment on column tutorials.description is 'Summary shown in the catalogue.';
comment on column tutorials.difficulty is 'beginner, intermediate or advanced.';
comment on column tutorials.steps is 'Ordered steps: [{"id", "title", ...}] with unique ids (tutorials_steps_shape).';
comment on column tutorials.step_count is 'Number of steps (generated), so progress can be shown as n of m without parsing steps.';
comment on column tutorials.content_version is 'Bumped when steps change, so progress records which version a learner saw.';
comment on column tutorials.estimated_minutes is 'Expected time to finish.';
comment on column tutorials.sort_order is 'Position in the catalogue (ascending).';
comment on column tutorials.is_published is 'Whether learners can see it.';
comment on column tutorials.created_at is 'Creation time.';
comment on column tutorials.updated_at is 'Last change of this row (set by trigger).';

create index tutorials_published_idx on tutorials (sort_order, title) where is_published;
comment on index tutorials_published_idx is 'The published catalogue in display order.';

create trigger tutorials_set_updated_at before update on tutorials
    for each row execute function set_updated_at();

create table user_tutorial_progress (
    id               uuid primary key default gen_random_uuid(),
    user_id          uuid not null references users (id) on delete cascade,
    tutorial_id      uuid not null references tutorials (id) on delete cascade,
    content_version  integer not null default 1,
    completed_steps  text[] not null default '{}',
    current_step     integer not null default 0,
    started_at       timestamptz not null default now(),
    last_activity_at timestamptz not null default now(),
    completed_at     timestamptz,
    updated_at       timestamptz not null default now(),
    constraint user_tutorial_progress_user_tutorial_key unique (user_id, tutorial_id),
    constraint user_tutorial_progress_current_step_nonnegative check (current_step >= 0),
    constraint user_tutorial_progress_content_version_positive check (content_version >= 1),
    constraint user_tutorial_progress_steps_no_nulls check (array_position(completed_steps, null) is null),
    constraint user_tutorial_progress_times_ordered check (
        last_activity_at >= started_at and completed_at >= started_at)
);
comment on table user_tutorial_progress is 'Where a user stands in a tutorial: one row per user and tutorial.';
comment on column user_tutorial_progress.id is 'Primary key.';
comment on column user_tutorial_progress.user_id is 'Learner.';
comment on column user_tutorial_progress.tutorial_id is 'Tutorial followed.';
comment on column user_tutorial_progress.content_version is 'tutorials.content_version the learner started on.';
comment on column user_tutorial_progress.completed_steps is 'Ids of the steps done, in the order they were done.';
comment on column user_tutorial_progress.current_step is 'Index (0-based) of the step the learner is on, to resume there.';
comment on column user_tutorial_progress.started_at is 'When the learner started.';
comment on column user_tutorial_progress.last_activity_at is 'Last step activity, for "continue where you left off" and dropout analysis.';
comment on column user_tutorial_progress.completed_at is 'When the tutorial was finished; NULL while in progress.';
comment on column user_tutorial_progress.updated_at is 'Last change of this row (set by trigger).';

create index user_tutorial_progress_tutorial_idx on user_tutorial_progress (tutorial_id);
comment on index user_tutorial_progress_tutorial_idx is 'Foreign key index; learners per tutorial.';

create trigger user_tutorial_progress_set_updated_at before update on user_tutorial_progress
    for each row execute function set_updated_at();
create trigger user_tutorial_progress_owner_immutable before update of user_id on user_tutorial_progress
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- ==== schema/100_maintenance.sql ====
-- 100_maintenance.sql — retention and the DBA's audit.
--
-- Owns: purge_soft_deleted() (30-day retention of soft-deleted workflows and accounts) and
-- check_integrity() (one row per broken invariant; none on a healthy database). Both span
-- users, so they are maintenance entry points, not tenant queries.

create function purge_soft_deleted(retention interval default '30 days')
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

create function check_integrity()
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

-- ==== schema/110_security.sql ====
-- 110_security.sql — who may do what: ownership, grants and row-level security.
--
-- Owns: the ownership of every object (automl_owner), the privileges of automl_app,
-- automl_worker and automl_readonly, and the row-level security policies of every table that
-- carries a user. Rules of thumb a reviewer can check here:
--   * automl_app owns nothing, is not superuser and has no BYPASSRLS;
--   * every tenant table has ENABLE + FORCE row level security and a policy keyed on
--     (select app_user_id()): no user set, no rows; WITH CHECK keeps rows from being created
--     for, or moved to, another user;
--   * the ledger is SELECT + INSERT only, and the app may insert neither adjustments nor
--     purchases without a package;
--   * EXECUTE is revoked from PUBLIC on every function and granted on purpose;
--   * work that spans users goes through SECURITY DEFINER functions with a pinned search_path,
--     or, for the job queue's hot path, through automl_worker's own policies on jobs.

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
grant usage on schema public to automl_app, automl_readonly;

-- Functions: nothing for PUBLIC; each role gets what it calls.
revoke execute on all functions in schema public from public;
grant execute on function app_user_id(), jsonb_is_object(jsonb), jsonb_is_number_map(jsonb),
    workflow_graph_is_valid(jsonb), tutorial_steps_are_valid(jsonb)
    to automl_app, automl_readonly;
grant execute on function oauth_sign_in(text, text, oauth_provider, text), user_id_for_email(text),
    change_user_tier(uuid, user_tier)
    to automl_app;
grant execute on function claim_jobs(text, integer), heartbeat_job(uuid, text),
    rescue_stalled_jobs(interval), purge_soft_deleted(interval)
    to automl_worker;
grant execute on function check_integrity() to automl_worker, automl_readonly;

-- Reference data: readable by every role, written by the owner only.
grant select on tier_limits, credit_packages, tutorials to automl_app, automl_readonly;

-- Tenant tables.
grant select on all tables in schema public to automl_readonly;
grant select on users to automl_app;
grant insert (id, email, full_name) on users to automl_app;
grant update (email, full_name, email_verified, is_deleted) on users to automl_app;
grant select, insert, update, delete on datasets, dataset_versions, dataset_profiles, ingestion_jobs,
    workflows, models, experiments, experiment_runs, user_tutorial_progress to automl_app;
revoke update on datasets from automl_app;
grant update (name, description, problem_type, target_column, current_version_id) on datasets to automl_app;
grant select, insert on workflow_snapshots, credit_transactions to automl_app;
grant select, insert, update on jobs, job_nodes to automl_app;

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
create policy jobs_worker_update on jobs for update to automl_worker using (true) with check (true);
comment on policy jobs_worker_read on jobs is 'automl_worker sees every job: the queue spans users.';
comment on policy jobs_worker_update on jobs is 'automl_worker claims and finishes any user''s job.';

alter table users enable row level security;
alter table users force row level security;
create policy users_tenant on users to automl_app
    using (id = (select app_user_id())) with check (id = (select app_user_id()));
create policy users_readonly on users for select to automl_readonly using (true);
comment on policy users_tenant on users is
    'automl_app reads and writes only the account of app_user_id(); sign-up inserts it under that id.';
comment on policy users_readonly on users is 'automl_readonly reads every account (analytics, support).';

alter table credit_transactions enable row level security;
alter table credit_transactions force row level security;
create policy credit_transactions_tenant_read on credit_transactions for select to automl_app
    using (user_id = (select app_user_id()));
create policy credit_transactions_tenant_insert on credit_transactions for insert to automl_app
    with check (user_id = (select app_user_id()) and type <> 'adjustment'
                and (type <> 'purchase' or package_id is not null));
create policy credit_transactions_readonly on credit_transactions for select to automl_readonly using (true);
comment on policy credit_transactions_tenant_read on credit_transactions is
    'automl_app reads only the ledger of app_user_id().';
comment on policy credit_transactions_tenant_insert on credit_transactions is
    'automl_app posts only for app_user_id(), never adjustments, and purchases only of a package.';
comment on policy credit_transactions_readonly on credit_transactions is
    'automl_readonly reads every entry (finance, support).';

