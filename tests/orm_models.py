"""SQLAlchemy models of part of the schema, declared as docs/orm-guide.md tells a seed-style service
to declare them: what the database fills in is FetchedValue (fetched back with eager_defaults),
never a Python-side default, and every session acts for one user. test_orm_guide.py runs them."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Computed, Connection, DateTime, FetchedValue, ForeignKey, event, text
from sqlalchemy.dialects.postgresql import ENUM, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionTransaction, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012 (every timestamp is timestamptz)
    # After INSERT and UPDATE, read back (RETURNING) every column the database fills in.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 (SQLAlchemy declares it an instance variable)


def by_database() -> Any:
    """A column the database fills in on INSERT (a default or a trigger): never assigned by the service."""
    return mapped_column(server_default=FetchedValue())


def kept_by_database() -> Any:
    """A column the database fills in on INSERT and changes on UPDATE (stamps, counters, updated_at)."""
    return mapped_column(server_default=FetchedValue(), server_onupdate=FetchedValue())


def pg_enum(name: str, *labels: str) -> ENUM:
    return ENUM(*labels, name=name, create_type=False)  # the migrations own the type


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # chosen by the service at sign-up
    email: Mapped[str | None]
    full_name: Mapped[str | None]
    oauth_provider: Mapped[str | None] = mapped_column(pg_enum("oauth_provider", "google", "github"))
    oauth_id: Mapped[str | None]
    email_verified: Mapped[bool] = by_database()
    is_deleted: Mapped[bool] = by_database()
    tier: Mapped[str] = mapped_column(pg_enum("user_tier", "free", "pro", "enterprise"),
                                      server_default=FetchedValue(), server_onupdate=FetchedValue())
    credit_balance: Mapped[int] = kept_by_database()
    dataset_count: Mapped[int] = kept_by_database()
    workflow_count: Mapped[int] = kept_by_database()
    model_count: Mapped[int] = kept_by_database()
    storage_used_bytes: Mapped[int] = kept_by_database()
    deleted_at: Mapped[datetime | None] = kept_by_database()
    created_at: Mapped[datetime] = by_database()
    updated_at: Mapped[datetime] = kept_by_database()


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str]
    current_version_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = by_database()
    updated_at: Mapped[datetime] = kept_by_database()


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id"))
    user_id: Mapped[uuid.UUID] = by_database()  # copied from the dataset
    version_number: Mapped[int] = by_database()  # 1, 2, 3... per dataset
    original_filename: Mapped[str | None]
    original_size_bytes: Mapped[int]
    status: Mapped[str] = mapped_column(pg_enum("version_status", "pending", "processing", "completed", "failed"),
                                        server_default=FetchedValue())
    created_at: Mapped[datetime] = by_database()
    processed_at: Mapped[datetime | None] = kept_by_database()
    updated_at: Mapped[datetime] = kept_by_database()


class Workflow(Base):
    __tablename__ = "workflows"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str]
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = by_database()
    updated_at: Mapped[datetime] = kept_by_database()


class WorkflowSnapshot(Base):
    __tablename__ = "workflow_snapshots"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workflows.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    snapshot_data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = by_database()


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    workflow_snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_snapshots.id"))
    status: Mapped[str] = mapped_column(pg_enum("job_status", "pending", "queued", "running", "completed",
                                                "failed", "cancelled"))
    credit_cost: Mapped[int]
    results: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_message: Mapped[str | None]
    attempt: Mapped[int] = kept_by_database()
    queued_at: Mapped[datetime | None] = kept_by_database()
    created_at: Mapped[datetime] = by_database()
    started_at: Mapped[datetime | None] = kept_by_database()
    completed_at: Mapped[datetime | None] = kept_by_database()
    updated_at: Mapped[datetime] = kept_by_database()


class JobNode(Base):
    __tablename__ = "job_nodes"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"))
    user_id: Mapped[uuid.UUID] = by_database()  # copied from the job
    node_id: Mapped[str]
    status: Mapped[str] = mapped_column(pg_enum("node_status", "pending", "running", "success", "failed", "skipped"),
                                        server_default=FetchedValue())
    output_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class TrainedModel(Base):
    __tablename__ = "models"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"))
    name: Mapped[str]
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB)  # {"accuracy": 0.93}: numbers only
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=FetchedValue())
    created_at: Mapped[datetime] = by_database()
    updated_at: Mapped[datetime] = kept_by_database()


class Tutorial(Base):
    __tablename__ = "tutorials"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    slug: Mapped[str]
    title: Mapped[str]
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    step_count: Mapped[int | None] = mapped_column(
        Computed("case when jsonb_typeof(steps) = 'array' then jsonb_array_length(steps) end", persisted=True))


class CreditTransaction(Base):
    __tablename__ = "credit_transactions"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=FetchedValue())  # drawn by the trigger
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    entry_number: Mapped[int] = by_database()  # 1, 2, 3... per user
    type: Mapped[str] = mapped_column(pg_enum("transaction_type", "purchase", "consumption", "refund", "adjustment"))
    amount: Mapped[int]
    balance_after: Mapped[int] = by_database()
    description: Mapped[str | None]
    job_id: Mapped[uuid.UUID | None]  # not a foreign key: the ledger outlives jobs
    package_id: Mapped[uuid.UUID | None]
    stripe_payment_id: Mapped[str | None]
    created_at: Mapped[datetime] = by_database()


@event.listens_for(Session, "after_begin")
def act_for_user(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    """Row-level security reads automl.user_id: set it, local to the transaction, as each begins."""
    user_id = session.info.get("user_id")
    if user_id is not None:
        connection.execute(text("select set_config('automl.user_id', :user_id, true)"), {"user_id": str(user_id)})
