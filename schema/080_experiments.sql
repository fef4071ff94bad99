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
    tags           bounded_jsonb not null default '{}',
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
    params        bounded_jsonb not null default '{}',
    metrics       bounded_jsonb not null default '{}',
    tags          bounded_jsonb not null default '{}',
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
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
