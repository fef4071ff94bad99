"""The physical floors: the least PostgreSQL work that moves the same data as automl_db's hot
paths, on minimal tables (keys only; no triggers, CHECKs, foreign keys or row-level security).

Ledger: one statement moves the balance and counter of the account and writes the entry from what
the UPDATE returned. Queue: a SKIP LOCKED claim recording status, worker and start time, and an
UPDATE to completed, on a table whose only index besides the key is the partial claim index.
"""

from bench.sides import WORKER, Ledger, Queue, uid

LEDGER = Ledger(
    label="floor",
    setup="""
create table bench.floor_accounts (
    id      uuid primary key,
    balance integer not null default 0,
    version bigint not null default 0);
create table bench.floor_entries (
    id            uuid primary key default gen_random_uuid(),
    account_id    uuid not null,
    amount        integer not null,
    balance_after integer not null,
    entry_number  bigint not null,
    description   text,
    created_at    timestamptz not null default now(),
    unique (account_id, entry_number));
""",
    accounts=f"insert into bench.floor_accounts (id) select {uid('n')} from generate_series(1, %(accounts)s::int) n",
    history=(
        "insert into bench.floor_entries (account_id, amount, balance_after, entry_number, description)"
        " select a.id, 1, a.balance + e, a.version + e, 'history'"
        " from bench.floor_accounts a, generate_series(1, %(entries)s::int) e",
        "update bench.floor_accounts set balance = balance + %(entries)s, version = version + %(entries)s",
    ),
    post=f"""with moved as (
    update bench.floor_accounts set balance = balance + 1, version = version + 1
     where id = {uid(':u')}
    returning id, balance, version)
insert into bench.floor_entries (account_id, amount, balance_after, entry_number, description)
select id, 1, balance, version, 'bench' from moved;
""",
)

QUEUE = Queue(
    label="floor",
    table="bench.floor_jobs",
    setup="""
create table bench.floor_jobs (
    id           uuid primary key default gen_random_uuid(),
    status       text not null,
    priority     integer not null default 0,
    queued_at    timestamptz not null default clock_timestamp(),
    worker_id    text,
    started_at   timestamptz,
    completed_at timestamptz);
create index floor_jobs_claimable on bench.floor_jobs (priority desc, queued_at, id) where status = 'queued';
""",
    enqueue="insert into bench.floor_jobs (status, priority)"
            " select 'queued', g %% 10 from generate_series(1, %(count)s::int) g",
    clear="delete from bench.floor_jobs where status in ('queued', 'completed')",
    counts="select count(*) filter (where status = 'queued'), count(*) filter (where status = 'completed')"
           " from bench.floor_jobs",
    claim=f"""with picked as (
    select id from bench.floor_jobs where status = 'queued'
     order by priority desc, queued_at, id limit {{n}}
       for update skip locked)
update bench.floor_jobs f set status = 'running', worker_id = '{WORKER}', started_at = now()
  from picked where f.id = picked.id
returning f.id""",
    complete="update bench.floor_jobs set status = 'completed', completed_at = now() where {match}",
)
