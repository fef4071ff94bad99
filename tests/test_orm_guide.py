"""docs/orm-guide.md, checked: a service using SQLAlchemy models declared as the guide says, against
the real schema, as automl_app (row-level security on), automl_billing and the owner."""

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.helpers import GRAPH, Conn
from tests.orm_models import (
    CreditTransaction,
    Dataset,
    DatasetVersion,
    Job,
    JobNode,
    TrainedModel,
    Tutorial,
    User,
    Workflow,
    WorkflowSnapshot,
)

CONFUSION = {"labels": ["churn", "stay"], "matrix": [[41, 9], [7, 143]]}


def engine(url: str) -> Iterator[Engine]:
    made = create_engine(make_url(url).set(drivername="postgresql+psycopg"), poolclass=NullPool)
    yield made
    made.dispose()


@pytest.fixture
def app(app_url: str) -> Iterator[Engine]:
    yield from engine(app_url)


@pytest.fixture
def billing(billing_url: str) -> Iterator[Engine]:
    yield from engine(billing_url)


@pytest.fixture
def worker(worker_url: str) -> Iterator[Engine]:
    yield from engine(worker_url)


@pytest.fixture
def owner(db_url: str) -> Iterator[Engine]:
    yield from engine(db_url)


def sqlstate(error: Exception) -> tuple[str | None, str | None]:
    orig: Any = getattr(error, "orig", None)
    return (orig.sqlstate, orig.diag.constraint_name) if orig is not None else (None, None)


def sign_up(app: Engine) -> uuid.UUID:
    user_id = uuid.uuid4()
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        session.add(User(id=user_id, email=f"{user_id.hex[:12]}@example.com", full_name="Ada"))
    return user_id


def grant(billing: Engine, user_id: uuid.UUID, amount: int) -> CreditTransaction:
    with Session(billing, expire_on_commit=False) as session, session.begin():
        entry = CreditTransaction(user_id=user_id, type="adjustment", amount=amount, description="welcome credits")
        session.add(entry)
    return entry


def new_job(session: Session, user_id: uuid.UUID, cost: int, status: str = "pending") -> Job:
    workflow = Workflow(user_id=user_id, name="churn", definition=GRAPH)
    session.add(workflow)
    session.flush()
    snapshot = WorkflowSnapshot(workflow_id=workflow.id, user_id=user_id, snapshot_data=workflow.definition)
    session.add(snapshot)
    session.flush()
    job = Job(user_id=user_id, workflow_snapshot_id=snapshot.id, status=status, credit_cost=cost)
    session.add(job)
    session.flush()
    return job


def ledger(session: Session, user_id: uuid.UUID) -> list[tuple[int, str, int, int]]:
    rows = session.execute(select(CreditTransaction.entry_number, CreditTransaction.type, CreditTransaction.amount,
                                  CreditTransaction.balance_after)
                           .where(CreditTransaction.user_id == user_id).order_by(CreditTransaction.entry_number))
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def test_sign_up_reads_back_what_the_database_filled_in(app: Engine) -> None:
    user_id = uuid.uuid4()
    email = f"{user_id.hex[:12]}@example.com"
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        user = User(id=user_id, email=email)
        session.add(user)
        session.flush()  # INSERT ... RETURNING the FetchedValue columns (eager_defaults)
        assert (user.tier, user.credit_balance, user.dataset_count, user.storage_used_bytes) == ("free", 0, 0, 0)
        assert (user.email_verified, user.is_deleted, user.deleted_at) == (False, False, None)
        assert user.created_at is not None
        assert user.updated_at is not None
    with Session(app) as session, session.begin():  # acting for nobody: row-level security shows nothing
        assert session.scalars(select(User)).all() == []
        signed_in = session.scalar(text("select user_id_for_email(:email)"), {"email": email.upper()})
        assert signed_in == user_id  # sign-in: a definer lookup, acting for nobody
    with Session(app, info={"user_id": signed_in}) as session, session.begin():
        assert session.get(User, user_id) is not None


@pytest.mark.parametrize(("column", "value"), [("credit_balance", 0), ("tier", "free"), ("dataset_count", 0),
                                               ("storage_used_bytes", 0), ("is_deleted", False)])
def test_seed_style_python_defaults_on_users_are_refused(app: Engine, column: str, value: object) -> None:
    """automl_app inserts only id, email, full_name, oauth_provider, oauth_id, email_verified."""
    user_id = uuid.uuid4()
    with Session(app, info={"user_id": user_id}) as session, session.begin(), pytest.raises(ProgrammingError) as caught:
        session.execute(insert(User).values(id=user_id, email=f"{user_id.hex[:12]}@example.com", **{column: value}))
    assert sqlstate(caught.value)[0] == "42501"
    assert "permission denied for table users" in str(caught.value)


def test_counters_storage_numbers_and_owners_come_from_the_database(app: Engine) -> None:
    user_id = sign_up(app)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        user = session.get_one(User, user_id)
        dataset = Dataset(user_id=user_id, name="churn")
        session.add(dataset)
        session.flush()
        versions = [DatasetVersion(dataset_id=dataset.id, original_filename=f"v{n}.csv", original_size_bytes=1000)
                    for n in (1, 2)]
        session.add_all(versions)
        session.flush()
        assert [v.version_number for v in versions] == [1, 2]
        assert {v.user_id for v in versions} == {user_id}
        assert versions[0].status == "pending"
        assert user.dataset_count == 0  # the identity map does not see what triggers did to other rows...
        session.refresh(user)
        assert (user.dataset_count, user.storage_used_bytes) == (1, 2000)  # ...until it reads them again


def test_the_database_charges_a_queued_job_and_refunds_a_failed_one(app: Engine, billing: Engine) -> None:
    user_id = sign_up(app)
    assert (grant(billing, user_id, 100).balance_after, grant(billing, user_id, 5).entry_number) == (100, 2)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        job = new_job(session, user_id, cost=40)
        assert job.queued_at is None
        job.status = "queued"
        session.flush()  # the trigger charges credit_cost; eager_defaults reads the stamps back
        assert job.queued_at is not None
        assert ledger(session, user_id)[-1] == (3, "consumption", -40, 65)
        job.status = "running"
        session.flush()
        assert (job.attempt, job.started_at is not None) == (1, True)
        job.status = "failed"
        job.error_message = "MemoryError"
        session.flush()
        assert job.completed_at is not None
        assert ledger(session, user_id)[-1] == (4, "refund", 40, 105)
        assert session.get_one(User, user_id, populate_existing=True).credit_balance == 105


def test_only_billing_creates_credits(app: Engine) -> None:
    user_id = sign_up(app)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        session.add(CreditTransaction(user_id=user_id, type="adjustment", amount=1000, description="free money"))
        with pytest.raises(ProgrammingError) as caught:
            session.flush()
    assert sqlstate(caught.value) == ("42501", "credit_transactions_acting_user")


def test_a_credited_payment_raises_even_under_on_conflict_do_nothing(app: Engine, billing: Engine) -> None:
    user_id = sign_up(app)
    purchase = pg_insert(CreditTransaction).values(
        user_id=user_id, type="purchase", amount=100, stripe_payment_id="pi_guide").on_conflict_do_nothing(
        index_elements=["stripe_payment_id"])
    with Session(billing) as session, session.begin():
        session.execute(purchase)
    with Session(billing) as session, session.begin(), pytest.raises(IntegrityError) as caught:
        session.execute(purchase)
    assert sqlstate(caught.value) == ("23505", "credit_transactions_stripe_payment_key")
    with Session(billing) as session, session.begin():
        assert ledger(session, user_id) == [(1, "purchase", 100, 100)]


def test_metrics_are_a_flat_map_of_numbers_and_a_confusion_matrix_goes_elsewhere(app: Engine) -> None:
    user_id = sign_up(app)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        job = new_job(session, user_id, cost=0, status="queued")
        session.add(TrainedModel(user_id=user_id, job_id=job.id, name="forest", metrics={"f1": 0.81, "auc": 0.9}))
        session.flush()
        nested = session.begin_nested()
        session.add(TrainedModel(user_id=user_id, job_id=job.id, name="forest",
                                 metrics={"f1": 0.81, "confusion_matrix": CONFUSION["matrix"]}))
        with pytest.raises(IntegrityError) as caught:
            session.flush()
        nested.rollback()
        assert sqlstate(caught.value) == ("23514", "models_metrics_shape")
        nested = session.begin_nested()
        session.add(TrainedModel(user_id=user_id, job_id=job.id, name="forest", metrics={"loss": float("nan")}))
        with pytest.raises(DataError) as caught_nan:
            session.flush()  # json.dumps writes NaN, which is not JSON
        nested.rollback()
        assert sqlstate(caught_nan.value)[0] == "22P02"
        node = JobNode(job_id=job.id, node_id="score", output_data={"confusion_matrix": CONFUSION})
        session.add(node)
        session.flush()
        assert node.user_id == user_id
        job.status = "running"
        session.flush()
        job.status = "completed"
        job.results = {"f1": 0.81, "confusion_matrix": CONFUSION}
        session.flush()


def test_updated_at_is_the_databases(app: Engine) -> None:
    user_id = sign_up(app)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        workflow = Workflow(user_id=user_id, name="churn", definition=GRAPH)
        session.add(workflow)
        session.flush()
        session.execute(text("update workflows set updated_at = '2000-01-01' where id = :id"), {"id": workflow.id})
        stamped = session.scalar(select(Workflow.updated_at).where(Workflow.id == workflow.id))
        assert stamped is not None
        assert stamped == session.scalar(select(func.now()))
        workflow.name = "churn v2"
        session.flush()  # server_onupdate=FetchedValue(): read back, not guessed
        assert workflow.updated_at == stamped


def test_computed_columns_are_read_back(owner: Engine) -> None:
    with Session(owner) as session, session.begin():
        tutorial = Tutorial(slug="orm-guide", title="Read back", steps=[{"id": "a", "title": "A"},
                                                                        {"id": "b", "title": "B"}])
        session.add(tutorial)
        session.flush()
        assert tutorial.step_count == 2
        session.rollback()


def test_a_seed_style_consumption_entry_for_a_job_about_to_be_queued_is_accepted(app: Engine,
                                                                                billing: Engine) -> None:
    user_id = sign_up(app)
    grant(billing, user_id, 100)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        job = new_job(session, user_id, cost=40)
        session.execute(text("insert into credit_transactions (user_id, type, amount, description, job_id)"
                             " values (:user_id, 'consumption', -40, 'job', :job_id)"),
                        {"user_id": user_id, "job_id": job.id})
        job.status = "queued"
        session.flush()
        assert [entry[1:] for entry in ledger(session, user_id)] == [("adjustment", 100, 100), ("consumption", -40, 60)]


def test_a_seed_style_refund_after_the_database_refunded_is_refused(app: Engine, billing: Engine) -> None:
    user_id = sign_up(app)
    grant(billing, user_id, 100)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        job = new_job(session, user_id, cost=40, status="queued")
        for status in ("running", "failed"):
            job.status = status
            session.flush()
        with pytest.raises(IntegrityError) as refused, session.begin_nested():
            session.execute(text("insert into credit_transactions (user_id, type, amount, description, job_id)"
                                 " values (:user_id, 'refund', 40, 'refund', :job_id)"),
                            {"user_id": user_id, "job_id": job.id})
        assert sqlstate(refused.value) == ("23505", "credit_transactions_job_refund_key")
        entries = ledger(session, user_id)
        assert [entry[1] for entry in entries].count("refund") == 1
        assert entries[-1][3] == 100


def test_user_tutorial_progress_has_created_at(owner: Engine) -> None:
    with Session(owner) as session, session.begin():
        session.execute(text("select created_at from user_tutorial_progress limit 0"))


def test_updated_at_may_be_written_on_every_table_automl_app_updates(owner: Engine) -> None:
    with Session(owner) as session, session.begin():
        refused = session.scalars(text(
            "select c.relname from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attname = 'updated_at'"
            " where c.relnamespace = 'automl'::regnamespace and c.relkind = 'r'"
            "   and has_any_column_privilege('automl_app', c.oid, 'UPDATE')"
            "   and not has_column_privilege('automl_app', c.oid, a.attnum, 'UPDATE')"
            " order by 1")).all()
    assert refused == []


def test_lifecycle_stamps_ignore_what_the_client_writes(app: Engine) -> None:
    user_id = sign_up(app)
    forged = datetime(2000, 1, 1, tzinfo=UTC)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        session.execute(insert(DatasetVersion).values(dataset_id=session.scalar(
            insert(Dataset).values(user_id=user_id, name="d").returning(Dataset.id)), original_size_bytes=1,
            created_at=forged))
        created = session.scalar(select(DatasetVersion.created_at).where(DatasetVersion.user_id == user_id))
        assert created is not None
        assert created > forged + timedelta(days=365)


def test_a_worker_claims_across_users_and_finishes_acting_for_the_owner(app: Engine, billing: Engine,
                                                                         worker: Engine) -> None:
    user_id = sign_up(app)
    grant(billing, user_id, 50)
    with Session(app, info={"user_id": user_id}) as session, session.begin():
        queued = new_job(session, user_id, cost=30, status="queued").id
    with Session(worker) as session, session.begin():
        claimed = session.scalars(select(Job).from_statement(text("select * from claim_jobs(:worker, 1)")),
                                  {"worker": "worker-1"}).all()
        assert [(job.id, job.status, job.attempt) for job in claimed] == [(queued, "running", 1)]
    with Session(worker, info={"user_id": user_id}) as session, session.begin():
        job = session.get_one(Job, queued)
        job.status = "cancelled"
        session.flush()
        assert ledger(session, user_id)[-1] == (3, "refund", 30, 50)


def test_every_rule_the_guide_names_exists(conn: Conn) -> None:
    """The guide's table names the triggers, constraints and functions behind each rule: each must
    be in the catalog (or be a constraint name a function raises), so a renamed rule fails here."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "orm-guide.md").read_text()
    table = text.split("## What the database does itself", 1)[1].split("\n## ", 1)[0]
    named = {name for row in table.splitlines() if row.startswith("| **")
             for name in re.findall(r"`([a-z][a-z0-9_]*)`", row.rsplit("|", 2)[1])}
    assert len(named) > 30  # the table was found and read
    ours = "(select oid from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema')"
    known = {r["name"] for r in conn.execute(
        "select tgname as name from pg_trigger where not tgisinternal"
        " union select conname from pg_constraint"
        f" union select relname from pg_class where relnamespace in {ours}"
        f" union select proname from pg_proc where pronamespace in {ours}")}
    raised = set()
    for r in conn.execute(f"select prosrc from pg_proc where pronamespace in {ours}"):
        raised |= set(re.findall(r"constraint\s*=\s*'([a-z0-9_]+)'", r["prosrc"]))
    assert sorted(named - known - raised) == []
