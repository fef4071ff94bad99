"""The same-schema baselines: copies of automl_db's tables (LIKE ... INCLUDING ALL: columns,
defaults, CHECKs, indexes; plus the ledger's account foreign key) without any trigger, written by
hand the way the triggers write them. automl_db / same schema is the cost of the database keeping
its rules itself.

Unlike the floors, these mirror the project's current layout (the balance and entry counter on
users, the queue's stamps on jobs). `requires` notices when the schema has moved on: the column is
then reported as n/a until this file follows.
"""

from bench.sides import WORKER, Ledger, Queue, uid

LEDGER = Ledger(
    label="same schema",
    setup="""
create table bench.same_users (like users including all);
create table bench.same_ledger (like credit_transactions including all,
                                foreign key (user_id) references bench.same_users (id));
""",
    accounts=f"insert into bench.same_users (id, email)"
             f" select {uid('n')}, 'bench' || n || '@example.com' from generate_series(1, %(accounts)s::int) n",
    history=(
        "insert into bench.same_ledger (id, user_id, entry_number, type, amount, balance_after, description)"
        " select gen_random_uuid(), u.id, u.last_entry_number + e, 'adjustment', 1, u.credit_balance + e, 'history'"
        " from bench.same_users u, generate_series(1, %(entries)s::int) e",
        "update bench.same_users set credit_balance = credit_balance + %(entries)s,"
        " last_entry_number = last_entry_number + %(entries)s",
    ),
    post=f"""with moved as (
    update bench.same_users
       set credit_balance = credit_balance + 1, last_entry_number = last_entry_number + 1, updated_at = now()
     where id = {uid(':u')} and credit_balance + 1 >= 0
    returning id, credit_balance, last_entry_number)
insert into bench.same_ledger (id, user_id, type, amount, description, balance_after, entry_number)
select gen_random_uuid(), id, 'adjustment', 1, 'bench', credit_balance, last_entry_number from moved;
""",
    requires="select u.credit_balance, u.last_entry_number, u.updated_at, c.user_id, c.type, c.amount,"
             " c.description, c.balance_after, c.entry_number from users u, credit_transactions c limit 0",
)

QUEUE = Queue(
    label="same schema",
    table="bench.same_jobs",
    setup="create table bench.same_jobs (like jobs including all);",
    enqueue=f"insert into bench.same_jobs (user_id, workflow_snapshot_id, status, priority, queued_at)"
            f" select {uid('0')}, {uid('0')}, 'queued', g %% 10, clock_timestamp()"
            f" from generate_series(1, %(count)s::int) g",
    clear="delete from bench.same_jobs where status in ('queued', 'completed')",
    counts="select count(*) filter (where status = 'queued'), count(*) filter (where status = 'completed')"
           " from bench.same_jobs",
    claim=f"""with picked as (
    select id from bench.same_jobs where status = 'queued'
     order by priority desc, queued_at, id limit {{n}}
       for update skip locked)
update bench.same_jobs j
   set status = 'running', worker_id = '{WORKER}', attempt = j.attempt + 1,
       started_at = now(), heartbeat_at = now(), updated_at = now()
  from picked where j.id = picked.id
returning j.id""",
    complete="update bench.same_jobs set status = 'completed', completed_at = now(), updated_at = now() where {match}",
    requires="select user_id, workflow_snapshot_id, status, priority, queued_at, worker_id, attempt, started_at,"
             " heartbeat_at, completed_at, updated_at from jobs limit 0",
)
