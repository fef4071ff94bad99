-- 0009 the queue's hot path, measured (issue 10):
-- * the lock-order triggers (lock_acting_user) test the acting user in their WHEN by reading the
--   setting, not by calling app_user_id(): a WHEN clause is not planned, so a SQL function there is
--   not inlined, and PostgreSQL planned its body on every statement (~15% of a claim + completion);
-- * jobs_check_transition tells a claim and a completion apart from the other moves in fewer
--   steps (one test for the frozen terms and results, the no-op comparison only when the status
--   stays), with the same rules, stamps and errors.
-- depends: 0008.project-schema
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
    -- The hot moves (a claim, a completion) are told apart from the rest by one expression each:
    -- the frozen terms and results first, then the status.
    if new.workflow_snapshot_id <> old.workflow_snapshot_id or new.max_attempts <> old.max_attempts
       or new.credit_cost <> old.credit_cost or new.results is distinct from old.results then
        if new.results is distinct from old.results and not jsonb_is_object(coalesce(new.results, '{}')) then
            raise check_violation using message = 'a job''s results are a JSON object',
                constraint = 'jobs_results_shape';
        end if;
        if new.workflow_snapshot_id <> old.workflow_snapshot_id or new.max_attempts <> old.max_attempts
           or (new.credit_cost <> old.credit_cost
               and (old.status <> 'pending'
                    or exists (select from credit_transactions c
                               where c.job_id = old.id and c.type = 'consumption'))) then
            raise exception 'job %: snapshot, attempts allowed, and credit_cost once charged or queued, cannot change',
                old.id using errcode = 'AM004', constraint = 'jobs_terms_immutable';
        end if;
    end if;
    if new.status = old.status then
        if new is not distinct from old then
            return new;  -- nothing changes (a retried submission locking the first job): no stamp either
        end if;
        new.updated_at := now();
        new.created_at := old.created_at;
        new.attempt := old.attempt;
        new.queued_at := old.queued_at;
        new.started_at := old.started_at;
        new.completed_at := old.completed_at;
        new.worker_id := old.worker_id;
        return new;
    end if;
    -- now() is when this transaction began, which may precede a concurrent transaction's stamp
    -- on the same job (a rescuer's requeue, say): each stamp is at least the one before it.
    case
        when old.status = 'queued' and new.status = 'running' then
            new.started_at := greatest(now(), old.queued_at, old.created_at);
            new.completed_at := null;
            new.heartbeat_at := now();
            new.attempt := old.attempt + 1;  -- a claim; queued jobs always have an attempt left
        when old.status = 'running' and new.status in ('completed', 'failed', 'cancelled') then
            new.started_at := old.started_at;
            new.completed_at := greatest(now(), old.started_at, old.queued_at, old.created_at);
            new.worker_id := old.worker_id;
            new.attempt := old.attempt;
        when (old.status = 'pending' and new.status = 'queued')
             or (old.status = 'running' and new.status = 'queued' and old.attempt < old.max_attempts) then
            new.queued_at := greatest(now(), old.created_at);
            new.started_at := null;
            new.completed_at := null;
            new.worker_id := null;
            new.heartbeat_at := null;
            new.attempt := old.attempt;
            new.created_at := old.created_at;
            new.updated_at := now();
            return new;
        when old.status in ('pending', 'queued') and new.status = 'cancelled' then
            new.started_at := old.started_at;
            new.completed_at := greatest(now(), old.started_at, old.queued_at, old.created_at);
            new.worker_id := old.worker_id;
            new.attempt := old.attempt;
        when new.status is null then
            return new;  -- refused by status's NOT NULL (23502), as for any other column
        else
            raise exception 'job % cannot move from % to %', old.id, old.status, new.status
                using errcode = 'AM003', constraint = 'jobs_status_transition';
    end case;
    new.queued_at := old.queued_at;
    new.created_at := old.created_at;
    new.updated_at := now();
    return new;
end;
$$;

drop trigger datasets_lock_acting_user on datasets;
create trigger datasets_lock_acting_user before delete on datasets
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
drop trigger dataset_versions_lock_acting_user on dataset_versions;
create trigger dataset_versions_lock_acting_user before update or delete on dataset_versions
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
drop trigger workflows_lock_acting_user on workflows;
create trigger workflows_lock_acting_user before update or delete on workflows
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
drop trigger jobs_lock_acting_user on jobs;
create trigger jobs_lock_acting_user before update on jobs
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
drop trigger models_lock_acting_user on models;
create trigger models_lock_acting_user before delete on models
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
