-- Jobs: submission (snapshot + charge in one statement), the worker queue, node status, and the
-- owner's views. Charging, refunds, transitions and stamps are the database's (050_jobs.sql).

-- name: submit_job(user_id, workflow_snapshot_id, credit_cost, priority, idempotency_key)^
-- Queue a job for a snapshot and charge its cost, atomically, with one pending node row per graph node; a repeated idempotency_key returns the first job (charged once), waiting for it if it is not committed yet.
-- optional: priority, idempotency_key
with job as (
    insert into jobs as j (user_id, workflow_snapshot_id, status, credit_cost, priority, idempotency_key)
    values (:user_id, :workflow_snapshot_id, 'queued', :credit_cost, coalesce(:priority::integer, 0),
            :idempotency_key)
    -- A retry locks and returns the first job, committed (DO NOTHING would return nothing while
    -- the first is in flight: this statement's snapshot predates it). xmax = 0: a row this
    -- statement inserted, not the first job it locked.
    on conflict (user_id, idempotency_key) where idempotency_key is not null do update set status = j.status
    returning j.*, j.xmax = 0 as inserted
), nodes as (
    insert into job_nodes (job_id, user_id, node_id, node_type)
    select job.id, job.user_id, node ->> 'id',
           case when node ->> 'type' = any (enum_range(null::node_type)::text[])
                then (node ->> 'type')::node_type end
      from job
      join workflow_snapshots s on s.id = job.workflow_snapshot_id and s.user_id = job.user_id
     cross join lateral jsonb_array_elements(s.snapshot_data -> 'nodes') as node
     where job.inserted
)
select id, user_id, workflow_snapshot_id, status, credit_cost, priority, celery_task_id, results, error_message, error_traceback, idempotency_key, attempt, max_attempts, worker_id, heartbeat_at, queued_at, created_at, started_at, completed_at, updated_at
  from job;

-- name: create_pending_job(user_id, workflow_snapshot_id, credit_cost, priority)^
-- Create a job without queueing it (no charge until queue_job).
-- optional: priority
insert into jobs (user_id, workflow_snapshot_id, credit_cost, priority)
values (:user_id, :workflow_snapshot_id, :credit_cost, coalesce(:priority::integer, 0))
returning *;

-- name: queue_job(user_id, id)^
-- Put a pending job in the queue; its cost is charged in the same statement.
update jobs set status = 'queued' where id = :id and user_id = :user_id returning *;

-- name: cancel_job(user_id, id)^
-- Cancel a pending, queued or running job; a charged job is refunded.
update jobs set status = 'cancelled' where id = :id and user_id = :user_id returning *;

-- name: claim_job(worker_id)^
-- Worker: take the most urgent queued job (highest priority, then oldest) and mark it running.
update jobs j set status = 'running', worker_id = :worker_id  -- claim_jobs()'s statement, without the call's cost
  from (select id from jobs
         where status = 'queued'
         order by priority desc, queued_at, id
         limit 1
           for update skip locked) picked
 where j.id = picked.id
returning j.*;

-- name: claim_jobs(worker_id, how_many)
-- Worker: take up to how_many queued jobs, most urgent first, and mark them running (a batch claim).
update jobs j set status = 'running', worker_id = :worker_id
  from (select id from jobs
         where status = 'queued'
         order by priority desc, queued_at, id
         limit :how_many
           for update skip locked) picked
 where j.id = picked.id
returning j.*;

-- name: heartbeat(id, worker_id)$
-- Worker: report the job alive; NULL means it is no longer this worker's to run.
select heartbeat_job(:id, :worker_id);

-- name: set_node_status(job_id, node_id, status, output_data, error_message)^
-- Worker: move one node of a running job (pending -> running -> success | failed).
-- optional: output_data, error_message
update job_nodes set status = :status, output_data = coalesce(:output_data::jsonb, output_data),
       error_message = :error_message
 where job_id = :job_id and node_id = :node_id
returning *;

-- name: complete_job(id, worker_id, results)^
-- Worker: the job finished; it keeps its charge.
-- optional: results
update jobs set status = 'completed', results = :results
 where id = :id and worker_id = :worker_id
returning *;

-- name: fail_job(id, worker_id, error_message, error_traceback)^
-- Worker: the job failed; its charge is refunded.
-- optional: error_message, error_traceback
update jobs set status = 'failed', error_message = :error_message, error_traceback = :error_traceback
 where id = :id and worker_id = :worker_id
returning *;

-- name: list_jobs(user_id, before_created_at, before_id, page_size)
-- A user's jobs newest first, one page after the (created_at, id) key of the previous page's last row.
-- optional: before_created_at, before_id
select * from jobs
 where user_id = :user_id
   and (:before_created_at::timestamptz is null
        or (created_at, id) < (:before_created_at::timestamptz, :before_id::uuid))
 order by created_at desc, id desc
 limit :page_size;

-- name: get_job(user_id, id)^
-- One job of the user.
select * from jobs where id = :id and user_id = :user_id;

-- name: list_job_nodes(user_id, job_id)
-- The nodes of a job, in the order they were created.
select * from job_nodes where job_id = :job_id and user_id = :user_id order by created_at, node_id;
