"""The credit ledger: posting, sign rules, idempotency, immutability, the balance guard."""

from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from tests.helpers import assert_refused, give_credits, make_job, make_user, one, value

Conn = psycopg.Connection[DictRow]

POST = ("insert into credit_transactions (user_id, type, amount, description, job_id, stripe_payment_id)"
        " values (%(user)s, %(type)s, %(amount)s, 'test', %(job)s, %(payment)s) returning *")


def post(conn: Conn, user: Any, type_: str, amount: int, job: Any = None, payment: str | None = None) -> DictRow:
    return one(conn, POST, {"user": user, "type": type_, "amount": amount, "job": job, "payment": payment})


@pytest.fixture
def user(conn: Conn) -> Any:
    return make_user(conn)


def test_database_fills_entry_number_and_balance_after(conn: Conn, user: Any) -> None:
    entries = [post(conn, user, "purchase", 100, payment="pi_1"), post(conn, user, "adjustment", -30),
               post(conn, user, "adjustment", 5)]
    assert [(e["entry_number"], e["balance_after"]) for e in entries] == [(1, 100), (2, 70), (3, 75)]
    assert one(conn, "select credit_balance, last_entry_number from users where id = %s", [user]) == {
        "credit_balance": 75, "last_entry_number": 3}


def test_client_values_for_derived_fields_are_overwritten(conn: Conn, user: Any) -> None:
    row = one(conn, "insert into credit_transactions (user_id, type, amount, balance_after, entry_number)"
                    " values (%s, 'adjustment', 10, 999999, 42) returning entry_number, balance_after", [user])
    assert row == {"entry_number": 1, "balance_after": 10}


def test_overdraft_is_refused_with_its_own_sqlstate(conn: Conn, user: Any) -> None:
    give_credits(conn, user, 50)
    assert_refused(conn, POST, {"user": user, "type": "adjustment", "amount": -51, "job": None, "payment": None},
                   sqlstate="AM001", constraint="credit_transactions_balance_nonnegative")
    snapshot = value(conn, "select workflow_snapshot_id from jobs where id = %s", [make_job(conn, user)])
    assert_refused(conn, "insert into jobs (user_id, workflow_snapshot_id, status, credit_cost)"
                         " values (%s, %s, 'queued', 60)", [user, snapshot],
                   sqlstate="AM001", constraint="credit_transactions_balance_nonnegative")
    post(conn, user, "adjustment", -50)  # exactly to zero is fine
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 0


@pytest.mark.parametrize(("type_", "amount", "needs_job"), [
    ("purchase", 0, False), ("purchase", -5, False), ("refund", -1, True), ("consumption", 5, True),
    ("consumption", 0, True), ("adjustment", 0, False)])
def test_sign_rules(conn: Conn, user: Any, type_: str, amount: int, needs_job: bool) -> None:
    give_credits(conn, user, 100)
    job = make_job(conn, user) if needs_job else None
    assert_refused(conn, POST, {"user": user, "type": type_, "amount": amount, "job": job, "payment": None},
                   sqlstate="23514", constraint="credit_transactions_amount_sign")


@pytest.mark.parametrize("type_", ["consumption", "refund"])
def test_consumption_and_refund_name_a_job(conn: Conn, user: Any, type_: str) -> None:
    give_credits(conn, user, 100)
    amount = -5 if type_ == "consumption" else 5
    assert_refused(conn, POST, {"user": user, "type": type_, "amount": amount, "job": None, "payment": None},
                   sqlstate="23514", constraint="credit_transactions_job_required")


def test_job_must_belong_to_the_same_user(conn: Conn, user: Any) -> None:
    other = make_user(conn)
    give_credits(conn, user, 100)
    foreign_job = make_job(conn, other)
    for job in (foreign_job, "00000000-0000-0000-0000-000000000000"):
        assert_refused(conn, POST, {"user": user, "type": "consumption", "amount": -5, "job": job, "payment": None},
                       sqlstate="23503", constraint="credit_transactions_job_owner")


def test_job_entries_follow_the_credit_policy(conn: Conn, user: Any) -> None:
    give_credits(conn, user, 100)
    job = make_job(conn, user, cost=20)

    def refused(type_: str, amount: int, sqlstate: str, constraint: str) -> None:
        assert_refused(conn, POST, {"user": user, "type": type_, "amount": amount, "job": job, "payment": None},
                       sqlstate=sqlstate, constraint=constraint)

    refused("consumption", -5, "23514", "credit_transactions_job_policy")  # only its whole cost
    refused("refund", 5, "23514", "credit_transactions_job_policy")
    conn.execute("update jobs set status = 'queued' where id = %s", [job])  # the database charges it
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 80
    refused("consumption", -20, "23505", "credit_transactions_job_consumption_key")  # charged once
    refused("consumption", -5, "23514", "credit_transactions_job_policy")
    refused("refund", 20, "23514", "credit_transactions_job_policy")  # still queued: nothing to refund
    conn.execute("update jobs set status = 'cancelled' where id = %s", [job])  # the database refunds it
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 100
    refused("refund", 20, "23505", "credit_transactions_job_refund_key")  # refunded once
    refused("refund", 21, "23514", "credit_transactions_job_policy")  # never more than consumed


def test_a_pending_job_charged_by_its_service_is_charged_once_and_refunded_once(conn: Conn, user: Any) -> None:
    """The seed's services charged a job themselves before queueing it: the database takes that
    entry as the job's charge, freezes its cost, and queueing charges nothing more."""
    give_credits(conn, user, 100)
    job = make_job(conn, user, cost=30)
    post(conn, user, "consumption", -30, job)
    assert_refused(conn, "update jobs set credit_cost = 10 where id = %(job)s", {"job": job},
                   sqlstate="AM004", constraint="jobs_terms_immutable")
    conn.execute("update jobs set status = 'queued' where id = %s", [job])
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 70
    assert value(conn, "select count(*) from credit_transactions where job_id = %s", [job]) == 1
    conn.execute("update jobs set status = 'cancelled' where id = %s", [job])
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 100
    assert_refused(conn, POST, {"user": user, "type": "refund", "amount": 30, "job": job, "payment": None},
                   sqlstate="23505", constraint="credit_transactions_job_refund_key")
    cancelled_while_pending = make_job(conn, user, cost=40)
    post(conn, user, "consumption", -40, cancelled_while_pending)
    conn.execute("update jobs set status = 'cancelled' where id = %s", [cancelled_while_pending])
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 100
    uncharged = make_job(conn, user, cost=10)
    conn.execute("update jobs set credit_cost = 15 where id = %s", [uncharged])  # not charged: still open
    conn.execute("update jobs set status = 'queued' where id = %s", [uncharged])
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 85


def test_a_stripe_payment_is_credited_once(conn: Conn, user: Any) -> None:
    post(conn, user, "purchase", 100, payment="pi_same")
    assert_refused(conn, POST, {"user": user, "type": "purchase", "amount": 100, "job": None, "payment": "pi_same"},
                   sqlstate="23505", constraint="credit_transactions_stripe_payment_key")
    assert value(conn, "select credit_balance from users where id = %s", [user]) == 100


@pytest.mark.parametrize("statement", [
    "update credit_transactions set amount = 1000",
    "update credit_transactions set description = 'edited'",
    "delete from credit_transactions",
    "truncate credit_transactions",
])
def test_ledger_is_append_only(conn: Conn, user: Any, statement: str) -> None:
    post(conn, user, "purchase", 10, payment="pi_x")
    assert_refused(conn, statement, sqlstate="AM004", constraint="credit_transactions_immutable")


@pytest.mark.parametrize("statement", [
    "update users set credit_balance = 1000000 where id = %(user)s",
    "update users set credit_balance = credit_balance - 1 where id = %(user)s",
    "update users set last_entry_number = 0 where id = %(user)s",
    "update users set dataset_count = 7 where id = %(user)s",
    "update users set storage_used_bytes = 5 where id = %(user)s",
    "insert into users (email, credit_balance) values ('rich@example.com', 500)",
    "insert into users (email, model_count) values ('busy@example.com', 3)",
])
def test_derived_user_columns_cannot_be_written(conn: Conn, user: Any, statement: str) -> None:
    post(conn, user, "purchase", 10, payment="pi_y")
    assert_refused(conn, statement, {"user": user}, sqlstate="AM005", constraint="users_derived_columns")


def test_other_user_columns_stay_writable(conn: Conn, user: Any) -> None:
    post(conn, user, "purchase", 10, payment="pi_z")
    conn.execute("update users set full_name = 'New Name', credit_balance = credit_balance where id = %s", [user])
    assert one(conn, "select full_name, credit_balance from users where id = %s", [user]) == {
        "full_name": "New Name", "credit_balance": 10}


def test_a_user_with_ledger_entries_cannot_be_hard_deleted(conn: Conn, user: Any) -> None:
    post(conn, user, "purchase", 10, payment="pi_keep")
    assert_refused(conn, "delete from users where id = %(user)s", {"user": user},
                   sqlstate="23001", constraint="users_ledger_keeps_account")


def test_unknown_user_is_a_foreign_key_error(conn: Conn) -> None:
    assert_refused(conn, POST, {"user": "00000000-0000-0000-0000-000000000001", "type": "adjustment", "amount": 5,
                                "job": None, "payment": None},
                   sqlstate="23503", constraint="credit_transactions_user_fkey")


@pytest.mark.parametrize("conflict", ["on conflict do nothing", "on conflict (stripe_payment_id) do nothing",
                                      "on conflict (id) do nothing"])
def test_on_conflict_cannot_move_a_balance_without_an_entry(conn: Conn, user: Any, conflict: str) -> None:
    """BEFORE triggers run ahead of ON CONFLICT; the ledger refuses the duplicate itself."""
    first = post(conn, user, "purchase", 100, payment="pi_dup")
    assert_refused(conn, "insert into credit_transactions (user_id, type, amount, stripe_payment_id)"
                         f" values (%(u)s, 'purchase', 100, 'pi_dup') {conflict}", {"u": user},
                   sqlstate="23505", constraint="credit_transactions_stripe_payment_key")
    assert_refused(conn, "insert into credit_transactions (id, user_id, type, amount)"
                         f" values (%(id)s, %(u)s, 'adjustment', 5) {conflict}", {"u": user, "id": first["id"]},
                   sqlstate="23505", constraint="credit_transactions_pkey")
