"""Every generated operation, as a service calls it: typed results and typed refusals.

The service side runs as automl_app (row-level security on, every transaction acting for a
user), workers as automl_worker, the billing service as automl_billing (the only role that
creates credits); `admin` (the superuser) only seeds reference data and test credits.
"""

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import (
    AlreadyExists,
    Immutable,
    InsufficientCredits,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from automl_db.rows import (
    FileFormat,
    JobStatus,
    MetricGoal,
    NodeStatus,
    NodeType,
    OauthProvider,
    ProblemType,
    User,
    UserTier,
)
from automl_db.shapes import WorkflowGraph

GRAPH = WorkflowGraph.model_validate({
    "nodes": [{"id": "data", "type": "dataset"}, {"id": "prep", "type": "preprocess"},
              {"id": "train", "type": "model"}, {"id": "custom", "type": "not-a-known-kind"}],
    "edges": [{"source": "data", "target": "prep"}, {"source": "prep", "target": "train"},
              {"source": "train", "target": "custom"}],
})


SETTINGS = Settings(pool_min_size=1, pool_max_size=4, pool_timeout=5)
#: Behind a transaction pooler that does not track prepared statements (PgBouncer 1.18).
POOLED = Settings(pool_min_size=1, pool_max_size=4, pool_timeout=5, prepare_threshold=None)
Route = Callable[[str], Database]


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request: pytest.FixtureRequest) -> Route:
    """Every typed-API test runs straight to the server and again through PgBouncer (transaction mode)."""
    if request.param == "direct":
        return lambda url: Database(url, settings=SETTINGS)
    through = request.getfixturevalue("through_pgbouncer")
    return lambda url: Database(through(url), settings=POOLED)


@pytest.fixture
def admin(db_url: str) -> Iterator[Database]:
    with Database(db_url, settings=SETTINGS) as database:
        with database.transaction() as conn:
            q.seed_reference_data(conn)
        yield database


@pytest.fixture
def db(admin: Database, app_url: str, route: Route) -> Iterator[Database]:
    with route(app_url) as database:
        yield database


@pytest.fixture
def worker(admin: Database, worker_url: str, route: Route) -> Iterator[Database]:
    with route(worker_url) as database:
        yield database


@pytest.fixture
def billing(admin: Database, billing_url: str, route: Route) -> Iterator[Database]:
    with route(billing_url) as database:
        yield database


def new_user(db: Database, credits: int = 0, admin: Database | None = None) -> User:
    uid = uuid.uuid4()
    with db.transaction(user_id=uid) as conn:
        user = q.sign_up(conn, email=f"u{uuid.uuid4().hex[:10]}@example.com", full_name="Test User")
        assert user is not None
        assert user.id == uid
    if credits:
        assert admin is not None
        with admin.transaction() as conn:
            q.adjust_credits(conn, user_id=user.id, amount=credits, description="test grant")
    return user


def snapshot_for(db: Database, user: User) -> uuid.UUID:
    """A snapshot of a fresh workflow of the user."""
    with db.transaction(user_id=user.id) as conn:
        workflow = q.create_workflow(conn, user_id=user.id, name="wf", definition=GRAPH)
        assert workflow is not None
        snapshot = q.snapshot_workflow(conn, user_id=user.id, workflow_id=workflow.id)
        assert snapshot is not None
        return snapshot.id


def test_users(db: Database, billing: Database) -> None:
    uid = uuid.uuid4()
    with db.transaction(user_id=uid) as conn:
        ada = q.sign_up(conn, email="Ada@Example.com", full_name="Ada")
        assert ada is not None
        assert (ada.id, ada.tier, ada.credit_balance, ada.email_verified) == (uid, UserTier.FREE, 0, False)
        assert q.get_user(conn, id=ada.id) == ada
        verified = q.verify_email(conn, id=ada.id)
        assert verified is not None
        assert verified.email_verified
        closed = q.soft_delete_user(conn, id=ada.id)
        assert closed is not None
        assert closed.is_deleted
        assert closed.deleted_at is not None
        reopened = q.restore_user(conn, id=ada.id)
        assert reopened is not None
        assert reopened.deleted_at is None
    with pytest.raises(PermissionDenied), db.transaction(user_id=uid) as conn:
        q.change_tier(conn, id=uid, tier=UserTier.PRO)  # a tier is bought, not chosen by the app
    with billing.transaction() as conn:
        pro = q.change_tier(conn, id=uid, tier=UserTier.PRO)
        assert pro is not None
        assert pro.tier == UserTier.PRO
    with db.transaction() as conn:  # sign-in: find the account, then act for it
        assert q.find_user_id(conn, email="ADA@example.COM") == uid
        assert q.get_user(conn, id=uid) is None  # not acting for anyone: nothing is visible
        assert q.sign_in_oauth(conn, oauth_provider=OauthProvider.GITHUB, oauth_id="42") is None
    grace = uuid.uuid4()
    with db.transaction(user_id=grace) as conn:  # an unknown identity signs up under a new id
        signed_up = q.sign_up_oauth(conn, email="gh@example.com", full_name="Grace",
                                    oauth_provider=OauthProvider.GITHUB, oauth_id="42")
        assert signed_up is not None
        assert (signed_up.id, signed_up.email_verified) == (grace, True)
    with db.transaction() as conn:
        assert q.sign_in_oauth(conn, oauth_provider=OauthProvider.GITHUB, oauth_id="42") == grace
    with pytest.raises(AlreadyExists) as duplicate, db.transaction(user_id=uuid.uuid4()) as conn:
        q.sign_up(conn, email="ADA@EXAMPLE.COM")
    assert (duplicate.value.sqlstate, duplicate.value.constraint) == ("23505", "users_email_lower_key")
    with pytest.raises(InvalidInput) as malformed, db.transaction(user_id=uuid.uuid4()) as conn:
        q.sign_up(conn, email="nobody")
    assert malformed.value.constraint == "users_email_format"
    with pytest.raises(PermissionDenied), db.transaction() as conn:  # an account only for the id acted for
        q.sign_up(conn, email="nobody@example.com")


def test_datasets_versions_ingestion_profiles(db: Database) -> None:
    user, other = new_user(db), new_user(db)
    uid = user.id
    with db.transaction(user_id=uid) as conn:
        dataset = q.create_dataset(conn, user_id=uid, name="churn", problem_type=ProblemType.CLASSIFICATION)
        assert dataset is not None
        v1 = q.add_version(conn, user_id=uid, dataset_id=dataset.id, original_size_bytes=1000,
                           original_format=FileFormat.CSV, original_filename="a.csv")
        v2 = q.add_version(conn, user_id=uid, dataset_id=dataset.id, original_size_bytes=500)
        assert v1 is not None
        assert v2 is not None
        assert (v1.version_number, v2.version_number, v2.original_format) == (1, 2, FileFormat.UNKNOWN)
        run = q.create_ingestion_job(conn, user_id=uid, dataset_version_id=v1.id)
        assert run is not None
        started = q.start_ingestion(conn, user_id=uid, id=run.id, worker_id="w")
        assert started is not None
        assert (started.status, started.attempt) == (JobStatus.RUNNING, 1)
        progressed = q.report_ingestion_progress(conn, user_id=uid, id=run.id, stage="parse", progress_percent=50)
        assert progressed is not None
        assert progressed.heartbeat_at is not None
        processing = q.mark_version_processing(conn, user_id=uid, id=v1.id)
        assert processing is not None
        done = q.mark_version_completed(conn, user_id=uid, id=v1.id, s3_path="s3://x", parquet_size_bytes=300,
                                        row_count=10, column_count=3, columns_metadata=[{"name": "a"}])
        assert done is not None
        assert done.status == "completed"
        finished = q.finish_ingestion(conn, user_id=uid, id=run.id, status=JobStatus.COMPLETED)
        assert finished is not None
        assert finished.progress_percent == 100
        failed = q.mark_version_failed(conn, user_id=uid, id=v2.id, error_message="bad encoding")
        assert failed is not None
        assert failed.status == "failed"
        profile = q.store_profile(conn, user_id=uid, dataset_version_id=v1.id, row_count=10,
                                  columns={"a": {"mean": 1.0}})
        replaced = q.store_profile(conn, user_id=uid, dataset_version_id=v1.id, row_count=11)
        assert profile is not None
        assert replaced is not None
        assert (replaced.id, replaced.row_count, replaced.columns) == (profile.id, 11, {})
        assert q.get_profile(conn, user_id=uid, dataset_version_id=v1.id) == replaced
        current = q.set_current_version(conn, user_id=uid, dataset_id=dataset.id, version_id=v1.id)
        assert current is not None
        listed = q.list_datasets(conn, user_id=uid)
        assert [(d.current_version_number, d.current_version_status, d.current_row_count) for d in listed] == [
            (1, "completed", 10)]
        assert [v.version_number for v in q.list_versions(conn, user_id=uid, dataset_id=dataset.id)] == [2, 1]
        assert len(q.list_ingestion_jobs(conn, user_id=uid, dataset_version_id=v1.id)) == 1
        renamed = q.rename_dataset(conn, user_id=uid, id=dataset.id, name="churn v2")
        assert renamed is not None
        assert renamed.name == "churn v2"
        user_now = q.get_user(conn, id=uid)
        assert user_now is not None
        assert user_now.storage_used_bytes == 1800
    # Another user's dataset is invisible and cannot be written to.
    with db.transaction(user_id=other.id) as conn:
        assert q.get_dataset(conn, user_id=other.id, id=dataset.id) is None
        assert q.list_datasets(conn, user_id=other.id) == []
    with pytest.raises(NotFound) as foreign, db.transaction(user_id=other.id) as conn:
        q.add_version(conn, user_id=other.id, dataset_id=dataset.id, original_size_bytes=1)
    assert foreign.value.constraint == "dataset_versions_dataset_fkey"
    with pytest.raises(QuotaExceeded) as quota, db.transaction(user_id=uid) as conn:
        q.add_version(conn, user_id=uid, dataset_id=dataset.id, original_size_bytes=2 * 1024**3)
    assert quota.value.constraint == "users_storage_within_tier"
    with db.transaction(user_id=uid) as conn:
        assert q.delete_dataset(conn, user_id=uid, id=dataset.id) == 1
        user_after = q.get_user(conn, id=uid)
        assert user_after is not None
        assert (user_after.dataset_count, user_after.storage_used_bytes) == (0, 0)


def test_workflows_and_snapshots(db: Database) -> None:
    user = new_user(db)
    uid = user.id
    with db.transaction(user_id=uid) as conn:
        empty = q.create_workflow(conn, user_id=uid, name="empty")
        assert empty is not None
        assert empty.definition == WorkflowGraph()
        workflow = q.create_workflow(conn, user_id=uid, name="w", definition=GRAPH)
        assert workflow is not None
        assert workflow.definition.nodes[0].id == "data"
        changed = GRAPH.model_copy(update={"edges": []})
        updated = q.update_workflow_definition(conn, user_id=uid, id=workflow.id, definition=changed)
        assert updated is not None
        assert updated.definition.edges == []
        snapshot = q.snapshot_workflow(conn, user_id=uid, workflow_id=workflow.id)
        assert snapshot is not None
        assert snapshot.snapshot_data == updated.definition
        assert q.get_snapshot(conn, user_id=uid, id=snapshot.id) == snapshot
        assert {w.id for w in q.list_workflows(conn, user_id=uid)} == {empty.id, workflow.id}
        gone = q.soft_delete_workflow(conn, user_id=uid, id=workflow.id)
        assert gone is not None
        assert gone.is_deleted
        assert [w.id for w in q.list_workflows(conn, user_id=uid)] == [empty.id]
        assert q.snapshot_workflow(conn, user_id=uid, workflow_id=workflow.id) is None
        back = q.restore_workflow(conn, user_id=uid, id=workflow.id)
        assert back is not None
        assert not back.is_deleted
    with pytest.raises(InvalidInput) as bad, db.transaction(user_id=uid) as conn:
        q.create_workflow(conn, user_id=uid, name="bad", definition={"nodes": []})
    assert bad.value.constraint == "workflows_definition_shape"


def test_job_lifecycle_through_the_api(db: Database, worker: Database, admin: Database) -> None:
    user = new_user(db, credits=100, admin=admin)
    uid = user.id
    snapshot = snapshot_for(db, user)
    with db.transaction(user_id=uid) as conn:
        job = q.submit_job(conn, user_id=uid, workflow_snapshot_id=snapshot, credit_cost=30, priority=3)
        assert job is not None
        assert job.status == JobStatus.QUEUED
        assert q.get_balance(conn, user_id=uid) == 70
        nodes = q.list_job_nodes(conn, user_id=uid, job_id=job.id)
        assert {(n.node_id, n.node_type) for n in nodes} == {
            ("data", NodeType.DATASET), ("prep", NodeType.PREPROCESS), ("train", NodeType.MODEL), ("custom", None)}
    with pytest.raises(PermissionDenied), db.transaction(user_id=uid) as conn:  # the app cannot take jobs
        q.claim_job(conn, worker_id="w1")
    with worker.transaction() as conn:  # the worker claims across users...
        claimed = q.claim_job(conn, worker_id="w1")
        assert claimed is not None
        assert (claimed.id, claimed.status, claimed.worker_id) == (job.id, JobStatus.RUNNING, "w1")
        assert q.heartbeat(conn, id=job.id, worker_id="w1") is True
        assert q.heartbeat(conn, id=job.id, worker_id="w2") is None
    with worker.transaction(user_id=claimed.user_id) as conn:  # ...then acts for the job's owner
        running = q.set_node_status(conn, job_id=job.id, node_id="data", status=NodeStatus.RUNNING)
        assert running is not None
        assert running.started_at is not None
        q.set_node_status(conn, job_id=job.id, node_id="data", status=NodeStatus.SUCCESS, output_data={"rows": 5})
        q.set_node_status(conn, job_id=job.id, node_id="prep", status=NodeStatus.RUNNING)
        q.set_node_status(conn, job_id=job.id, node_id="prep", status=NodeStatus.FAILED, error_message="boom")
        failed = q.fail_job(conn, id=job.id, worker_id="w1", error_message="prep failed")
        assert failed is not None
        assert failed.completed_at is not None
    with db.transaction(user_id=uid) as conn:
        assert q.get_balance(conn, user_id=uid) == 100  # refunded
        states = {n.node_id: n.status for n in q.list_job_nodes(conn, user_id=uid, job_id=job.id)}
        assert states == {"data": NodeStatus.SUCCESS, "prep": NodeStatus.FAILED, "train": NodeStatus.SKIPPED,
                          "custom": NodeStatus.SKIPPED}
    with pytest.raises(InvalidTransition) as illegal, db.transaction(user_id=uid) as conn:
        q.cancel_job(conn, user_id=uid, id=job.id)
    assert (illegal.value.sqlstate, illegal.value.constraint) == ("AM003", "jobs_status_transition")
    with pytest.raises(InsufficientCredits) as poor, db.transaction(user_id=uid) as conn:
        q.submit_job(conn, user_id=uid, workflow_snapshot_id=snapshot, credit_cost=101)
    assert poor.value.constraint == "credit_transactions_balance_nonnegative"
    with db.transaction(user_id=uid) as conn:
        pending = q.create_pending_job(conn, user_id=uid, workflow_snapshot_id=snapshot, credit_cost=10)
        assert pending is not None
        queued = q.queue_job(conn, user_id=uid, id=pending.id)
        assert queued is not None
        assert queued.queued_at is not None
        cancelled = q.cancel_job(conn, user_id=uid, id=pending.id)
        assert cancelled is not None
        assert cancelled.status == JobStatus.CANCELLED
        assert q.get_balance(conn, user_id=uid) == 100
        key = q.submit_job(conn, user_id=uid, workflow_snapshot_id=snapshot, credit_cost=1, idempotency_key="k1")
        assert key is not None
    with db.transaction(user_id=uid) as conn:  # a retried submission: the first job, charged once
        assert q.submit_job(conn, user_id=uid, workflow_snapshot_id=snapshot, credit_cost=1,
                            idempotency_key="k1") == key
        assert q.get_balance(conn, user_id=uid) == 99
    with worker.transaction(user_id=uid) as conn:
        assert q.complete_job(conn, id=key.id, worker_id="nobody") is None  # not this worker's job


def test_jobs_page_by_page_newest_first(db: Database) -> None:
    user = new_user(db)
    snapshot = snapshot_for(db, user)
    with db.transaction(user_id=user.id) as conn:
        created = [q.create_pending_job(conn, user_id=user.id, workflow_snapshot_id=snapshot, credit_cost=0)
                   for _ in range(25)]
    expected = [j.id for j in sorted((j for j in created if j), key=lambda j: (j.created_at, j.id), reverse=True)]
    seen: list[uuid.UUID] = []
    before: tuple[datetime, uuid.UUID] | None = None
    while True:
        with db.transaction(user_id=user.id) as conn:
            page = q.list_jobs(conn, user_id=user.id, page_size=10, before_created_at=before[0] if before else None,
                               before_id=before[1] if before else None)
        if not page:
            break
        seen += [j.id for j in page]
        before = (page[-1].created_at, page[-1].id)
    assert seen == expected


def test_models_experiments_leaderboard(db: Database) -> None:
    user, other = new_user(db), new_user(db)
    uid = user.id
    snapshot = snapshot_for(db, user)
    with db.transaction(user_id=uid) as conn:
        job = q.create_pending_job(conn, user_id=uid, workflow_snapshot_id=snapshot, credit_cost=0)
        assert job is not None
        scores = {"forest": 0.8, "boost": 0.9, "linear": 0.7}
        models = {}
        for name, f1 in scores.items():
            model = q.register_model(conn, user_id=uid, job_id=job.id, name=name, algorithm=name,
                                     metrics={"f1": f1, "loss": 1 - f1})
            assert model is not None
            models[name] = model
        assert {m.name for m in q.list_models(conn, user_id=uid)} == set(scores)
        deployed = q.deploy_model(conn, user_id=uid, id=models["boost"].id)
        assert deployed is not None
        assert deployed.deployed_at is not None
        undeployed = q.undeploy_model(conn, user_id=uid, id=models["boost"].id)
        assert undeployed is not None
        assert undeployed.deployed_at is None
        by_f1 = q.create_experiment(conn, user_id=uid, name="by f1", primary_metric="f1")
        by_loss = q.create_experiment(conn, user_id=uid, name="by loss", primary_metric="loss",
                                      metric_goal=MetricGoal.MINIMIZE)
        assert by_f1 is not None
        assert by_loss is not None
        for experiment in (by_f1, by_loss):
            for name, model in models.items():
                q.add_run(conn, user_id=uid, experiment_id=experiment.id, model_id=model.id, job_id=job.id,
                          run_name=name, metrics={"f1": scores[name], "loss": 1 - scores[name]})
            q.add_run(conn, user_id=uid, experiment_id=experiment.id, run_name="no metric")
        board = q.leaderboard(conn, user_id=uid, experiment_id=by_f1.id)
        assert [(r.position, r.run_name) for r in board] == [(1, "boost"), (2, "forest"), (3, "linear"),
                                                              (4, "no metric")]
        assert [r.run_name for r in q.leaderboard(conn, user_id=uid, experiment_id=by_loss.id)][:3] == [
            "boost", "forest", "linear"]
        best = {b.experiment_name: b.model_name for b in q.best_model_per_experiment(conn, user_id=uid)}
        assert best == {"by f1": "boost", "by loss": "boost"}
        assert len(q.list_experiments(conn, user_id=uid)) == 2
    with pytest.raises(NotFound) as foreign, db.transaction(user_id=other.id) as conn:
        q.register_model(conn, user_id=other.id, job_id=job.id, name="stolen")
    assert foreign.value.constraint == "models_job_fkey"
    with pytest.raises(NotFound), db.transaction(user_id=uid) as conn:
        q.add_run(conn, user_id=uid, experiment_id=by_f1.id, model_id=uuid.uuid4())


def test_credits(db: Database, billing: Database, admin: Database) -> None:
    user = new_user(db)
    uid = user.id
    with db.transaction(user_id=uid) as conn:
        free = {p.name for p in q.packages_for_tier(conn, tier=UserTier.FREE)}
        pro = {p.name for p in q.packages_for_tier(conn, tier=UserTier.PRO)}
        assert free == {"Starter", "Builder"}
        assert pro == {"Starter", "Builder", "Pro Pack"}
        packages = {p.name: p for p in q.packages_for_tier(conn, tier=UserTier.ENTERPRISE)}
    with billing.transaction() as conn:  # the payment webhook, then Stripe's retry of it
        first = q.purchase_credits(conn, user_id=uid, package_id=packages["Starter"].id, stripe_payment_id="pi_1")
        retry = q.purchase_credits(conn, user_id=uid, package_id=packages["Starter"].id, stripe_payment_id="pi_1")
        assert first is not None
        assert retry == first
        assert q.get_balance(conn, user_id=uid) == 100
        assert q.purchase_credits(conn, user_id=uid, package_id=packages["Enterprise"].id,
                                  stripe_payment_id="pi_2") is None  # not for a free account
        for i in range(1, 6):
            q.adjust_credits(conn, user_id=uid, amount=i, description=f"bonus {i}")
    with db.transaction(user_id=uid) as conn:
        page1 = q.credit_history(conn, user_id=uid, page_size=4)
        page2 = q.credit_history(conn, user_id=uid, page_size=4, before_entry=page1[-1].entry_number)
        assert [e.entry_number for e in page1 + page2] == [6, 5, 4, 3, 2, 1]
        assert page1[0].balance_after == 115
    with pytest.raises(PermissionDenied), db.transaction(user_id=uid) as conn:
        q.adjust_credits(conn, user_id=uid, amount=1000)  # the app cannot grant itself credits
    with pytest.raises(PermissionDenied), db.transaction(user_id=uid) as conn:
        q.purchase_credits(conn, user_id=uid, package_id=packages["Starter"].id, stripe_payment_id="pi_3")
    with pytest.raises(InsufficientCredits), billing.transaction() as conn:
        q.adjust_credits(conn, user_id=uid, amount=-116)
    with pytest.raises(PermissionDenied), db.transaction(user_id=uid) as conn:
        conn.execute("delete from credit_transactions where user_id = %s", [uid])
    with pytest.raises(Immutable) as immutable, admin.transaction() as conn:  # not even the superuser
        conn.execute("delete from credit_transactions where user_id = %s", [uid])
    assert immutable.value.constraint == "credit_transactions_immutable"


def test_tutorials(db: Database) -> None:
    user = new_user(db)
    uid = user.id
    with db.transaction(user_id=uid) as conn:
        published = q.list_published_tutorials(conn)
        assert [t.slug for t in published] == ["first-model", "compare-models"]
        tutorial = published[1]
        started = q.start_tutorial(conn, user_id=uid, tutorial_id=tutorial.id)
        assert started is not None
        assert started.content_version == 1
        unpublished = conn.execute("select id from tutorials where not is_published").fetchone()
        assert unpublished is not None
        assert q.start_tutorial(conn, user_id=uid, tutorial_id=unpublished[0]) is None
        q.complete_step(conn, user_id=uid, tutorial_id=tutorial.id, step_id="experiment")
        again = q.complete_step(conn, user_id=uid, tutorial_id=tutorial.id, step_id="experiment")
        assert again is not None
        assert (again.completed_steps, again.current_step) == (["experiment"], 1)
        assert q.complete_step(conn, user_id=uid, tutorial_id=tutorial.id, step_id="no-such-step") is None
        assert q.finish_tutorial(conn, user_id=uid, tutorial_id=tutorial.id) is None  # steps remain
        for step in ("runs", "leaderboard"):
            q.complete_step(conn, user_id=uid, tutorial_id=tutorial.id, step_id=step)
        finished = q.finish_tutorial(conn, user_id=uid, tutorial_id=tutorial.id)
        assert finished is not None
        assert finished.completed_at is not None
        progress = q.user_progress(conn, user_id=uid)
        assert [(p.slug, p.steps_done, p.step_count) for p in progress] == [("compare-models", 3, 3)]


def test_maintenance(db: Database, worker: Database, admin: Database) -> None:
    user = new_user(db, credits=10, admin=admin)
    snapshot = snapshot_for(db, user)
    with db.transaction(user_id=user.id) as conn:
        q.submit_job(conn, user_id=user.id, workflow_snapshot_id=snapshot, credit_cost=5)
    with worker.transaction() as conn:
        claimed = q.claim_job(conn, worker_id="w")
        assert claimed is not None
    with admin.transaction() as conn:
        conn.execute("update jobs set heartbeat_at = now() - interval '1 hour' where id = %s", [claimed.id])
    with worker.transaction() as conn:
        rescued = q.rescue_stalled_jobs(conn)
        assert [(r.job_id, r.action) for r in rescued] == [(claimed.id, "requeued")]
        assert q.check_integrity(conn) == []
        report = {r.item: r.removed for r in q.purge_soft_deleted(conn)}
        assert report["users_anonymized"] == 0
        assert {r.table_name for r in q.schema_tables(conn)} >= {"users", "jobs", "credit_transactions"}
