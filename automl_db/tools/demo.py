"""`just demo`: the platform's story end to end through the typed API, on the embedded database.

A user signs up and buys credits, uploads a dataset (ingestion -> version -> profile), builds a
workflow and runs it (snapshot, charge, claim, nodes, a model), a second run fails and is refunded,
a third trains another model, the models meet on an experiment leaderboard, the user follows a
tutorial, and the database's own audit ends it.
"""

import sys
import uuid
from collections.abc import Sequence
from typing import Any

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import AutomlDbError, InvalidTransition
from automl_db.rows import FileFormat, JobStatus, NodeStatus, ProblemType, UserTier
from automl_db.shapes import WorkflowGraph
from automl_db.urls import resolve_url, with_user

GRAPH = WorkflowGraph.model_validate({
    "nodes": [{"id": "data", "type": "dataset"}, {"id": "clean", "type": "preprocess"},
              {"id": "split", "type": "split"}, {"id": "train", "type": "model", "algorithm": "random_forest"},
              {"id": "score", "type": "evaluate"}],
    "edges": [{"source": "data", "target": "clean"}, {"source": "clean", "target": "split"},
              {"source": "split", "target": "train"}, {"source": "train", "target": "score"}],
})


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def run_job(db: Database, workers: Database, user: uuid.UUID, workflow: uuid.UUID, worker: str, *,
            fail_at: str | None = None, algorithm: str,
            metrics: dict[str, float]) -> tuple[uuid.UUID, uuid.UUID | None]:
    """Snapshot, submit (charged), claim, run the nodes; fail at `fail_at` or register a model."""
    with db.transaction(user_id=user) as conn:
        snapshot = q.snapshot_workflow(conn, user_id=user, workflow_id=workflow)
        assert snapshot is not None
        job = q.submit_job(conn, user_id=user, workflow_snapshot_id=snapshot.id, credit_cost=40, priority=5)
        assert job is not None
    with workers.transaction() as conn:  # automl_worker takes from the queue, across users...
        claimed = q.claim_job(conn, worker_id=worker)
        assert claimed is not None
        assert claimed.id == job.id
        q.heartbeat(conn, id=job.id, worker_id=worker)
    with workers.transaction(user_id=claimed.user_id) as conn:  # ...then acts for the job's owner
        for node in GRAPH.nodes:
            q.set_node_status(conn, job_id=job.id, node_id=node.id, status=NodeStatus.RUNNING)
            if node.id == fail_at:
                q.set_node_status(conn, job_id=job.id, node_id=node.id, status=NodeStatus.FAILED,
                                  error_message="MemoryError while fitting")
                q.fail_job(conn, id=job.id, worker_id=worker, error_message="node clean failed: MemoryError",
                           error_traceback="Traceback (most recent call last): ...")
                return job.id, None
            q.set_node_status(conn, job_id=job.id, node_id=node.id, status=NodeStatus.SUCCESS,
                              output_data={"seconds": 1.5})
    with db.transaction(user_id=user) as conn:
        model = q.register_model(conn, user_id=user, job_id=job.id, name=f"churn-{algorithm}", algorithm=algorithm,
                                 problem_type=ProblemType.CLASSIFICATION, metrics=metrics,
                                 hyperparameters={"n_estimators": 200}, s3_path=f"s3://models/{job.id}.pkl")
        assert model is not None
    with workers.transaction(user_id=user) as conn:
        q.complete_job(conn, id=job.id, worker_id=worker, results={"model_id": str(model.id), **metrics})
    return job.id, model.id


class ReferenceDataMissing(AutomlDbError):
    """The packages and tutorials the story uses are not in the database (`automl-db up` loads them)."""


def main() -> int:
    try:
        small = Settings(pool_min_size=2, pool_max_size=4)  # a demo needs few; the rest from the environment
        # The demo plays three services, each logged in as its own role on the same server (embedded, or
        # DATABASE_URL's where the roles may log in, as `automl-db up` and the tests let them locally).
        server = resolve_url(small)
        with (Database(with_user(server, "automl_app"), settings=small) as db,
              Database(with_user(server, "automl_worker"), settings=small) as workers,
              Database(with_user(server, "automl_billing"), settings=small) as billing):
            story(db, workers, billing)
    except AutomlDbError as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


#: The reference data the story uses: a package a free account may buy, and a published tutorial.
BUILDER = "Builder"
TUTORIAL = "first-model"


def check_reference_data(db: Database) -> None:
    """Fail before anyone signs up, rather than with a bare StopIteration after the sign-up committed."""
    with db.transaction(read_only=True) as conn:
        packages = {p.name for p in q.packages_for_tier(conn, tier=UserTier.FREE)}
        tutorials = {t.slug for t in q.list_published_tutorials(conn)}
    missing = [f"credit package {BUILDER!r}"] if BUILDER not in packages else []
    missing += [f"published tutorial {TUTORIAL!r}"] if TUTORIAL not in tutorials else []
    if missing:
        raise ReferenceDataMissing(f"reference data is not loaded (no {' and no '.join(missing)}): run `automl-db up`"
                                   " (or `just up`) first")


def story(db: Database, workers: Database, billing: Database) -> None:
    """db acts as automl_app (row-level security: every transaction acts for one user); workers
    as automl_worker; billing as automl_billing, the only role that creates credits. Reference
    data (packages, tutorials) was loaded by `automl-db up`; without it nothing is written."""
    tag = uuid.uuid4().hex[:8]
    check_reference_data(db)

    # 1. Sign up; billing credits the package paid for (the same Stripe payment twice credits once).
    uid = uuid.uuid4()
    with db.transaction(user_id=uid) as conn:
        user = q.sign_up(conn, email=f"ada.{tag}@example.com", full_name="Ada Lovelace")
        assert user is not None
        packages = q.packages_for_tier(conn, tier=UserTier.FREE)
    builder = next(p for p in packages if p.name == BUILDER)
    payment = f"pi_demo_{tag}"
    with billing.transaction() as conn:  # the payment webhook
        q.purchase_credits(conn, user_id=uid, package_id=builder.id, stripe_payment_id=payment)
    with billing.transaction() as conn:  # Stripe retries it
        q.purchase_credits(conn, user_id=uid, package_id=builder.id, stripe_payment_id=payment)
    with db.transaction(user_id=uid) as conn:
        balance = q.get_balance(conn, user_id=uid)
    print(f"Ada signed up ({user.email}, tier {user.tier}) and bought '{builder.name}' "
          f"({builder.credits} credits; the retried payment was not credited twice): balance {balance}")

    # 2. Upload a dataset: version, ingestion with progress, profile.
    with db.transaction(user_id=uid) as conn:
        dataset = q.create_dataset(conn, user_id=uid, name="Customer churn", problem_type=ProblemType.CLASSIFICATION,
                                   target_column="churned", description="Telco customers, one row each")
        assert dataset is not None
        version = q.add_version(conn, user_id=uid, dataset_id=dataset.id, original_filename="churn.csv",
                                original_format=FileFormat.CSV, original_size_bytes=977_501)
        assert version is not None
        ingestion = q.create_ingestion_job(conn, user_id=uid, dataset_version_id=version.id)
        assert ingestion is not None
    with db.transaction(user_id=uid) as conn:
        q.start_ingestion(conn, user_id=uid, id=ingestion.id, worker_id="ingest-1")
        q.mark_version_processing(conn, user_id=uid, id=version.id)
        q.report_ingestion_progress(conn, user_id=uid, id=ingestion.id, stage="convert", progress_percent=60,
                                    rows_processed=4200, bytes_processed=586_000)
        q.mark_version_completed(conn, user_id=uid, id=version.id, s3_path=f"s3://datasets/{version.id}.parquet",
                                 parquet_size_bytes=212_344, row_count=7043, column_count=21,
                                 columns_metadata=[{"name": "tenure", "type": "int64"},
                                                   {"name": "churned", "type": "bool"}])
        q.store_profile(conn, user_id=uid, dataset_version_id=version.id, row_count=7043, column_count=21,
                        missing_cells=11, duplicate_rows=0, memory_bytes=1_183_224,
                        columns={"tenure": {"type": "numeric", "mean": 32.4, "missing": 0}},
                        alerts=[{"column": "TotalCharges", "kind": "missing", "detail": "11 blanks"}],
                        profiler_version="4.10")
        q.finish_ingestion(conn, user_id=uid, id=ingestion.id, status=JobStatus.COMPLETED)
        q.set_current_version(conn, user_id=uid, dataset_id=dataset.id, version_id=version.id)
        listing = q.list_datasets(conn, user_id=uid)
        ingested = q.list_ingestion_jobs(conn, user_id=uid, dataset_version_id=version.id)
        profile = q.get_profile(conn, user_id=uid, dataset_version_id=version.id)
    table("Datasets", ["name", "current version", "status", "rows", "columns"],
          [(d.name, d.current_version_number, d.current_version_status, d.current_row_count, d.current_column_count)
           for d in listing])
    table("Ingestion", ["run", "status", "progress", "rows processed", "profile alerts"],
          [(str(i.id)[:8], i.status, f"{i.progress_percent}%", i.rows_processed, len(profile.alerts) if profile else 0)
           for i in ingested])

    # 3. Build a workflow and run it three times: success, failure (refunded), success.
    with db.transaction(user_id=uid) as conn:
        workflow = q.create_workflow(conn, user_id=uid, name="Churn pipeline", definition=GRAPH)
        assert workflow is not None
    first_job, forest = run_job(db, workers, uid, workflow.id, "worker-1", algorithm="random_forest",
                                metrics={"f1": 0.81, "accuracy": 0.86})
    failed_job, _ = run_job(db, workers, uid, workflow.id, "worker-2", fail_at="clean", algorithm="-", metrics={})
    third = GRAPH.model_copy(deep=True)
    third.nodes[3] = third.nodes[3].model_copy(update={"algorithm": "gradient_boosting"})
    with db.transaction(user_id=uid) as conn:
        q.update_workflow_definition(conn, user_id=uid, id=workflow.id, definition=third)
    third_job, boosting = run_job(db, workers, uid, workflow.id, "worker-1", algorithm="gradient_boosting",
                                  metrics={"f1": 0.84, "accuracy": 0.87})
    try:
        with db.transaction(user_id=uid) as conn:
            q.cancel_job(conn, user_id=uid, id=first_job)
    except InvalidTransition as exc:
        refused = f"{type(exc).__name__} ({exc.sqlstate}, {exc.constraint})"
    with db.transaction(user_id=uid) as conn:
        jobs = q.list_jobs(conn, user_id=uid, page_size=10)
        nodes = q.list_job_nodes(conn, user_id=uid, job_id=failed_job)
    table("Jobs, newest first", ["job", "status", "cost", "attempt", "error"],
          [(str(j.id)[:8], j.status, j.credit_cost, j.attempt, j.error_message) for j in jobs])
    table("Nodes of the failed run", ["node", "type", "status"], [(n.node_id, n.node_type, n.status) for n in nodes])
    print(f"\nCancelling the completed first run is refused by the database: {refused}")

    # 4. Compare the models in an experiment; deploy the winner.
    with db.transaction(user_id=uid) as conn:
        experiment = q.create_experiment(conn, user_id=uid, name=f"Churn models {tag}", dataset_id=dataset.id,
                                         problem_type=ProblemType.CLASSIFICATION, primary_metric="f1")
        assert experiment is not None
        for job_id, model_id, algorithm, f1 in [(first_job, forest, "random_forest", 0.81),
                                               (third_job, boosting, "gradient_boosting", 0.84)]:
            q.add_run(conn, user_id=uid, experiment_id=experiment.id, job_id=job_id, model_id=model_id,
                      run_name=algorithm, metrics={"f1": f1})
        board = q.leaderboard(conn, user_id=uid, experiment_id=experiment.id)
        best = q.best_model_per_experiment(conn, user_id=uid)
        winner = next(b for b in best if b.experiment_id == experiment.id)
        q.deploy_model(conn, user_id=uid, id=winner.model_id)
    table(f"Leaderboard of '{experiment.name}' by {experiment.primary_metric} ({experiment.metric_goal})",
          ["#", "run", "model", "score"], [(r.position, r.run_name, r.model_name, r.score) for r in board])
    print(f"Deployed the best model: {winner.model_name}")

    # 5. Follow a tutorial.
    with db.transaction(user_id=uid) as conn:
        tutorial = next(t for t in q.list_published_tutorials(conn) if t.slug == TUTORIAL)
        q.start_tutorial(conn, user_id=uid, tutorial_id=tutorial.id)
        for step in ("upload", "workflow", "train", "inspect"):
            q.complete_step(conn, user_id=uid, tutorial_id=tutorial.id, step_id=step)
        q.finish_tutorial(conn, user_id=uid, tutorial_id=tutorial.id)
        progress = q.user_progress(conn, user_id=uid)
    table("Tutorials", ["tutorial", "steps done", "finished"],
          [(p.title, f"{p.steps_done}/{p.step_count}", "yes" if p.completed_at else "no") for p in progress])

    # 6. The ledger explains the balance; the database audits itself.
    with db.transaction(user_id=uid) as conn:
        history = q.credit_history(conn, user_id=uid, page_size=20)
        final = q.get_user(conn, id=uid)
    with workers.transaction() as conn:
        broken = q.check_integrity(conn)
    table("Credit ledger", ["#", "type", "amount", "balance after", "description"],
          [(e.entry_number, e.type, e.amount, e.balance_after, e.description) for e in reversed(history)])
    assert final is not None
    print(f"\nBalance {final.credit_balance} credits; {final.dataset_count} dataset, {final.workflow_count} workflow,"
          f" {final.model_count} models, {final.storage_used_bytes:,} bytes stored")
    print(f"check_integrity(): {len(broken)} broken invariants" + (": " + repr(broken) if broken else ""))
    if broken:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
