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
    metrics         bounded_jsonb not null default '{}',
    hyperparameters bounded_jsonb not null default '{}',
    s3_path         object_path,
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
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
-- Lock order: deleting a model moves the owner's counter.
create trigger models_lock_acting_user before delete on models
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
create trigger models_owner_immutable before update of user_id on models
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
