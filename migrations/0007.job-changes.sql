-- 0007 who may change a job, after the review of 0006 (issue 10):
-- * a consumption entry posted for a pending job writes the job row, so a transaction whose
--   snapshot predates the charge (REPEATABLE READ, SERIALIZABLE) cannot cancel the job unrefunded or
--   reprice it: it fails with 40001;
-- * an update of a job that changes nothing (a retried submit_job locking the first job) stamps
--   nothing either;
-- * check_integrity() accepts a pending job charged its credit_cost (legal since 0006);
-- * automl_worker updates only queued and running jobs of other users: a pending job (whose price
--   may still change) is its owner's alone.
set local lock_timeout = '5s';
set local statement_timeout = '5min';

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

comment on function jobs_check_transition() is
    'BEFORE INSERT/UPDATE on jobs: enforces the status machine (AM003), freezes snapshot, attempts allowed '
    'and the charged or queued price (AM004), checks the shape of results (jobs_results_shape), stamps '
    'created_at / queued_at / started_at / completed_at and updated_at (unless the update changes nothing), '
    'and keeps attempt and worker_id.';

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
    -- Jobs are charged by the policy: credit_cost once when queued (or while pending, by the owner's
    -- service), refunded once if failed or cancelled.
    select 'jobs credits follow policy', j.id::text,
           format('status %s, credit_cost %s, charged %s, refunded %s', j.status, j.credit_cost,
                  coalesce(jl.consumed, 0), coalesce(jl.refunded, 0))
      from jobs j
      left join job_ledger jl on jl.job_id = j.id and jl.user_id = j.user_id
     where (jl.consumed is not null and jl.consumed <> j.credit_cost)
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
      from (select 'credit_transactions' as tbl, c.id, 'account missing' as detail
              from credit_transactions c left join users u on u.id = c.user_id
             where u.id is null
            union all
            select 'dataset_versions', v.id, 'dataset owner differs or dataset missing'
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

drop policy jobs_worker_update on jobs;
create policy jobs_worker_update on jobs for update to automl_worker
    using (status in ('queued', 'running')) with check (true);
comment on policy jobs_worker_update on jobs is
    'automl_worker claims, heartbeats and finishes any user''s queued or running job; a pending job '
    'is its owner''s alone (its price may still change).';
