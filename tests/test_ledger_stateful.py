"""A hypothesis state machine drives the ledger and the job credit policy against a model of it."""

import uuid

import psycopg
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from psycopg.rows import DictRow, dict_row


def test_ledger_matches_a_model(db_url: str) -> None:
    class Ledger(RuleBasedStateMachine):
        conn: psycopg.Connection[DictRow]

        @initialize()
        def open_account(self) -> None:
            self.conn = psycopg.connect(db_url, autocommit=True, row_factory=dict_row)
            row = self.conn.execute("insert into users (email) values (%s) returning id",
                                    [f"{uuid.uuid4().hex}@example.com"]).fetchone()
            assert row is not None
            self.user = row["id"]
            snap = self.conn.execute("insert into workflow_snapshots (user_id, snapshot_data)"
                                     " values (%s, '{\"nodes\": [], \"edges\": []}') returning id",
                                     [self.user]).fetchone()
            assert snap is not None
            self.snapshot = snap["id"]
            self.balance = 0
            self.running: dict[uuid.UUID, int] = {}  # queued jobs and what they were charged

        def refusal(self, query: str, params: list[object]) -> tuple[str | None, DictRow | None]:
            """(None, first row) when the statement ran, (SQLSTATE, None) when it was refused."""
            try:
                return None, self.conn.execute(query, params).fetchone()
            except psycopg.Error as exc:
                return exc.sqlstate, None

        def post(self, kind: str, amount: int) -> bool:
            payment = f"pi_{uuid.uuid4().hex}" if kind == "purchase" else None
            refused, _ = self.refusal("insert into credit_transactions (user_id, type, amount, stripe_payment_id)"
                                      " values (%s, %s, %s, %s)", [self.user, kind, amount, payment])
            assert refused == ("AM001" if self.balance + amount < 0 else None)
            if refused is None:
                self.balance += amount
            return refused is None

        @rule(amount=st.integers(1, 500))
        def purchase(self, amount: int) -> None:
            assert self.post("purchase", amount)

        @rule(amount=st.integers(-500, 500).filter(bool))
        def adjust(self, amount: int) -> None:
            self.post("adjustment", amount)

        @rule(cost=st.integers(0, 300))
        def queue_job(self, cost: int) -> None:
            refused, row = self.refusal("insert into jobs (user_id, workflow_snapshot_id, credit_cost, status)"
                                        " values (%s, %s, %s, 'queued') returning id",
                                        [self.user, self.snapshot, cost])
            assert refused == ("AM001" if cost > self.balance else None)
            if row is None:
                return
            self.balance -= cost
            self.running[row["id"]] = cost

        @rule(data=st.data(), end=st.sampled_from(["completed", "failed", "cancelled"]))
        def finish_job(self, data: st.DataObject, end: str) -> None:
            if not self.running:
                return
            # By position in queueing order: the ids are random, so sorting them would make a replayed
            # example take another path.
            job = list(self.running)[data.draw(st.integers(0, len(self.running) - 1))]
            cost = self.running.pop(job)
            if end != "cancelled":
                self.conn.execute("update jobs set status = 'running' where id = %s", [job])
            self.conn.execute("update jobs set status = %s where id = %s", [end, job])
            if end != "completed":
                self.balance += cost

        @invariant()
        def balance_matches(self) -> None:
            if hasattr(self, "user"):
                row = self.conn.execute("select credit_balance from users where id = %s", [self.user]).fetchone()
                assert row == {"credit_balance": self.balance}

        def teardown(self) -> None:
            if hasattr(self, "conn"):
                assert self.conn.execute("select * from check_integrity()").fetchall() == []
                self.conn.close()

    run_state_machine_as_test(Ledger, settings=settings(max_examples=25, stateful_step_count=30, deadline=None))
