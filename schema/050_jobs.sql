-- 050_jobs.sql — job executions and the status of each node inside them.
--
-- Owns: jobs (one execution of a workflow snapshot; also the work queue) and job_nodes (one
-- row per node of the snapshot's graph). A job's snapshot belongs to the job's owner
-- (composite key); a snapshot cannot be deleted while a job references it.

-- The queue's hot path writes jobs twice per job (claim, completion). PostgreSQL reads every CHECK
-- of a table anew for each statement that writes it (~17% of a claim + completion), so the rules
-- on one column are domains, checked only when that column is written; results' shape is checked by
-- jobs_check_transition when results is written, and the rules relating columns (attempt within
-- max_attempts, stamps in order) hold because that trigger alone writes attempt and the stamps. The
-- constraint names are the ones the rules always had.
create domain job_credit_cost as integer
    constraint jobs_credit_cost_nonnegative check (value >= 0);
comment on domain job_credit_cost is 'Credits a job costs: zero or more.';
create domain job_priority as integer
    constraint jobs_priority_range check (value between -1000 and 1000);
comment on domain job_priority is 'Queue priority of a job: -1000..1000, higher runs first.';
create domain job_max_attempts as integer
    constraint jobs_attempts_range check (value >= 1);
comment on domain job_max_attempts is 'Claims a job allows: at least one.';
create domain job_task_id as text
    constraint jobs_celery_task_id_length check (length(value) between 1 and 255);
comment on domain job_task_id is 'An external runner''s task id: 1-255 characters.';
create domain job_idempotency_key as text
    constraint jobs_idempotency_key_length check (length(value) between 1 and 200);
comment on domain job_idempotency_key is 'A client''s idempotency key for a submission: 1-200 characters.';
create domain worker_name as text
    constraint jobs_worker_id_length check (length(value) between 1 and 200);
comment on domain worker_name is 'A worker''s id: 1-200 characters.';

create table jobs (
    id                   uuid primary key default gen_random_uuid(),
    user_id              uuid not null references users (id) on delete cascade,
    workflow_snapshot_id uuid not null,
    status               job_status not null default 'pending',
    credit_cost          job_credit_cost not null default 0,
    priority             job_priority not null default 0,
    celery_task_id       job_task_id,
    results              bounded_jsonb,
    error_message        error_text,
    error_traceback      traceback_text,
    idempotency_key      job_idempotency_key,
    attempt              integer not null default 0,
    max_attempts         job_max_attempts not null default 3,
    worker_id            worker_name,
    heartbeat_at         timestamptz,
    queued_at            timestamptz,
    created_at           timestamptz not null default now(),
    started_at           timestamptz,
    completed_at         timestamptz,
    updated_at           timestamptz not null default now(),
    constraint jobs_snapshot_fkey foreign key (workflow_snapshot_id, user_id)
        references workflow_snapshots (id, user_id),
    constraint jobs_id_user_key unique (id, user_id)
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
comment on column jobs.attempt is
    'Times a worker has claimed this job (counted by the database); the rescuer gives up at max_attempts.';
comment on column jobs.max_attempts is 'Claims allowed before a stalled job is failed instead of requeued; fixed once created.';
comment on column jobs.worker_id is 'Worker holding the current attempt (set by the claim, cleared by a requeue).';
comment on column jobs.heartbeat_at is 'Last sign of life from that worker; a stale beat lets the rescuer requeue the job.';
comment on column jobs.queued_at is 'When the job entered the queue (latest time, after a requeue).';
comment on column jobs.created_at is 'Job creation time (stamped by the database).';
comment on column jobs.started_at is 'When the current attempt started running.';
comment on column jobs.completed_at is 'When the job reached a terminal state.';
comment on column jobs.updated_at is 'Last change of this row (set by trigger).';

create unique index jobs_idempotency_key on jobs (user_id, idempotency_key) where idempotency_key is not null;
create index jobs_user_created_idx on jobs (user_id, created_at desc, id desc);
create index jobs_snapshot_idx on jobs (workflow_snapshot_id);
create index jobs_claimable_idx on jobs (priority desc, queued_at, id) where status = 'queued';
-- Keyed by worker, not heartbeat: a heartbeat then changes no indexed column, so PostgreSQL writes
-- it as a HOT update (no index entries) however often workers beat.
create index jobs_running_idx on jobs (worker_id) where status = 'running';
comment on index jobs_idempotency_key is
    'One job per client idempotency key and user; partial, so keyless jobs cost this index nothing.';
comment on index jobs_user_created_idx is 'A user''s jobs newest first (keyset pages); also the user_id foreign key index.';
comment on index jobs_snapshot_idx is 'Foreign key index: deleting a snapshot checks for jobs quickly.';
comment on index jobs_claimable_idx is
    'Only queued jobs, in claim order: claiming stays fast however many finished jobs the table holds.';
comment on index jobs_running_idx is 'Running jobs (by worker): what the stall rescuer scans, and a worker''s jobs.';

create table job_nodes (
    id            uuid primary key default gen_random_uuid(),
    job_id        uuid not null,
    user_id       uuid not null,
    node_id       text not null,
    node_type     node_type,
    status        node_status not null default 'pending',
    output_data   bounded_jsonb,
    error_message error_text,
    started_at    timestamptz,
    completed_at  timestamptz,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint job_nodes_job_fkey foreign key (job_id, user_id) references jobs (id, user_id) on delete cascade,
    constraint job_nodes_node_key unique (job_id, node_id),
    constraint job_nodes_node_id_length check (length(node_id) between 1 and 200),
    constraint job_nodes_output_shape check (output_data is null or jsonb_is_object(output_data)),
    constraint job_nodes_times_ordered check (
        started_at >= created_at and completed_at >= coalesce(started_at, created_at))
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
comment on column job_nodes.created_at is 'Row creation time (stamped by the database).';
comment on column job_nodes.updated_at is 'Last change of this row (set by trigger).';

create index job_nodes_user_idx on job_nodes (user_id);
comment on index job_nodes_user_idx is 'Owner filter; job_nodes_node_key already serves a job''s nodes.';

create function job_nodes_fill_owner() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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
-- A job is inserted as pending or queued. The database stamps created_at, queued_at, started_at
-- and completed_at on every move, so they are always in that order, and keeps attempt (+1 per
-- claim) and worker_id (set by the claim); client-written values of those are ignored, so no
-- client can make a job unclaimable for every worker.
create function jobs_check_transition() returns trigger
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
comment on function jobs_check_transition() is
    'BEFORE INSERT/UPDATE on jobs: enforces the status machine (AM003), freezes snapshot, attempts allowed '
    'and the charged or queued price (AM004), checks the shape of results (jobs_results_shape), stamps '
    'created_at / queued_at / started_at / completed_at and updated_at (unless the update changes nothing), '
    'and keeps attempt and worker_id.';

-- Credit policy: a job is charged credit_cost when it enters the queue for the first time
-- (insert as queued, or pending -> queued), unless its owner's service already posted that
-- consumption entry while it was pending (then its cost is frozen, and queueing charges nothing
-- more). It is refunded in full, once, when it ends failed or cancelled after being charged. A
-- completed job keeps its charge; a requeue after a stall charges nothing more. Both are ledger
-- entries, so the ledger explains every balance, and an owner without enough credits cannot queue
-- (AM001 from the ledger). A definer: the rule holds whoever moves the job (a worker acting for
-- nobody sees no ledger rows of its own).
create function jobs_settle_credits() returns trigger
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
declare
    charged integer;
begin
    if new.status = 'queued' and (tg_op = 'INSERT' or old.status = 'pending') and new.credit_cost > 0 then
        if tg_op = 'UPDATE' and exists (select from credit_transactions c
                                        where c.job_id = new.id and c.type = 'consumption') then
            return null;  -- charged while pending (see credit_transactions_job_policy)
        end if;
        insert into credit_transactions (user_id, type, amount, description, job_id)
        values (new.user_id, 'consumption', -new.credit_cost, 'job ' || new.id, new.id);
    elsif tg_op = 'UPDATE' and new.status in ('failed', 'cancelled') then
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
    'AFTER INSERT/UPDATE OF status on jobs: charges credit_cost on first queueing (unless charged while '
    'pending) and refunds the charge once when the job ends failed or cancelled. Completed jobs keep it.';

create trigger jobs_check_transition before insert or update on jobs
    for each row execute function jobs_check_transition();
-- WHEN clauses keep the function off the hot path: most transitions move no credits.
create trigger jobs_settle_credits_on_insert after insert on jobs
    for each row when (new.status = 'queued' and new.credit_cost > 0)
    execute function jobs_settle_credits();
create trigger jobs_settle_credits_on_update after update of status on jobs
    for each row when (new.status in ('queued', 'failed', 'cancelled') and old.status <> new.status)
    execute function jobs_settle_credits();
-- Lock order: a status change may charge or refund the owner; take the users row first.
create trigger jobs_lock_acting_user before update on jobs
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
create trigger jobs_owner_immutable before update of user_id on jobs
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- The queue. One statement picks the most urgent queued job, skipping rows other workers hold,
-- and marks it running; jobs_claimable_idx keeps this fast beside millions of finished jobs.
-- Not SECURITY DEFINER: only automl_worker may call it, and it reaches every user's queued jobs
-- through its own policies on jobs (post/920_row_security.sql).
create function claim_jobs(worker text, how_many integer default 1) returns setof jobs
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

create function heartbeat_job(job uuid, worker text) returns boolean
language sql
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
create function job_nodes_check_transition() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
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

-- A definer, so the rule holds whoever fails the node.
create function job_nodes_skip_downstream() returns trigger
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
