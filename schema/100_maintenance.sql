-- 100_maintenance.sql — retention and the DBA's audit.
--
-- Owns: purge_soft_deleted() (30-day retention of soft-deleted workflows and accounts) and
-- check_integrity() (one row per broken invariant; none on a healthy database). Both span
-- users, so they are maintenance entry points, not tenant queries.

create function purge_soft_deleted(retention interval default '30 days')
returns table (item text, removed bigint)
language plpgsql as $$
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
language sql stable as $$
    -- Balance, entry counter and last entry agree with the ledger.
    select 'users.credit_balance = ledger', u.id::text,
           format('balance %s / last_entry_number %s, but ledger sums to %s over %s entries, last balance_after %s',
                  u.credit_balance, u.last_entry_number, l.total, l.entries, l.last_balance)
      from users u
      cross join lateral (
          select coalesce(sum(c.amount), 0) as total, count(*) as entries,
                 coalesce((array_agg(c.balance_after order by c.entry_number desc))[1], 0) as last_balance
            from credit_transactions c where c.user_id = u.id) l
     where u.credit_balance <> l.total or u.last_entry_number <> l.entries or u.credit_balance <> l.last_balance
    union all
    -- Each entry is numbered 1, 2, 3... and its balance_after is the running sum.
    select 'credit_transactions chain', t.id::text,
           format('entry %s of user %s: expected number %s and balance_after %s, found %s',
                  t.entry_number, t.user_id, t.position, t.running, t.balance_after)
      from (select c.*, row_number() over w as position, sum(c.amount) over w as running
              from credit_transactions c
            window w as (partition by c.user_id order by c.entry_number)) t
     where t.entry_number <> t.position or t.balance_after <> t.running
    union all
    -- Refunds never exceed the job's consumption; a live account's charged job is its own.
    select 'credit_transactions job rules', c.job_id::text,
           format('job consumed %s, refunded %s, job owner %s, entry owner %s',
                  -sum(c.amount) filter (where c.type = 'consumption'),
                  sum(c.amount) filter (where c.type = 'refund'), min(j.user_id::text), min(c.user_id::text))
      from credit_transactions c
      join users u on u.id = c.user_id
      left join jobs j on j.id = c.job_id
     where c.job_id is not null
     group by c.job_id
    having coalesce(sum(c.amount) filter (where c.type = 'refund'), 0)
               > coalesce(-sum(c.amount) filter (where c.type = 'consumption'), 0)
        or bool_or(u.purged_at is null and (j.id is null or j.user_id <> c.user_id))
    union all
    -- Jobs are charged by the policy: credit_cost once when queued, refunded once if failed or cancelled.
    select 'jobs credits follow policy', j.id::text,
           format('status %s, credit_cost %s, charged %s, refunded %s', j.status, j.credit_cost,
                  coalesce(-c.consumed, 0), coalesce(c.refunded, 0))
      from jobs j
      left join lateral (
          select sum(x.amount) filter (where x.type = 'consumption') as consumed,
                 sum(x.amount) filter (where x.type = 'refund') as refunded
            from credit_transactions x where x.job_id = j.id) c on true
     where (c.consumed is not null and -c.consumed <> j.credit_cost)
        or (j.status = 'pending' and c.consumed is not null)
        or (j.status in ('queued', 'running', 'completed') and j.credit_cost > 0 and c.consumed is null)
        or (j.status in ('queued', 'running', 'completed') and c.refunded is not null)
        or (j.status in ('failed', 'cancelled') and coalesce(-c.consumed, 0) <> coalesce(c.refunded, 0))
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
                  u.dataset_count, d.n, u.workflow_count, w.n, u.model_count, m.n, u.storage_used_bytes, s.bytes)
      from users u
      cross join lateral (select count(*) as n from datasets x where x.user_id = u.id) d
      cross join lateral (select count(*) as n from workflows x where x.user_id = u.id and not x.is_deleted) w
      cross join lateral (select count(*) as n from models x where x.user_id = u.id) m
      cross join lateral (
          select coalesce(sum(v.original_size_bytes + coalesce(v.parquet_size_bytes, 0)), 0) as bytes
            from dataset_versions v where v.user_id = u.id) s
     where u.dataset_count <> d.n or u.workflow_count <> w.n or u.model_count <> m.n
        or u.storage_used_bytes <> s.bytes
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
