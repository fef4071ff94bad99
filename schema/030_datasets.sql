-- 030_datasets.sql — datasets, their versions, profiles and ingestion jobs.
--
-- Owns: datasets (the container), dataset_versions (one uploaded file each, numbered per
-- dataset by the database), dataset_profiles (ydata-profiling style statistics of a version),
-- ingestion_jobs (the processing run of an upload). Children carry user_id, filled from their
-- parent and tied to it by composite foreign keys, so no row can point across owners.
-- Deleting a dataset cascades to all of them. Versions and ingestion runs have state machines
-- (AM003 on an illegal move) whose timestamps the database stamps.

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

create function datasets_refuse_sequence_on_insert() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
    s3_path             object_path,
    parquet_size_bytes  bigint,
    row_count           integer,
    column_count        integer,
    columns_metadata    bounded_jsonb,
    status              version_status not null default 'pending',
    content_sha256      text,
    error_message       error_text,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    processed_at        timestamptz,  -- after updated_at: migration 0002 added it
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
    constraint dataset_versions_completed_has_output check (
        status <> 'completed' or (s3_path is not null and parquet_size_bytes is not null
                                  and row_count is not null and column_count is not null)),
    constraint dataset_versions_sha256_format check (content_sha256 ~ '^[0-9a-f]{64}$'),
    constraint dataset_versions_times_ordered check (processed_at >= created_at)
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
comment on column dataset_versions.status is
    'Processing state (see type version_status); moves are checked by dataset_versions_status_transition.';
comment on column dataset_versions.content_sha256 is
    'Hex SHA-256 of the uploaded bytes, so clients can skip a new version when the content is unchanged (as DVC and W&B do).';
comment on column dataset_versions.error_message is 'Why processing failed, when status is failed.';
comment on column dataset_versions.created_at is 'Upload time (stamped by the database).';
comment on column dataset_versions.processed_at is
    'When processing ended, completed or failed (stamped by the database); NULL before.';
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

-- Numbering. The BEFORE trigger is not a definer: it sees (and locks) only a dataset the caller
-- may see, so naming another user's dataset touches nothing of theirs. It takes the owner's
-- users row, then the dataset row (the lock order), and picks the next number; the AFTER
-- trigger moves the dataset's sequence only for a row really inserted, so an INSERT that
-- ON CONFLICT skips leaves no gap. Reading max(version_number) too keeps a multi-row INSERT
-- into one dataset numbering 1, 2, 3 (a BEFORE trigger sees the rows its statement inserted).
create function dataset_versions_assign_number() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create function dataset_versions_advance_sequence() returns trigger
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
create function dataset_versions_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create trigger dataset_versions_assign_number before insert on dataset_versions
    for each row execute function dataset_versions_assign_number();
create trigger dataset_versions_check_transition before insert or update on dataset_versions
    for each row execute function dataset_versions_check_transition();
create trigger dataset_versions_advance_sequence after insert on dataset_versions
    for each row execute function dataset_versions_advance_sequence();
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
    columns            bounded_jsonb not null default '{}',
    correlations       bounded_jsonb,
    alerts             bounded_jsonb not null default '[]',
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
    constraint dataset_profiles_profiler_length check (length(btrim(profiler)) between 1 and 100),
    constraint dataset_profiles_profiler_version_length check (length(btrim(profiler_version)) between 1 and 100)
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
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
    error_message      error_text,
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
    constraint ingestion_jobs_times_ordered check (
        started_at >= created_at and completed_at >= coalesce(started_at, created_at))
);
comment on table ingestion_jobs is
    'Processing run of an uploaded version (parse, convert to Parquet, profile), shaped like an '
    'Airflow/Prefect task run: state, progress, attempts, worker and heartbeat.';
comment on column ingestion_jobs.id is 'Primary key.';
comment on column ingestion_jobs.dataset_version_id is 'The version being ingested.';
comment on column ingestion_jobs.user_id is 'Owner, copied from the version on insert; tied to it by the composite key.';
comment on column ingestion_jobs.status is
    'Run state (type job_status); moves are checked by ingestion_jobs_status_transition.';
comment on column ingestion_jobs.stage is 'Step in progress: upload, parse, convert or profile; NULL before the first.';
comment on column ingestion_jobs.progress_percent is 'Progress shown to the user, 0-100.';
comment on column ingestion_jobs.rows_processed is 'Rows processed so far, for progress on large files.';
comment on column ingestion_jobs.bytes_processed is 'Bytes read so far, for progress before rows are known.';
comment on column ingestion_jobs.attempt is 'Attempts started so far (Airflow try_number).';
comment on column ingestion_jobs.max_attempts is 'Attempts allowed before the run fails for good.';
comment on column ingestion_jobs.worker_id is 'Worker running the attempt, to trace and rescue it.';
comment on column ingestion_jobs.heartbeat_at is 'Last sign of life from the worker; a stale beat marks the run as stalled.';
comment on column ingestion_jobs.error_message is 'Why the run failed.';
comment on column ingestion_jobs.created_at is 'When the run was requested (stamped by the database).';
comment on column ingestion_jobs.started_at is 'When the current attempt started (stamped by the database).';
comment on column ingestion_jobs.completed_at is 'When the run reached a terminal state (stamped by the database).';
comment on column ingestion_jobs.updated_at is 'Last change of this row (set by trigger).';

create index ingestion_jobs_version_idx on ingestion_jobs (dataset_version_id, created_at desc);
create index ingestion_jobs_user_created_idx on ingestion_jobs (user_id, created_at desc);
create index ingestion_jobs_active_idx on ingestion_jobs (created_at) where status in ('queued', 'running');
comment on index ingestion_jobs_version_idx is 'A version''s runs newest first; also the foreign key index.';
comment on index ingestion_jobs_user_created_idx is 'A user''s ingestion runs newest first.';
comment on index ingestion_jobs_active_idx is 'Runs a worker may pick up or a rescuer must watch.';

-- Lifecycle (AM003 otherwise): pending -> queued | running | cancelled; queued -> running |
-- cancelled; running -> completed | failed | cancelled; running -> queued is a retry while
-- attempts remain. Unlike a job, a run may start straight from pending: nothing is charged on
-- queueing. The database stamps created_at, started_at and completed_at.
create function ingestion_jobs_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create trigger ingestion_jobs_fill_owner before insert on ingestion_jobs
    for each row execute function fill_owner_from_dataset_version();
create trigger ingestion_jobs_check_transition before insert or update on ingestion_jobs
    for each row execute function ingestion_jobs_check_transition();
create trigger ingestion_jobs_set_updated_at before update on ingestion_jobs
    for each row execute function set_updated_at();

-- Usage counters and quotas (users_adjust_usage owns the arithmetic and the limits).
create function datasets_count_usage() returns trigger
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
security definer set search_path = pg_catalog, automl, pg_temp as $$
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

-- Lock order: deleting a dataset (and, by cascade, its versions) or changing a version's sizes
-- moves the owner's counters; take the users row before the rows themselves.
create trigger datasets_lock_acting_user before delete on datasets
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
create trigger dataset_versions_lock_acting_user before update or delete on dataset_versions
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();

create trigger datasets_owner_immutable before update of user_id on datasets
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
create trigger dataset_profiles_owner_immutable before update of user_id on dataset_profiles
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
create trigger ingestion_jobs_owner_immutable before update of user_id on ingestion_jobs
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
