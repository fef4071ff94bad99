-- Rolls back 0008: everything back into public, pinned to public, the audit and the database's
-- settings as 0007 left them.
-- squawk-ignore-file ban-drop-function, ban-drop-schema
set local lock_timeout = '5s';
set local statement_timeout = '5min';
set local search_path = automl, public;

do $$ begin execute format('alter database %I reset search_path', current_database()); end $$;

-- Functions first (their signatures name the types while both are still where they were), then
-- tables (with their indexes, constraints, triggers, policies and identity sequences) and views, then
-- enums, domains and composite types (a table's row type and an array type follow their owner).
do $$
declare
    statement text;
begin
    for statement in
        select format('alter function %s set schema public', p.oid::regprocedure)
          from pg_proc p
         where p.pronamespace = 'automl'::regnamespace
    loop
        execute statement;
    end loop;
    for statement in
        select format('alter table automl.%I set schema public', c.relname)
          from pg_class c
         where c.relnamespace = 'automl'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
           and c.relname not like '\_yoyo%' and c.relname <> 'yoyo_lock'
           and not (c.relkind = 'S' and exists (select from pg_depend d
                                                 where d.classid = 'pg_class'::regclass and d.objid = c.oid
                                                   and d.refclassid = 'pg_class'::regclass
                                                   and d.deptype in ('a', 'i')))
    loop
        execute statement;
    end loop;
    for statement in
        select format('alter %s automl.%I set schema public', case t.typtype when 'd' then 'domain' else 'type' end,
                      t.typname)
          from pg_type t
         where t.typnamespace = 'automl'::regnamespace and t.typtype in ('e', 'd', 'c')
           and not exists (select from pg_class c where c.reltype = t.oid and c.relkind <> 'c')
    loop
        execute statement;
    end loop;
end;
$$;

do $$
declare
    signature regprocedure;
begin
    for signature in
        select p.oid::regprocedure from pg_proc p
         where p.pronamespace = 'public'::regnamespace
           and 'search_path=pg_catalog, automl, pg_temp' = any (p.proconfig)
    loop
        execute format('alter function %s set search_path = pg_catalog, public, pg_temp', signature);
    end loop;
end;
$$;

set local search_path = public;

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
comment on function check_integrity() is
    'DBA audit: one row per broken invariant (ledger chain and balances, credit policy per job, '
    'lifecycle stamps of jobs, nodes, versions and ingestion runs, counters, storage, version '
    'numbering, owner links); no rows when healthy. '
    'Recomputes from the base rows, so it notices drift written behind the triggers'' back.';
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
drop function owner_link_violations();
grant usage on schema public to automl_app, automl_billing, automl_readonly;

drop schema automl;
