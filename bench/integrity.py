"""Ledger and queue throughput: the project's SQL (triggers and all) against raw baselines doing the
same work by hand, on the same server in the same run, with pgbench.

Two baselines, both without any trigger:
- "same schema": copies of the project's tables (LIKE ... INCLUDING ALL: columns, defaults, CHECKs,
  indexes; plus the user foreign key). project / same schema = what the database's rules cost.
- "bare": minimal tables with keys only. project / bare = what the rules and the schema cost.
"""

import statistics
from dataclasses import dataclass

import psycopg

from bench import pgbench

CLIENTS = 4
USERS = 1000


@dataclass(frozen=True)
class Figure:
    case: str
    project: float
    same_schema: float
    bare: float


def uid(n: str) -> str:
    """A deterministic uuid for account number n (an SQL expression), so scripts need no lookups."""
    return f"('00000000-0000-0000-0000-' || lpad(({n})::text, 12, '0'))::uuid"


LEDGER_PROJECT = f"""\\set u random(:lo, :hi)
insert into credit_transactions (user_id, type, amount, description)
values ({uid(':u')}, 'purchase', 1, 'bench');
"""

# The client does the posting itself, as cheaply as SQL allows: one statement that moves the
# balance and entry counter and writes the entry from what the UPDATE returned.
LEDGER_SAME_SCHEMA = f"""\\set u random(:lo, :hi)
with moved as (
    update raw_users set credit_balance = credit_balance + 1, last_entry_number = last_entry_number + 1,
                         updated_at = now()
     where id = {uid(':u')} and credit_balance + 1 >= 0
    returning id, credit_balance, last_entry_number)
insert into raw_ledger (user_id, type, amount, description, balance_after, entry_number)
select id, 'purchase', 1, 'bench', credit_balance, last_entry_number from moved;
"""

LEDGER_BARE = f"""\\set u random(:lo, :hi)
with moved as (
    update bare_accounts set balance = balance + 1, version = version + 1
     where id = {uid(':u')} returning id, balance, version)
insert into bare_entries (account_id, amount, balance_after, entry_number, description)
select id, 1, balance, version, 'bench' from moved;
"""

QUEUE_PROJECT = """select id as job from claim_jobs('bench-worker') \\gset
update jobs set status = 'completed' where id = ':job';
"""


def _queue_raw(table: str) -> str:
    return f"""with picked as (
    select id from {table} where status = 'queued'
     order by priority desc, queued_at, id limit 1 for update skip locked)
update {table} r set status = 'running', worker_id = 'bench-worker', attempt = r.attempt + 1,
       started_at = now(), heartbeat_at = now(), updated_at = now()
  from picked where r.id = picked.id returning r.id as job \\gset
update {table} set status = 'completed', completed_at = now(), updated_at = now() where id = ':job';
"""


QUEUE_SAME_SCHEMA = _queue_raw("raw_jobs")
QUEUE_BARE = _queue_raw("bare_jobs")

BASELINE_TABLES = """
create table raw_users (like users including all);
create table raw_ledger (like credit_transactions including all,
                         foreign key (user_id) references raw_users (id));
create table raw_jobs (like jobs including all);
create table bare_accounts (id uuid primary key, balance integer not null default 0,
                            version bigint not null default 0);
create table bare_entries (id uuid primary key default gen_random_uuid(), account_id uuid not null
                           references bare_accounts (id), amount integer not null,
                           balance_after integer not null, entry_number bigint not null, description text,
                           created_at timestamptz not null default now(), unique (account_id, entry_number));
create table bare_jobs (id uuid primary key default gen_random_uuid(), status text not null,
                        priority integer not null default 0, queued_at timestamptz, worker_id text,
                        attempt integer not null default 0, started_at timestamptz, heartbeat_at timestamptz,
                        completed_at timestamptz, updated_at timestamptz);
create index bare_jobs_claimable on bare_jobs (priority desc, queued_at, id) where status = 'queued';
"""

Conn = psycopg.Connection[tuple[object, ...]]


def _accounts(conn: Conn, lo: int, hi: int, history: int) -> None:
    """Accounts lo..hi in all three designs, each with `history` past entries of +1 (bulk loaded)."""
    numbers = "from generate_series(%s::int, %s::int) n"
    conn.execute(f"insert into users (id, email) select {uid('n')}, 'bench' || n || '@example.com' {numbers}",
                 [lo, hi])
    conn.execute(f"insert into raw_users (id, email) select {uid('n')}, 'bench' || n || '@example.com' {numbers}",
                 [lo, hi])
    conn.execute(f"insert into bare_accounts (id) select {uid('n')} {numbers}", [lo, hi])
    if history:
        entries = f"{numbers}, generate_series(1, %s::int) e"
        # Bulk history is written as the triggers would have written it, with them switched off
        # for speed; check_integrity() is verified clean after the run.
        conn.execute("set session_replication_role = replica")
        for ledger, accounts in [("credit_transactions", "users"), ("raw_ledger", "raw_users")]:
            conn.execute(f"insert into {ledger} (user_id, entry_number, type, amount, balance_after)"
                         f" select {uid('n')}, e, 'purchase', 1, e {entries}", [lo, hi, history])
            conn.execute(f"update {accounts} set credit_balance = %s, last_entry_number = %s"
                         f" where id between {uid('%s')} and {uid('%s')}", [history, history, lo, hi])
        conn.execute("set session_replication_role = origin")
        conn.execute(f"insert into bare_entries (account_id, amount, balance_after, entry_number)"
                     f" select {uid('n')}, 1, e, e {entries}", [lo, hi, history])
        conn.execute(f"update bare_accounts set balance = %s, version = %s"
                     f" where id between {uid('%s')} and {uid('%s')}", [history, history, lo, hi])
    conn.execute("vacuum analyze")


def _queue(conn: Conn, queued: int, finished: int) -> None:
    """`queued` claimable jobs in all three designs, after `finished` completed ones (bulk loaded)."""
    row = conn.execute(f"select id from workflow_snapshots where user_id = {uid('0')}").fetchone()
    if row is None:
        conn.execute(f"insert into users (id, email) values ({uid('0')}, 'queue@example.com')")
        row = conn.execute(f"insert into workflow_snapshots (user_id, snapshot_data) values ({uid('0')},"
                           " '{\"nodes\": [], \"edges\": []}') returning id").fetchone()
    assert row is not None
    snapshot = row[0]
    conn.execute("set session_replication_role = replica")  # start from an empty queue, fast
    for table in ("jobs", "raw_jobs", "bare_jobs"):
        conn.execute(f"delete from {table}")
    if finished:
        for table in ("jobs", "raw_jobs"):
            conn.execute(f"insert into {table} (user_id, workflow_snapshot_id, status, attempt, queued_at,"
                         f" started_at, completed_at) select {uid('0')}, %s, 'completed', 1, now(), now(), now()"
                         " from generate_series(1, %s::int)", [snapshot, finished])
        conn.execute("insert into bare_jobs (status, attempt, queued_at, started_at, completed_at)"
                     " select 'completed', 1, now(), now(), now() from generate_series(1, %s::int)", [finished])
    conn.execute("set session_replication_role = origin")
    # The project's queued jobs go through its triggers, as a service would create them.
    conn.execute(f"insert into jobs (user_id, workflow_snapshot_id, status, priority)"
                 f" select {uid('0')}, %s, 'queued', g %% 10 from generate_series(1, %s::int) g",
                 [snapshot, queued])
    conn.execute(f"insert into raw_jobs (user_id, workflow_snapshot_id, status, priority, queued_at)"
                 f" select {uid('0')}, %s, 'queued', g %% 10, clock_timestamp() from generate_series(1, %s::int) g",
                 [snapshot, queued])
    conn.execute("insert into bare_jobs (status, priority, queued_at)"
                 " select 'queued', g %% 10, clock_timestamp() from generate_series(1, %s::int) g", [queued])
    conn.execute("vacuum analyze")


ROUNDS = 5


def _measure(url: str, case: str, project: str, same_schema: str, bare: str, seconds: int) -> Figure:
    """Median of ROUNDS interleaved rounds, so a checkpoint or autovacuum cannot favour one side."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("checkpoint")
    runs: dict[str, list[float]] = {"project": [], "same_schema": [], "bare": []}
    for _ in range(ROUNDS):
        for key, script in (("project", project), ("same_schema", same_schema), ("bare", bare)):
            runs[key].append(pgbench.run(url, script, clients=CLIENTS, seconds=seconds))
    figure = Figure(case, **{key: statistics.median(values) for key, values in runs.items()})
    print(f"  {case}: automl_db {figure.project:,.0f}/s, same schema {figure.same_schema:,.0f}/s,"
          f" bare {figure.bare:,.0f}/s", flush=True)
    return figure


def prepare(url: str) -> None:
    """Create the baseline tables beside the project's."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_TABLES)


def ledger(url: str, seconds: int, history: int) -> list[Figure]:
    with psycopg.connect(url, autocommit=True) as conn:
        _accounts(conn, 1, USERS, 0)
        _accounts(conn, USERS + 1, 2 * USERS, history)
    figures = []
    for case, lo in [("empty ledger", 1), (f"{history * USERS:,} existing entries", USERS + 1)]:
        bounds = f"\\set lo {lo}\n\\set hi {lo + USERS - 1}\n"
        figures.append(_measure(url, case, bounds + LEDGER_PROJECT, bounds + LEDGER_SAME_SCHEMA,
                                bounds + LEDGER_BARE, seconds))
    return figures


def queue(url: str, seconds: int, finished: int, queued: int) -> list[Figure]:
    figures = []
    for case, backlog in [("no finished jobs", 0), (f"{finished:,} finished jobs", finished)]:
        with psycopg.connect(url, autocommit=True) as conn:
            _queue(conn, queued, backlog)
        figures.append(_measure(url, case, QUEUE_PROJECT, QUEUE_SAME_SCHEMA, QUEUE_BARE, seconds))
    return figures
