-- 920_row_security.sql — row-level security: every table with a user_id, found in the catalog.
--
-- Idempotent layer (schema/post/): re-applied after every migration run, so a tenant table cannot
-- ship without row-level security. Every table of the schema with a user_id column (and users,
-- keyed on id) gets ENABLE + FORCE row level security and two policies keyed on
-- (select app_user_id()): no user set, no rows; WITH CHECK keeps rows from being created for, or
-- moved to, another user:
--   <table>_tenant    automl_app (and its member automl_worker) reads and writes the rows of
--                     app_user_id() only;
--   <table>_readonly  automl_readonly reads every row, explicitly.
-- The ledger has no <table>_tenant policy: its own policies below let automl_app post only the
-- entries the credit policy allows. Work that spans users goes through SECURITY DEFINER
-- functions with a pinned search_path, or, for the job queue's hot path, through automl_worker's
-- own policies on jobs. Only what is missing is changed: ALTER TABLE and CREATE POLICY take the
-- table's strongest lock, so a re-run that finds everything in place locks nothing.

do $$
declare
    tenant record;
    tenant_key text;
begin
    for tenant in
        select c.oid::regclass as tbl, c.relname, c.relrowsecurity, c.relforcerowsecurity
          from pg_class c
         where c.relnamespace = 'automl'::regnamespace and c.relkind in ('r', 'p')
           and (c.relname = 'users'
                or exists (select from pg_attribute a
                            where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped))
         order by c.relname
    loop
        tenant_key := case tenant.relname when 'users' then 'id' else 'user_id' end;
        if not tenant.relrowsecurity then
            execute format('alter table %s enable row level security', tenant.tbl);
        end if;
        if not tenant.relforcerowsecurity then
            execute format('alter table %s force row level security', tenant.tbl);
        end if;
        if tenant.relname <> 'credit_transactions'
           and not exists (select from pg_policy p
                            where p.polrelid = tenant.tbl and p.polname = tenant.relname || '_tenant') then
            execute format('create policy %I on %s to automl_app using (%I = (select app_user_id()))'
                           ' with check (%I = (select app_user_id()))',
                           tenant.relname || '_tenant', tenant.tbl, tenant_key, tenant_key);
            execute format('comment on policy %I on %s is %L', tenant.relname || '_tenant', tenant.tbl,
                           case tenant.relname
                               when 'users' then 'automl_app reads and writes only the account of '
                                                 'app_user_id(); sign-up inserts it under that id.'
                               else 'automl_app reads and writes only the rows of app_user_id().'
                           end);
        end if;
        if not exists (select from pg_policy p
                        where p.polrelid = tenant.tbl and p.polname = tenant.relname || '_readonly') then
            execute format('create policy %I on %s for select to automl_readonly using (true)',
                           tenant.relname || '_readonly', tenant.tbl);
            execute format('comment on policy %I on %s is %L', tenant.relname || '_readonly', tenant.tbl,
                           case tenant.relname
                               when 'users' then 'automl_readonly reads every account (analytics, support).'
                               when 'credit_transactions' then 'automl_readonly reads every entry (finance, support).'
                               else 'automl_readonly reads every row (analytics, support).'
                           end);
        end if;
    end loop;
end;
$$;

-- Policies of their own, each created when missing: (table, policy, its definition, its comment).
do $$
declare
    rule record;
begin
    for rule in
        select r.tbl, r.policy, r.definition, r.description
          from (values
            -- Workers take jobs from every user's queue: automl_worker reads and updates any job
            -- (claim, heartbeat, finish). It has no DELETE, and inserts stay under the tenant policy.
            ('jobs', 'jobs_worker_read', 'for select to automl_worker using (true)',
             'automl_worker sees every job: the queue spans users.'),
            ('jobs', 'jobs_worker_update',
             'for update to automl_worker using (status in (''queued'', ''running'')) with check (true)',
             'automl_worker claims, heartbeats and finishes any user''s queued or running job; a pending job '
             'is its owner''s alone (its price may still change).'),
            -- Billing credits any account and changes its tier (its column privilege is tier alone).
            ('users', 'users_billing_read', 'for select to automl_billing using (true)',
             'automl_billing reads every account: it credits any of them.'),
            ('users', 'users_billing_update', 'for update to automl_billing using (true) with check (true)',
             'automl_billing changes any account''s tier (its column privilege is tier alone).'),
            -- The ledger: automl_app posts only for itself and creates no credits.
            ('credit_transactions', 'credit_transactions_tenant_read',
             'for select to automl_app using (user_id = (select app_user_id()))',
             'automl_app reads only the ledger of app_user_id().'),
            ('credit_transactions', 'credit_transactions_tenant_insert',
             'for insert to automl_app with check (user_id = (select app_user_id())'
             ' and type in (''consumption'', ''refund'') and stripe_payment_id is null and package_id is null)',
             'automl_app posts only for app_user_id(), and only consumption and refund entries (which the '
             'credit policy then checks against the job): it creates no credits.'),
            ('credit_transactions', 'credit_transactions_billing_read', 'for select to automl_billing using (true)',
             'automl_billing reads every entry.'),
            ('credit_transactions', 'credit_transactions_billing_insert',
             'for insert to automl_billing with check (type in (''purchase'', ''adjustment''))',
             'automl_billing posts purchases (each with its payment reference) and adjustments, for any account.')
          ) as r(tbl, policy, definition, description)
         where not exists (select from pg_policy p
                            where p.polrelid = to_regclass('automl.' || r.tbl) and p.polname = r.policy)
    loop
        execute format('create policy %I on %I %s', rule.policy, rule.tbl, rule.definition);
        execute format('comment on policy %I on %I is %L', rule.policy, rule.tbl, rule.description);
    end loop;
end;
$$;
