-- 0002 the rules hold for every client: closes the holes an adversarial client opened (issue 8).
--   * every PL/pgSQL function pins its search_path; SQL functions get SQL-standard bodies, bound at
--     creation (restore-safe: CHECK helpers no longer fail under pg_restore's empty search_path);
--   * settlement and skip-downstream are definers: they hold whoever moves the job;
--   * a balance, number or counter moves only with its row, and never touches another tenant's
--     row before the ownership check (ledger posting, version numbering);
--   * OAuth sign-in reveals one id and changes nothing; sign-up acts for its own id;
--   * only automl_billing creates credits; purchases carry a payment reference;
--   * one lock order (users row, then parent, then child);
--   * dataset versions and ingestion runs get state machines; lifecycle stamps are the database's;
--   * the package/tier rule lives in one function;
--   * no temporary objects, large objects or advisory locks for the runtime roles.
-- Constraints are dropped only to be replaced by stricter ones, the ledger id default on purpose:
-- squawk-ignore-file changing-column-type, ban-drop-function, ban-drop-trigger, constraint-missing-not-valid, ban-drop-constraint, ban-drop-default
set local lock_timeout = '5s';
set local statement_timeout = '5min';

-- ==== Roles ====
do $$
begin
    if not exists (select from pg_roles where rolname = 'automl_billing') then
        create role automl_billing nologin;
    end if;
end;
$$;

-- ==== Helpers with SQL-standard bodies ====
-- The tenant of the current transaction: set by the application with
-- set_config('automl.user_id', <uuid>, true); '' after a transaction ends, NULL if never set.
create or replace function app_user_id() returns uuid
language sql stable parallel safe
begin atomic
    select nullif(current_setting('automl.user_id', true), '')::uuid;
end;
comment on function app_user_id() is
    'The user the current transaction acts for (setting automl.user_id), or NULL. Row-level security '
    'policies call it as (select app_user_id()) so it is evaluated once per statement.';

-- A CHECK on a missing key evaluates to NULL and passes; these predicates return false instead.
create or replace function jsonb_is_object(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select coalesce(jsonb_typeof(doc) = 'object', false);
end;
comment on function jsonb_is_object(jsonb) is
    'True when doc is a JSON object; false (never NULL) for anything else, so CHECKs cannot pass by NULL.';

create or replace function jsonb_is_number_map(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select jsonb_is_object(doc)
       and not exists (select from jsonb_each(doc) as e(key, value)
                       where jsonb_typeof(e.value) <> 'number');
end;
comment on function jsonb_is_number_map(jsonb) is
    'True when doc is an object whose values are all numbers (metric summaries: {"accuracy": 0.93}).';

-- A workflow graph: {"nodes": [{"id": "..."}...], "edges": [{"source": "...", "target": "..."}...]}
-- with unique node ids and edges between existing nodes.
create or replace function workflow_graph_is_valid(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select jsonb_is_object(doc)
       and coalesce(jsonb_typeof(doc -> 'nodes') = 'array', false)
       and coalesce(jsonb_typeof(doc -> 'edges') = 'array', false)
       and not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                       where coalesce(jsonb_typeof(n.node -> 'id') <> 'string', true)
                          or n.node ->> 'id' = ''
                          or coalesce(jsonb_typeof(n.node -> 'type') not in ('string', 'null'), false))
       and (select count(*) = count(distinct n.node ->> 'id')
            from jsonb_array_elements(doc -> 'nodes') as n(node))
       and not exists (select from jsonb_array_elements(doc -> 'edges') as e(edge)
                       where coalesce(jsonb_typeof(e.edge -> 'source') <> 'string', true)
                          or coalesce(jsonb_typeof(e.edge -> 'target') <> 'string', true)
                          or not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                                         where n.node ->> 'id' = e.edge ->> 'source')
                          or not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                                         where n.node ->> 'id' = e.edge ->> 'target'));
end;
comment on function workflow_graph_is_valid(jsonb) is
    'True when doc is {"nodes": [...], "edges": [...]}: nodes carry unique non-empty string ids (and a '
    'type, when given, is a string), edges carry string source/target naming existing nodes. Used by '
    'workflow and snapshot CHECKs.';

create or replace function tutorial_steps_are_valid(steps jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select coalesce(jsonb_typeof(steps) = 'array', false)
       and not exists (select from jsonb_array_elements(steps) as s(step)
                       where coalesce(jsonb_typeof(s.step -> 'id') <> 'string', true)
                          or coalesce(jsonb_typeof(s.step -> 'title') <> 'string', true)
                          or s.step ->> 'id' = '')
       and (select count(*) = count(distinct s.step ->> 'id') from jsonb_array_elements(steps) as s(step));
end;
comment on function tutorial_steps_are_valid(jsonb) is
    'True when steps is an array of objects with a unique non-empty string "id" and a string "title".';

-- ==== Pinned search paths (bodies unchanged) ====
alter function set_updated_at() set search_path = pg_catalog, public, pg_temp;
alter function stamp_deleted_at() set search_path = pg_catalog, public, pg_temp;
alter function users_refuse_derived_change() set search_path = pg_catalog, public, pg_temp;
alter function refuse_owner_change() set search_path = pg_catalog, public, pg_temp;
alter function fill_owner_from_dataset_version() set search_path = pg_catalog, public, pg_temp;
alter function workflow_snapshots_refuse_change() set search_path = pg_catalog, public, pg_temp;
alter function job_nodes_fill_owner() set search_path = pg_catalog, public, pg_temp;
alter function models_stamp_deployed_at() set search_path = pg_catalog, public, pg_temp;
alter function credit_transactions_refuse_change() set search_path = pg_catalog, public, pg_temp;
alter function users_refuse_delete_with_ledger() set search_path = pg_catalog, public, pg_temp;
alter function experiment_runs_fill_owner() set search_path = pg_catalog, public, pg_temp;
alter function job_nodes_skip_downstream() security definer set search_path = pg_catalog, public, pg_temp;

-- ==== Types ====
create type version_status as enum ('pending', 'processing', 'completed', 'failed');
comment on type version_status is
    'Processing state of an uploaded dataset version: pending -> processing -> completed | failed, '
    'or pending -> failed. completed and failed are terminal.';
comment on type job_status is
    'Lifecycle of a job or ingestion job: pending -> queued -> running -> completed | failed; '
    'cancelled from pending, queued or running; running -> queued is a retry. completed, failed and '
    'cancelled are terminal.';

-- ==== Accounts: sign-in reveals one id; tiers belong to billing ====
drop function oauth_sign_in(text, text, oauth_provider, text);
drop function change_user_tier(uuid, user_tier);
-- Sign-in looks across users (row-level security hides other accounts from automl_app), so it
-- is a definer; it reveals one id and changes nothing. Sign-up needs no definer: the application
-- acts for the new account's id and inserts it under the tenant policy.
create or replace function user_id_for_oauth(p_provider oauth_provider, p_provider_id text) returns uuid
language sql stable
security definer set search_path = pg_catalog, public, pg_temp
begin atomic
    select id from users where oauth_provider = p_provider and oauth_id = p_provider_id;
end;
comment on function user_id_for_oauth(oauth_provider, text) is
    'OAuth sign-in: the id of the account this provider identity belongs to, or NULL. Reveals nothing '
    'else and changes nothing; the application then acts for that id (or signs up a new one).';

-- The single place usage moves and quotas are enforced. The UPDATE locks the user row, so
-- concurrent writers for one user queue here and a limit cannot be slipped past by racing.
create or replace function users_adjust_usage(
    target uuid, datasets integer default 0, workflows integer default 0,
    models integer default 0, storage_bytes bigint default 0
) returns void
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
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

-- A purged account is what retention left of it: nothing of it may change again (its personal data
-- must not come back), though its ledger stays readable.
create or replace function users_refuse_purged_change() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    raise exception 'account % was purged on %: it cannot change', old.id, old.purged_at
        using errcode = 'AM004', constraint = 'users_account_closed';
end;
$$;
comment on function users_refuse_purged_change() is
    'BEFORE UPDATE on users whose purged_at is set: refused (AM004, users_account_closed).';

create trigger users_purged_immutable before update on users
    for each row when (old.purged_at is not null) execute function users_refuse_purged_change();

create or replace function user_id_for_email(p_email text) returns uuid
language sql stable
security definer set search_path = pg_catalog, public, pg_temp
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
-- orders and deadlock.
create or replace function lock_acting_user() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    perform from users where id = app_user_id() for no key update;
    return null;
end;
$$;
comment on function lock_acting_user() is
    'BEFORE statement trigger on tables whose rules lock the owner''s users row (jobs, datasets, '
    'dataset_versions, workflows, models): takes that row first, so every path locks user, then parent, '
    'then child.';

create or replace function datasets_refuse_sequence_on_insert() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    raise exception 'datasets.last_version_number is the database''s: a new dataset starts at 0, not %',
        new.last_version_number using errcode = 'AM005', constraint = 'datasets_derived_columns';
end;
$$;
comment on function datasets_refuse_sequence_on_insert() is
    'BEFORE INSERT on datasets with last_version_number <> 0: refused (AM005, datasets_derived_columns), '
    'so a client cannot make version numbers start anywhere but 1.';

create trigger datasets_derived_columns before insert on datasets
    for each row when (new.last_version_number <> 0) execute function datasets_refuse_sequence_on_insert();

-- ==== Dataset versions: state machine, stamps, numbering that moves only with its row ====
alter table dataset_versions drop constraint dataset_versions_status_valid;
alter table dataset_versions drop constraint dataset_versions_completed_has_output;
alter table dataset_versions alter column status drop default;
alter table dataset_versions alter column status type version_status using status::version_status;
alter table dataset_versions alter column status set default 'pending';
alter table dataset_versions add constraint dataset_versions_completed_has_output check (
    status <> 'completed' or (s3_path is not null and parquet_size_bytes is not null
                              and row_count is not null and column_count is not null));
alter table dataset_versions add column processed_at timestamptz;
-- Existing finished versions: the last change is the best record of when processing ended.
alter table dataset_versions disable trigger user;
update dataset_versions set processed_at = updated_at where status in ('completed', 'failed');
alter table dataset_versions enable trigger user;
alter table dataset_versions add constraint dataset_versions_times_ordered check (processed_at >= created_at);
comment on column dataset_versions.status is
    'Processing state (see type version_status); moves are checked by dataset_versions_status_transition.';
comment on column dataset_versions.created_at is 'Upload time (stamped by the database).';
comment on column dataset_versions.processed_at is
    'When processing ended, completed or failed (stamped by the database); NULL before.';
drop trigger dataset_versions_freeze_identity on dataset_versions;
drop function dataset_versions_freeze_identity();
-- Numbering. The BEFORE trigger is not a definer: it sees (and locks) only a dataset the caller
-- may see, so naming another user's dataset touches nothing of theirs. It takes the owner's
-- users row, then the dataset row (the lock order), and picks the next number; the AFTER
-- trigger moves the dataset's sequence only for a row really inserted, so an INSERT that
-- ON CONFLICT skips leaves no gap. Reading max(version_number) too keeps a multi-row INSERT
-- into one dataset numbering 1, 2, 3 (a BEFORE trigger sees the rows its statement inserted).
create or replace function dataset_versions_assign_number() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
declare
    owner uuid;
    last_number integer;
begin
    select d.user_id into owner from datasets d where d.id = new.dataset_id;
    if owner is null or owner <> coalesce(new.user_id, owner) then
        raise foreign_key_violation using
            message = format('dataset %s does not exist or is not a dataset of user %s',
                             new.dataset_id, coalesce(new.user_id, app_user_id())),
            constraint = 'dataset_versions_dataset_fkey';
    end if;
    new.user_id := owner;
    perform from users u where u.id = owner for no key update;
    select d.last_version_number into last_number from datasets d where d.id = new.dataset_id for no key update;
    new.version_number := 1 + greatest(last_number, coalesce(
        (select max(v.version_number) from dataset_versions v where v.dataset_id = new.dataset_id), 0));
    return new;
end;
$$;
comment on function dataset_versions_assign_number() is
    'BEFORE INSERT on dataset_versions: copies the owner from the dataset (one the caller may see), locks '
    'the owner''s users row then the dataset row, and assigns the next version_number.';

create or replace function dataset_versions_advance_sequence() returns trigger
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
begin
    update datasets set last_version_number = new.version_number
     where id = new.dataset_id and last_version_number < new.version_number;
    return null;
end;
$$;
comment on function dataset_versions_advance_sequence() is
    'AFTER INSERT on dataset_versions: records the number just used in datasets.last_version_number '
    '(numbers are never reused, even after a version is deleted).';

-- Lifecycle: pending -> processing -> completed | failed, or pending -> failed (AM003
-- otherwise). A version's dataset, owner, number and upload id never change (AM004). The
-- database stamps created_at and processed_at; client-written values are ignored.
create or replace function dataset_versions_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if tg_op = 'INSERT' then
        if new.status <> 'pending' then
            raise exception 'a dataset version starts as pending, not %', new.status
                using errcode = 'AM003', constraint = 'dataset_versions_status_transition';
        end if;
        new.created_at := now();
        new.processed_at := null;
        return new;
    end if;
    if new.dataset_id <> old.dataset_id or new.user_id <> old.user_id
       or new.version_number <> old.version_number or new.upload_id <> old.upload_id then
        raise exception 'dataset version % cannot change its dataset, owner, number or upload id', old.id
            using errcode = 'AM004', constraint = 'dataset_versions_identity_immutable';
    end if;
    new.created_at := old.created_at;
    if new.status = old.status then
        new.processed_at := old.processed_at;
        return new;
    end if;
    if not ((old.status = 'pending' and new.status in ('processing', 'failed'))
            or (old.status = 'processing' and new.status in ('completed', 'failed'))) then
        raise exception 'dataset version % cannot move from % to %', old.id, old.status, new.status
            using errcode = 'AM003', constraint = 'dataset_versions_status_transition';
    end if;
    -- Never before the upload, whichever transaction began first.
    new.processed_at := case when new.status in ('completed', 'failed') then greatest(now(), old.created_at) end;
    return new;
end;
$$;
comment on function dataset_versions_check_transition() is
    'BEFORE INSERT/UPDATE on dataset_versions: enforces the processing state machine (AM003), freezes '
    'dataset, owner, number and upload id (AM004), and stamps created_at and processed_at.';

create trigger dataset_versions_check_transition before insert or update on dataset_versions
    for each row execute function dataset_versions_check_transition();
create trigger dataset_versions_advance_sequence after insert on dataset_versions
    for each row execute function dataset_versions_advance_sequence();

-- ==== Ingestion runs: state machine and stamps ====
alter table ingestion_jobs drop constraint ingestion_jobs_times_ordered;
-- Existing runs get the stamps the database now keeps (their last change is when they ended).
alter table ingestion_jobs disable trigger user;
update ingestion_jobs set started_at = coalesce(started_at, created_at)
 where status in ('running', 'completed', 'failed');
update ingestion_jobs set started_at = null where status in ('pending', 'queued');
update ingestion_jobs set completed_at = coalesce(completed_at, greatest(updated_at, started_at))
 where status in ('completed', 'failed', 'cancelled');
update ingestion_jobs set completed_at = null where status not in ('completed', 'failed', 'cancelled');
alter table ingestion_jobs enable trigger user;
alter table ingestion_jobs add constraint ingestion_jobs_times_ordered check (
        started_at >= created_at and completed_at >= coalesce(started_at, created_at));
comment on column ingestion_jobs.status is
    'Run state (type job_status); moves are checked by ingestion_jobs_status_transition.';
comment on column ingestion_jobs.created_at is 'When the run was requested (stamped by the database).';
comment on column ingestion_jobs.started_at is 'When the current attempt started (stamped by the database).';
comment on column ingestion_jobs.completed_at is 'When the run reached a terminal state (stamped by the database).';
-- Lifecycle (AM003 otherwise): pending -> queued | running | cancelled; queued -> running |
-- cancelled; running -> completed | failed | cancelled; running -> queued is a retry while
-- attempts remain. Unlike a job, a run may start straight from pending: nothing is charged on
-- queueing. The database stamps created_at, started_at and completed_at.
create or replace function ingestion_jobs_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if tg_op = 'INSERT' then
        if new.status not in ('pending', 'queued') then
            raise exception 'an ingestion run starts as pending or queued, not %', new.status
                using errcode = 'AM003', constraint = 'ingestion_jobs_status_transition';
        end if;
        new.created_at := now();
        new.started_at := null;
        new.completed_at := null;
        return new;
    end if;
    if new.dataset_version_id <> old.dataset_version_id then
        raise exception 'ingestion run % cannot move to another dataset version', old.id
            using errcode = 'AM004', constraint = 'ingestion_jobs_identity_immutable';
    end if;
    new.created_at := old.created_at;
    if new.status = old.status then
        new.started_at := old.started_at;
        new.completed_at := old.completed_at;
        return new;
    end if;
    if not ((old.status = 'pending' and new.status in ('queued', 'running', 'cancelled'))
            or (old.status = 'queued' and new.status in ('running', 'cancelled'))
            or (old.status = 'running' and new.status in ('completed', 'failed', 'cancelled'))
            or (old.status = 'running' and new.status = 'queued' and old.attempt < old.max_attempts)) then
        raise exception 'ingestion run % cannot move from % to %', old.id, old.status, new.status
            using errcode = 'AM003', constraint = 'ingestion_jobs_status_transition';
    end if;
    case new.status
        when 'queued' then
            new.started_at := null;
            new.completed_at := null;
            new.worker_id := null;
            new.heartbeat_at := null;
        when 'running' then  -- stamps never precede the one before (see jobs_check_transition)
            new.started_at := greatest(now(), old.created_at);
            new.completed_at := null;
            new.heartbeat_at := now();
        else
            new.started_at := old.started_at;
            new.completed_at := greatest(now(), old.started_at, old.created_at);
    end case;
    return new;
end;
$$;
comment on function ingestion_jobs_check_transition() is
    'BEFORE INSERT/UPDATE on ingestion_jobs: enforces the run state machine (AM003), keeps the run on '
    'its version (AM004), and stamps created_at, started_at and completed_at.';

create trigger ingestion_jobs_check_transition before insert or update on ingestion_jobs
    for each row execute function ingestion_jobs_check_transition();

-- ==== Jobs and nodes: stamps in order, settlement and rescue ====
-- Existing rows get the order the stamps now always have (a stamp is at least the one before it).
alter table jobs disable trigger user;
update jobs set queued_at = greatest(queued_at, created_at) where queued_at < created_at;
update jobs set started_at = greatest(started_at, queued_at, created_at)
 where started_at < coalesce(queued_at, created_at);
update jobs set completed_at = greatest(completed_at, started_at, queued_at, created_at)
 where completed_at < greatest(created_at, queued_at, started_at);
alter table jobs enable trigger user;
alter table job_nodes disable trigger user;
update job_nodes set started_at = greatest(started_at, created_at) where started_at < created_at;
update job_nodes set completed_at = greatest(completed_at, started_at, created_at)
 where completed_at < coalesce(started_at, created_at);
alter table job_nodes enable trigger user;
alter table jobs drop constraint jobs_times_ordered;
alter table jobs add constraint jobs_times_ordered check (
        queued_at >= created_at and started_at >= coalesce(queued_at, created_at)
        and completed_at >= greatest(created_at, queued_at, started_at));
alter table job_nodes drop constraint job_nodes_times_ordered;
alter table job_nodes add constraint job_nodes_times_ordered check (
        started_at >= created_at and completed_at >= coalesce(started_at, created_at));
comment on column jobs.created_at is 'Job creation time (stamped by the database).';
comment on column jobs.attempt is
    'Times a worker has claimed this job (counted by the database); the rescuer gives up at max_attempts.';
comment on column jobs.max_attempts is 'Claims allowed before a stalled job is failed instead of requeued; fixed once created.';
comment on column jobs.worker_id is 'Worker holding the current attempt (set by the claim, cleared by a requeue).';
comment on column job_nodes.created_at is 'Row creation time (stamped by the database).';
-- Lifecycle. Legal moves (anything else is SQLSTATE AM003, constraint jobs_status_transition):
--   pending -> queued | cancelled        queued -> running | cancelled
--   running -> completed | failed | cancelled
--   running -> queued  (requeue by the stall rescuer, only while attempt < max_attempts)
-- A job is inserted as pending or queued. The database stamps created_at, queued_at, started_at
-- and completed_at on every move, so they are always in that order, and keeps attempt (+1 per
-- claim) and worker_id (set by the claim); client-written values of those are ignored, so no
-- client can make a job unclaimable for every worker.
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

-- Credit policy: a job is charged credit_cost when it enters the queue for the first time
-- (insert as queued, or pending -> queued), and refunded in full, once, when it ends failed
-- or cancelled after being charged. A completed job keeps its charge; a requeue after a stall
-- charges nothing more. Both are ledger entries, so the ledger explains every balance, and an
-- owner without enough credits cannot queue (AM001 from the ledger). A definer: the rule holds
-- whoever moves the job (a worker acting for nobody sees no ledger rows of its own).
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

-- The queue. One statement picks the most urgent queued job, skipping rows other workers hold,
-- and marks it running; jobs_claimable_idx keeps this fast beside millions of finished jobs.
-- Not SECURITY DEFINER: only automl_worker may call it, and it reaches every user's queued jobs
-- through its own policies on jobs (110_security.sql).
create or replace function claim_jobs(worker text, how_many integer default 1) returns setof jobs
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    -- PL/pgSQL, not SQL: the statement's plan is cached for the session, not re-planned per call.
    return query
    update jobs j
       set status = 'running', worker_id = worker
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
    'SKIP LOCKED, marks them running for worker (the transition counts the attempt) and returns them. '
    'Concurrent callers never share a job.';

create or replace function rescue_stalled_jobs(stalled_after interval default '5 minutes')
returns table (job_id uuid, action text)
language plpgsql
security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    candidate record;
    j record;
begin
    if stalled_after < interval '1 second' then
        raise exception 'stalled_after must be at least 1 second, not %', stalled_after
            using errcode = 'invalid_parameter_value', constraint = 'rescue_stalled_jobs_interval';
    end if;
    for candidate in select id, user_id from jobs
                      where status = 'running' and heartbeat_at < now() - stalled_after
                      order by heartbeat_at
    loop
        -- Lock order: the owner's users row (failing refunds it), then the job; anything busy is
        -- left for the next run.
        perform from users u where u.id = candidate.user_id for no key update skip locked;
        continue when not found;
        select id, attempt, max_attempts into j from jobs
         where id = candidate.id and status = 'running' and heartbeat_at < now() - stalled_after
           for update skip locked;
        continue when not found;
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

-- Nodes: pending -> running -> success | failed, pending -> skipped (AM003 otherwise). The
-- database stamps created_at, started_at and completed_at.
create or replace function job_nodes_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if tg_op = 'INSERT' then
        if new.status <> 'pending' then
            raise exception 'a job node starts as pending, not %', new.status
                using errcode = 'AM003', constraint = 'job_nodes_status_transition';
        end if;
        new.created_at := now();
        new.started_at := null;
        new.completed_at := null;
        return new;
    end if;
    if new.job_id <> old.job_id or new.node_id <> old.node_id then
        raise exception 'job node % cannot move to another job or node id', old.id
            using errcode = 'AM004', constraint = 'job_nodes_identity_immutable';
    end if;
    new.created_at := old.created_at;
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
    if new.status = 'running' then  -- stamps never precede the one before (see jobs_check_transition)
        new.started_at := greatest(now(), old.created_at);
        new.completed_at := null;
    else
        new.started_at := old.started_at;
        new.completed_at := greatest(now(), old.started_at, old.created_at);
    end if;
    return new;
end;
$$;
comment on function job_nodes_check_transition() is
    'BEFORE INSERT/UPDATE on job_nodes: enforces the node status machine and stamps created_at / '
    'started_at / completed_at.';

-- ==== Lock order: the acting user's row before the rows a statement changes ====
create trigger datasets_lock_acting_user before delete on datasets
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
create trigger dataset_versions_lock_acting_user before update or delete on dataset_versions
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
create trigger workflows_lock_acting_user before update or delete on workflows
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
create trigger jobs_lock_acting_user before update on jobs
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
create trigger models_lock_acting_user before delete on models
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();

-- ==== Credits: payment references, one package rule, posting that moves only with its row ====
alter table credit_transactions alter column id drop default;
alter table credit_transactions add constraint credit_transactions_payment_only_purchases check (
        type = 'purchase' or (stripe_payment_id is null and package_id is null));
-- Every purchase carries its payment reference. NOT VALID: entries posted before migration 0002
-- may lack one, and the ledger is never rewritten; every entry since is checked.
alter table credit_transactions add constraint credit_transactions_purchase_payment
    check (type <> 'purchase' or stripe_payment_id is not null) not valid;
comment on column credit_transactions.id is
    'Primary key. No column default on purpose: the posting trigger draws one when the client gives none, '
    'and only a client-chosen id pays for the duplicate check.';
comment on column credit_transactions.created_at is 'Entry time (stamped by the database).';
-- Even with session_replication_role = replica (bulk loads, logical replication), which silences
-- ordinary triggers; pg_restore --disable-triggers still turns them off for a data-only restore.
alter table credit_transactions enable always trigger credit_transactions_immutable;
alter table credit_transactions enable always trigger credit_transactions_no_truncate;
comment on column credit_transactions.stripe_payment_id is
    'Stripe payment credited; required for purchases and unique, so a payment is credited once.';
-- Which tier may buy which package: written once, used by the posting trigger and the queries.
create or replace function credit_package_on_sale(p_restriction tier_restriction, p_is_active boolean, p_tier user_tier)
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

-- Runs first (triggers fire in name order), under row-level security, for an entry of another
-- user than the transaction acts for or one that creates credits: not a definer, so it sees
-- exactly the accounts the caller may see. The policies say the same, but only after the BEFORE
-- triggers have run; this refuses before the posting locks anything (another tenant's balance, a
-- payment id billing is about to credit). automl_billing sees every account; the owner
-- (settlement) bypasses it.
create or replace function credit_transactions_check_acting_user() returns trigger
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    if (new.type in ('purchase', 'adjustment') or new.stripe_payment_id is not null or new.package_id is not null)
       and not pg_has_role('automl_billing', 'usage') then
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
    'BEFORE INSERT on credit_transactions: refuses a duplicate of a client-chosen id or payment before '
    'anything moves, moves the user''s balance and entry counter in one UPDATE ... RETURNING on the '
    'locked user row, fills id, created_at, balance_after and entry_number, and checks the account, the '
    'job, the credit policy and the package.';

create trigger credit_transactions_acting_user before insert on credit_transactions
    for each row when (row_security_active('users') and (
        new.user_id is distinct from app_user_id() or new.type in ('purchase', 'adjustment')
        or new.stripe_payment_id is not null or new.package_id is not null))
    execute function credit_transactions_check_acting_user();

-- ==== Audit and database privileges ====
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
    'lifecycle stamps of jobs, nodes, versions and ingestion runs, counters, storage, version '
    'numbering, owner links); no rows when healthy. '
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
    -- The promise to users is 30 days to change their mind; only a superuser (tests, a DBA) goes lower.
    if retention < interval '30 days' and not (select r.rolsuper from pg_roles r where r.rolname = session_user) then
        raise exception 'retention must be at least 30 days, not %', retention
            using errcode = 'invalid_parameter_value', constraint = 'purge_soft_deleted_retention';
    end if;
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

-- Less ambient power (called by 110_security.sql). By default every role may create temporary
-- tables (which could shadow our names in an unpinned function), large objects (data outside
-- every table and policy) and take advisory locks (which the ledger uses for client-chosen keys).
-- The runtime roles need none of that. The temporary-table right is granted per database, and
-- CREATE DATABASE ... TEMPLATE and a plain pg_restore start from the default again, so it lives in
-- a function that migrations, the test databases and a restore all run (README, "Restoring a
-- dump"); the function rights (in pg_catalog) travel with copies and dumps.
create or replace function apply_database_privileges() returns void
language plpgsql
set search_path = pg_catalog, public, pg_temp as $$
begin
    execute format('revoke temporary on database %I from public', current_database());
    execute format('grant temporary on database %I to automl_owner', current_database());
end;
$$;
comment on function apply_database_privileges() is
    'Revokes the temporary-table right on this database from PUBLIC (a database privilege, which '
    'copies and plain restores reset). Run by migrations and after CREATE DATABASE ... TEMPLATE or a '
    'restore; needs the database owner or a superuser.';

-- ==== Security: ownership, grants, policies ====
do $$
declare
    statement text;
begin
    for statement in
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
revoke execute on all functions in schema public from public;
grant usage on schema public to automl_billing;
grant execute on function credit_package_on_sale(tier_restriction, boolean, user_tier) to automl_app, automl_readonly;
grant execute on function app_user_id(), credit_package_on_sale(tier_restriction, boolean, user_tier)
    to automl_billing;
grant execute on function user_id_for_oauth(oauth_provider, text) to automl_app;
grant select on tier_limits, credit_packages, tutorials to automl_billing;
grant insert (oauth_provider, oauth_id, email_verified) on users to automl_app;
grant select, update (tier) on users to automl_billing;
grant select, insert on credit_transactions to automl_billing;
revoke update on jobs, job_nodes from automl_app;
-- The queue tables: column-level UPDATE only (what the queries change), so no runtime role may
-- LOCK TABLE them, which table-level UPDATE or DELETE would allow whatever the policies say.
grant update (status, priority, credit_cost, celery_task_id, results, error_message, error_traceback)
    on jobs to automl_app;
grant update (worker_id) on jobs to automl_worker;
grant update (status, output_data, error_message) on job_nodes to automl_app;
create policy users_billing_read on users for select to automl_billing using (true);
create policy users_billing_update on users for update to automl_billing using (true) with check (true);
create policy credit_transactions_billing_read on credit_transactions for select to automl_billing using (true);
create policy credit_transactions_billing_insert on credit_transactions for insert to automl_billing
    with check (type in ('purchase', 'adjustment'));
drop policy credit_transactions_tenant_insert on credit_transactions;
create policy credit_transactions_tenant_insert on credit_transactions for insert to automl_app
    with check (user_id = (select app_user_id()) and type in ('consumption', 'refund')
                and stripe_payment_id is null and package_id is null);
comment on policy users_billing_read on users is 'automl_billing reads every account: it credits any of them.';
comment on policy users_billing_update on users is
    'automl_billing changes any account''s tier (its column privilege is tier alone).';
comment on policy credit_transactions_tenant_insert on credit_transactions is
    'automl_app posts only for app_user_id(), and only consumption and refund entries (which the '
    'credit policy then checks against the job): it creates no credits.';
comment on policy credit_transactions_billing_read on credit_transactions is 'automl_billing reads every entry.';
comment on policy credit_transactions_billing_insert on credit_transactions is
    'automl_billing posts purchases (each with its payment reference) and adjustments, for any account.';

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
