-- 100_maintenance.sql — retention and the DBA's audit.
--
-- Owns: purge_soft_deleted() (30-day retention of soft-deleted workflows and accounts),
-- check_integrity() (one row per broken invariant; none on a healthy database; its owner-link part,
-- owner_link_violations(), finds the tenant tables in the catalog) and
-- apply_database_privileges() (the database-level part of the security model). They span
-- users, so they are maintenance entry points, not tenant queries.

create function purge_soft_deleted(retention interval default '30 days')
returns table (item text, removed bigint)
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
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

-- The owner-link audit, driven by the catalog: every table of the schema with a user_id column is
-- checked, so a tenant table added by a later migration is audited without any change here.
create function owner_link_violations()
returns table (invariant text, subject text, detail text)
language plpgsql stable
security definer set search_path = pg_catalog, automl, pg_temp as $$
declare
    tenant record;
    link record;
    subject_expr text;
begin
    for tenant in
        select c.oid::regclass as tbl, c.relname,
               exists (select from pg_attribute a
                        where a.attrelid = c.oid and a.attname = 'id' and not a.attisdropped) as has_id,
               (select a.attnum from pg_attribute a
                 where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped) as user_attnum
          from pg_class c
         where c.relnamespace = 'automl'::regnamespace and c.relkind in ('r', 'p')
           and exists (select from pg_attribute a
                        where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped)
         order by c.relname
    loop
        if not has_table_privilege(tenant.tbl, 'select') then  -- created behind post-apply's back
            return query select 'owner links'::text, tenant.relname::text,
                                format('not audited: owned by %s, not automl_owner (run post-apply.sql)',
                                       (select c.relowner::regrole from pg_class c where c.oid = tenant.tbl));
            continue;
        end if;
        subject_expr := format('%L || '' '' || %s', tenant.relname,
                               case when tenant.has_id then 't.id::text' else 't.ctid::text' end);
        -- The account exists (the ledger has no foreign key on purpose; the others can be switched off).
        return query execute format(
            'select ''owner links''::text, %s, ''account missing''::text from %s t'
            ' where t.user_id is not null and not exists (select from users u where u.id = t.user_id)',
            subject_expr, tenant.tbl);
        -- Every foreign key that carries user_id points at a row of the same user.
        for link in
            select k.conname, k.confrelid::regclass as parent,
                   string_agg(format('t.%I is not null', ca.attname), ' and ' order by x.n) as present,
                   string_agg(format('p.%I = t.%I', pa.attname, ca.attname), ' and ' order by x.n) as matches
              from pg_constraint k
              cross join lateral unnest(k.conkey, k.confkey) with ordinality as x(child, parent, n)
              join pg_attribute ca on ca.attrelid = k.conrelid and ca.attnum = x.child
              join pg_attribute pa on pa.attrelid = k.confrelid and pa.attnum = x.parent
             where k.conrelid = tenant.tbl and k.contype = 'f' and tenant.user_attnum = any (k.conkey)
               and cardinality(k.conkey) > 1
             group by k.conname, k.confrelid
             order by k.conname
        loop
            return query execute format(
                'select ''owner links''::text, %s, %L::text from %s t'
                ' where %s and not exists (select from %s p where %s)',
                subject_expr, format('%s: no %s row of the same user', link.conname, link.parent),
                tenant.tbl, link.present, link.parent, link.matches);
        end loop;
    end loop;
end;
$$;
comment on function owner_link_violations() is
    'Part of check_integrity(): for every table of the schema with a user_id (found in the catalog), '
    'rows whose account is missing, and rows whose composite foreign key over user_id finds no parent '
    'row of the same user (foreign key triggers can be switched off by a superuser).';

create function check_integrity()
returns table (invariant text, subject text, detail text)
language sql stable
security definer set search_path = pg_catalog, automl, pg_temp as $$
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
    -- Ownership links hold (foreign key triggers can be switched off by a superuser): found from
    -- the catalog, so every table with a user_id is audited, including tables added later.
    select o.invariant, o.subject, o.detail from owner_link_violations() o
$$;
comment on function check_integrity() is
    'DBA audit: one row per broken invariant (ledger chain and balances, credit policy per job, '
    'lifecycle stamps of jobs, nodes, versions and ingestion runs, counters, storage, version '
    'numbering, owner links); no rows when healthy. '
    'Recomputes from the base rows, so it notices drift written behind the triggers'' back.';

-- Less ambient power (called by post/910_grants.sql). By default every role may create temporary
-- tables (which could shadow our names in an unpinned function), large objects (data outside
-- every table and policy) and take advisory locks (which the ledger uses for client-chosen keys).
-- The runtime roles need none of that. The temporary-table right is granted per database, and
-- CREATE DATABASE ... TEMPLATE and a plain pg_restore start from the default again, so it lives in
-- a function that migrations, the test databases and a restore all run (README, "Restoring a
-- dump"); the function rights (in pg_catalog) travel with copies and dumps.
create function apply_database_privileges() returns void
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    -- public holds yoyo's bookkeeping only and comes first: yoyo keeps its tables in the current
    -- schema, and every name of the project is found in automl.
    execute format('alter database %I set search_path = public, automl', current_database());
    execute format('revoke temporary on database %I from public', current_database());
    execute format('grant temporary on database %I to automl_owner', current_database());
end;
$$;
comment on function apply_database_privileges() is
    'Sets the database''s search_path (public, automl) and revokes the temporary-table right on this '
    'database from PUBLIC (database settings and privileges, which copies and plain restores reset). Run '
    'by migrations and after CREATE DATABASE ... TEMPLATE or a restore, as automl.apply_database_privileges(); '
    'needs the database owner or a superuser.';
