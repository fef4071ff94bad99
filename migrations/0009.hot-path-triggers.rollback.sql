-- 0009 rollback: jobs_check_transition and the lock-order triggers' WHEN as 0008 left them.
set local search_path = automl, public;
set local lock_timeout = '5s';
set local statement_timeout = '5min';

create or replace function jobs_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
        if not jsonb_is_object(coalesce(new.results, '{}')) then
            raise check_violation using message = 'a job''s results are a JSON object',
                constraint = 'jobs_results_shape';
        end if;
        return new;
    end if;
    if new is not distinct from old then
        return new;  -- nothing changes (a retried submission locking the first job): no stamp either
    end if;
    if new.results is distinct from old.results and not jsonb_is_object(coalesce(new.results, '{}')) then
        raise check_violation using message = 'a job''s results are a JSON object', constraint = 'jobs_results_shape';
    end if;

    if new.workflow_snapshot_id <> old.workflow_snapshot_id or new.max_attempts <> old.max_attempts
       or (new.credit_cost <> old.credit_cost
           and (old.status <> 'pending'
                or exists (select from credit_transactions c where c.job_id = old.id and c.type = 'consumption'))) then
        raise exception 'job %: snapshot, attempts allowed, and credit_cost once charged or queued, cannot change',
            old.id using errcode = 'AM004', constraint = 'jobs_terms_immutable';
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

drop trigger datasets_lock_acting_user on datasets;
create trigger datasets_lock_acting_user before delete on datasets
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
drop trigger dataset_versions_lock_acting_user on dataset_versions;
create trigger dataset_versions_lock_acting_user before update or delete on dataset_versions
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
drop trigger workflows_lock_acting_user on workflows;
create trigger workflows_lock_acting_user before update or delete on workflows
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
drop trigger jobs_lock_acting_user on jobs;
create trigger jobs_lock_acting_user before update on jobs
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
drop trigger models_lock_acting_user on models;
create trigger models_lock_acting_user before delete on models
    for each statement when (pg_trigger_depth() = 0 and app_user_id() is not null)
    execute function lock_acting_user();
