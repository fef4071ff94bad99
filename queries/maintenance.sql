-- Maintenance entry points: they span users, so they belong to operators, not tenants.

-- name: purge_soft_deleted(retention)
-- Remove what has been soft-deleted longer than retention; returns rows removed per table.
-- not-null: item, removed
-- optional: retention
select item, removed from purge_soft_deleted(coalesce(:retention::interval, '30 days'));

-- name: check_integrity()
-- Every broken invariant, one row each (none on a healthy database).
-- not-null: invariant, subject, detail
select invariant, subject, detail from check_integrity();

-- name: rescue_stalled_jobs(stalled_after)
-- Requeue (or fail, when attempts are spent) running jobs whose heartbeat is older than stalled_after.
-- not-null: job_id, action
-- optional: stalled_after
select job_id, action from rescue_stalled_jobs(coalesce(:stalled_after::interval, '5 minutes'));
