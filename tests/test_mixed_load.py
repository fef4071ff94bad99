"""One lock order under ordinary load: 8 clients and 2 workers for 30 s, through the typed API.

The mix is the one that deadlocked when the rules took rows in different orders: charging a job and
cancelling another in one transaction beside workers failing jobs; crediting an account and
uploading in one transaction beside plain uploads; deletions and soft deletions that move counters.
Users are shared by two clients each, so they contend on the same rows. The run must end with no
deadlock and no error outside the rules' own refusals, and check_integrity() clean (conftest).
AUTOML_DB_LOAD_SECONDS shortens or lengthens it.
"""

import functools
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from automl_db import queries as q
from automl_db.config import Settings
from automl_db.database import Database
from automl_db.errors import AutomlDbError, InsufficientCredits, InvalidTransition, NotFound
from automl_db.rows import Job, JobStatus, NodeStatus, UserTier
from automl_db.shapes import WorkflowGraph

SECONDS = float(os.environ.get("AUTOML_DB_LOAD_SECONDS", "30"))
CLIENTS, WORKERS, USERS = 8, 2, 4
GRAPH = WorkflowGraph.model_validate({"nodes": [{"id": "a"}, {"id": "b"}], "edges": [{"source": "a", "target": "b"}]})
#: The rules' own refusals, which a client in this mix meets in the ordinary course of things.
EXPECTED = (InsufficientCredits, InvalidTransition, NotFound)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.failed: list[str] = []

    def run(self, name: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except EXPECTED as exc:
            with self.lock:
                self.refused[f"{name}: {type(exc).__name__}"] += 1
            return
        except AutomlDbError as exc:  # a deadlock (Retryable 40P01) or anything else unexpected
            with self.lock:
                self.failed.append(f"{name}: {type(exc).__name__} {getattr(exc, 'sqlstate', '')} {exc}")
            return
        with self.lock:
            self.done[name] += 1


def test_a_mixed_load_never_deadlocks(db_url: str, app_url: str, worker_url: str, billing_url: str) -> None:
    settings = Settings(pool_min_size=1, pool_max_size=CLIENTS + 2, pool_timeout=30)
    with (Database(db_url, settings=settings) as admin, Database(app_url, settings=settings) as app,
          Database(worker_url, settings=settings) as workers, Database(billing_url, settings=settings) as billing):
        users: list[uuid.UUID] = []
        datasets: dict[uuid.UUID, uuid.UUID] = {}
        snapshots: dict[uuid.UUID, uuid.UUID] = {}
        for n in range(USERS):
            uid = uuid.uuid4()
            with app.transaction(user_id=uid) as c:
                assert q.sign_up(c, email=f"load{n}.{uid.hex[:6]}@example.com") is not None
                dataset = q.create_dataset(c, user_id=uid, name="load")
                workflow = q.create_workflow(c, user_id=uid, name="load", definition=GRAPH)
                assert dataset is not None
                assert workflow is not None
                snapshot = q.snapshot_workflow(c, user_id=uid, workflow_id=workflow.id)
                assert snapshot is not None
            with billing.transaction() as c:
                q.change_tier(c, id=uid, tier=UserTier.ENTERPRISE)  # no quotas in the way
                q.adjust_credits(c, user_id=uid, amount=1_000_000, description="load test")
            users.append(uid)
            datasets[uid], snapshots[uid] = dataset.id, snapshot.id

        tally = Tally()
        stop = time.monotonic() + SECONDS

        def submit_and_cancel(rng: random.Random, uid: uuid.UUID) -> None:
            with app.transaction(user_id=uid) as c:
                job = q.submit_job(c, user_id=uid, workflow_snapshot_id=snapshots[uid], credit_cost=rng.randint(1, 9))
                assert job is not None
                victims = [j for j in q.list_jobs(c, user_id=uid, page_size=20)
                           if j.status in (JobStatus.QUEUED, JobStatus.RUNNING) and j.id != job.id]
                if victims and rng.random() < 0.3:
                    q.cancel_job(c, user_id=uid, id=rng.choice(victims).id)

        def credit_and_upload(rng: random.Random, uid: uuid.UUID) -> None:
            with admin.transaction() as c:  # an operator: the superuser, acting for nobody
                q.adjust_credits(c, user_id=uid, amount=rng.randint(1, 5), description="goodwill")
                q.add_version(c, user_id=uid, dataset_id=datasets[uid], original_size_bytes=rng.randint(1, 100))

        def upload(rng: random.Random, uid: uuid.UUID) -> None:
            with app.transaction(user_id=uid) as c:
                version = q.add_version(c, user_id=uid, dataset_id=datasets[uid], original_size_bytes=10)
                assert version is not None
                if rng.random() < 0.5:
                    c.execute("delete from dataset_versions where id = %s", [version.id])

        def buy(rng: random.Random, uid: uuid.UUID) -> None:
            with billing.transaction() as c:
                q.adjust_credits(c, user_id=uid, amount=rng.randint(1, 50), description="bought")

        def workflows(rng: random.Random, uid: uuid.UUID) -> None:
            with app.transaction(user_id=uid) as c:
                workflow = q.create_workflow(c, user_id=uid, name="w", definition=GRAPH)
                assert workflow is not None
                q.soft_delete_workflow(c, user_id=uid, id=workflow.id)
                if rng.random() < 0.5:
                    q.restore_workflow(c, user_id=uid, id=workflow.id)

        client_actions: list[Callable[[random.Random, uuid.UUID], None]] = [
            submit_and_cancel, submit_and_cancel, credit_and_upload, upload, buy, workflows]

        def client(i: int) -> None:
            rng = random.Random(i)
            uid = users[i % USERS]  # two clients per user
            while time.monotonic() < stop:
                action = rng.choice(client_actions)
                tally.run(action.__name__, functools.partial(action, rng, uid))

        def finish(rng: random.Random, job: Job, worker: str) -> None:
            with workers.transaction(user_id=job.user_id) as c:  # workers act for the job's owner
                q.set_node_status(c, job_id=job.id, node_id="a", status=NodeStatus.RUNNING)
                if rng.random() < 0.4:
                    q.fail_job(c, id=job.id, worker_id=worker, error_message="boom")
                else:
                    model = q.register_model(c, user_id=job.user_id, job_id=job.id, name="m")
                    q.complete_job(c, id=job.id, worker_id=worker, results={})
                    if model is not None and rng.random() < 0.5:
                        c.execute("delete from models where id = %s", [model.id])

        def rescue() -> None:  # jobs held longer than a second go back to the queue (or fail, refunded)
            with workers.transaction() as c:
                q.rescue_stalled_jobs(c, stalled_after=timedelta(seconds=1))

        def worker(i: int) -> None:
            rng = random.Random(100 + i)
            name = f"load-worker-{i}"
            claimed: list[Job] = []

            def claim() -> None:
                with workers.transaction() as c:
                    job = q.claim_job(c, worker_id=name)
                    if job is not None:
                        claimed.append(job)

            while time.monotonic() < stop:
                tally.run("claim", claim)
                if claimed:
                    tally.run("finish", lambda: finish(rng, claimed.pop(), name))
                else:
                    time.sleep(0.01)
                if rng.random() < 0.05:
                    tally.run("rescue", rescue)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        threads += [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 120)
        assert not any(thread.is_alive() for thread in threads)

        print(f"\nmixed load, {SECONDS:.0f} s: done {dict(tally.done)}; refused {dict(tally.refused)}")
        assert tally.failed == [], tally.failed[:10]
        assert tally.done["submit_and_cancel"] > 0
        assert tally.done["finish"] > 0
        assert tally.done["credit_and_upload"] > 0
        with admin.transaction() as c:
            assert q.check_integrity(c) == []
