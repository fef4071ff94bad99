"""Credit ledger: entries posted per second by automl_db against its floor and a same-schema copy,
with pgbench, at an empty ledger and after a history of entries.

automl_db: a client `insert into credit_transactions (user_id, type, amount, description)`; the
database moves the balance and fills entry_number and balance_after itself. History is built
through that same insert (the triggers number and balance every entry), so check_integrity()
stays clean whatever the schema keeps where.
"""

from functools import partial

import psycopg

from bench import floors, pgbench, same_schema
from bench.report import Goal, Row, Table
from bench.rounds import interleaved
from bench.sides import SCHEMA, Ledger, uid

PROJECT = Ledger(
    label="automl_db",
    setup="",
    accounts=f"insert into users (id, email)"
             f" select {uid('n')}, 'bench' || n || '@example.com' from generate_series(1, %(accounts)s::int) n",
    history=("insert into credit_transactions (user_id, type, amount, description)"
             f" select {uid('n')}, 'adjustment', 1, 'history'"
             " from generate_series(1, %(accounts)s::int) n, generate_series(1, %(entries)s::int) e",),
    post=f"""insert into credit_transactions (user_id, type, amount, description)
values ({uid(':u')}, 'adjustment', 1, 'bench');
""",
)

#: Entries per account per history statement: the triggers update each account row once per entry,
#: and a long chain of row versions inside one statement would make the load quadratic.
HISTORY_CHUNK = 10

GOALS = (Goal("floor", 0.7),)


def _prepare(url: str, accounts: int) -> list[Ledger]:
    """Create every side's tables and accounts; a same-schema copy whose layout no longer matches is left out."""
    sides = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for side in (PROJECT, floors.LEDGER, same_schema.LEDGER):
            if side.requires:
                try:
                    conn.execute(side.requires)
                except psycopg.Error as exc:
                    print(f"  {side.label}: left out, the schema changed ({exc.diag.message_primary})")
                    continue
            if side.setup:
                conn.execute(side.setup)
            conn.execute(side.accounts, {"accounts": accounts})
            sides.append(side)
        conn.execute("vacuum analyze")
    return sides


def _add_history(url: str, sides: list[Ledger], accounts: int, entries: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for side in sides:
            for start in range(0, entries, HISTORY_CHUNK):
                with conn.transaction():
                    for statement in side.history:
                        conn.execute(statement, {"accounts": accounts,
                                                 "entries": min(HISTORY_CHUNK, entries - start)})
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")


def _entries_per_second(url: str, script: str, seconds: int) -> float:
    return pgbench.run(url, script, seconds=seconds).tps  # one entry per transaction


def _case(url: str, sides: list[Ledger], case: str, accounts: int, seconds: int, rounds: int) -> Row:
    pick = f"\\set u random(1, {accounts})\n"
    samples = interleaved({side.label: partial(_entries_per_second, url, pick + side.post, seconds) for side in sides},
                          rounds)
    print(f"  {case}: " + ", ".join(f"{label} {s.median:,.0f}/s ({s.spread()})" for label, s in samples.items()),
          flush=True)
    project = samples.pop(PROJECT.label).median
    return Row(case, project, {label: s.median for label, s in samples.items()}, GOALS, "entries/s")


def run(url: str, *, seconds: int, rounds: int, accounts: int, history: int) -> Table:
    sides = _prepare(url, accounts)
    rows = [_case(url, sides, "empty ledger", accounts, seconds, rounds)]
    _add_history(url, sides, accounts, history)
    rows.append(_case(url, sides, f"{accounts * history:,} existing entries", accounts, seconds, rounds))
    return Table(
        key="ledger",
        title="Credit ledger: one entry per transaction",
        about=(
            "automl_db: a client `insert into credit_transactions (user_id, type, amount, description)`; the"
            " database checks its rules, moves the balance and fills `entry_number` and `balance_after`."
            " Floor: one statement `with moved as (update accounts set balance = balance + 1, version ="
            " version + 1 where id = $1 returning ...) insert into entries ... select ... from moved` on"
            " minimal tables (primary keys and unique (account_id, entry_number) only; no foreign key, CHECK"
            " or trigger). Same schema: that statement on copies of the project's account and ledger tables"
            f" (`LIKE ... INCLUDING ALL`, plus the account foreign key). {accounts:,} accounts, a random one per"
            " transaction. The empty case starts from empty ledgers; then"
            f" {accounts * history:,} entries of history are added ({history:,} per account, through the"
            " project's own insert) on top of the empty case's entries. pgbench connects as the"
            " administrator on every side (an adjustment is a billing entry), so row-level security"
            " is not in these figures."
        ),
        project="automl_db",
        baselines=("floor", "same schema"),
        setting=f"pgbench -M prepared, {pgbench.CLIENTS} clients, {seconds} s per run,"
                f" median of {rounds} interleaved rounds",
        rows=rows,
        notes=[f"{rows[1].case} / empty ledger (automl_db): **{rows[1].project / rows[0].project:.2f}**."],
    )
