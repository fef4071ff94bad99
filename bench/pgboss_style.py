"""A pg-boss-style queue, written here as a reference (pg-boss itself is not part of the project):
a job table shaped like pg-boss's (state enum ordered created < retry < active < ..., priority,
retry counters, start_after, created_on / started_on / completed_on, output jsonb, primary key
(name, id)), claimed and completed with pg-boss's statement shapes.

One deliberate difference: pg-boss's fetch index is (name, start_after) WHERE state < 'active',
which leaves its ORDER BY to a sort over every ready job; here the partial index follows the claim
order, so the reference is at its best and not a straw man.
"""

from bench.sides import Queue

QUEUE = Queue(
    label="pg-boss-style",
    table="bench.pgboss_job",
    setup="""
create type bench.pgboss_state as enum ('created', 'retry', 'active', 'completed', 'cancelled', 'failed');
create table bench.pgboss_job (
    id             uuid not null default gen_random_uuid(),
    name           text not null,
    priority       integer not null default 0,
    data           jsonb,
    state          bench.pgboss_state not null default 'created',
    retry_limit    integer not null default 2,
    retry_count    integer not null default 0,
    retry_delay    integer not null default 0,
    retry_backoff  boolean not null default false,
    expire_seconds integer not null default 900,
    singleton_key  text,
    singleton_on   timestamp,
    start_after    timestamptz not null default now(),
    created_on     timestamptz not null default now(),
    started_on     timestamptz,
    completed_on   timestamptz,
    keep_until     timestamptz not null default now() + interval '14 days',
    output         jsonb,
    dead_letter    text,
    policy         text,
    primary key (name, id));
create index pgboss_job_fetch on bench.pgboss_job (name, priority desc, created_on, id) where state < 'active';
""",
    enqueue="insert into bench.pgboss_job (name, priority, policy, created_on, start_after)"
            " select 'bench', g %% 10, 'standard', clock_timestamp(), now() - interval '1 second'"
            " from generate_series(1, %(count)s::int) g",
    clear="delete from bench.pgboss_job where state in ('created', 'completed')",
    counts="select count(*) filter (where state < 'active'), count(*) filter (where state = 'completed')"
           " from bench.pgboss_job",
    claim="""with next as (
    select id from bench.pgboss_job
     where name = 'bench' and state < 'active' and start_after < now()
     order by priority desc, created_on, id
     limit {n}
       for update skip locked)
update bench.pgboss_job j set state = 'active', started_on = now(), retry_count = j.retry_count + 1
  from next where j.name = 'bench' and j.id = next.id
returning j.id""",
    complete="update bench.pgboss_job"
             " set state = 'completed', completed_on = now(), output = jsonb_build_object('ok', true)"
             " where name = 'bench' and {match} and state = 'active'",
)
