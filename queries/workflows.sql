-- Workflows (editable graphs) and their immutable snapshots.

-- name: create_workflow(user_id, name, description, definition)^
-- Create a workflow (counts toward the tier's workflow limit).
-- optional: description, definition
insert into workflows (user_id, name, description, definition)
values (:user_id, :name, :description, coalesce(:definition::jsonb, '{"nodes": [], "edges": []}'))
returning *;

-- name: update_workflow_definition(user_id, id, definition)^
-- Replace the graph of a live workflow.
update workflows set definition = :definition
 where id = :id and user_id = :user_id and not is_deleted
returning *;

-- name: list_workflows(user_id)
-- A user's live workflows, newest first.
select * from workflows
 where user_id = :user_id and not is_deleted
 order by created_at desc, id desc;

-- name: get_workflow(user_id, id)^
-- One workflow of the user, live or soft-deleted.
select * from workflows where id = :id and user_id = :user_id;

-- name: soft_delete_workflow(user_id, id)^
-- Hide a workflow; it is purged after the retention period unless restored.
update workflows set is_deleted = true where id = :id and user_id = :user_id returning *;

-- name: restore_workflow(user_id, id)^
-- Bring a soft-deleted workflow back (counts toward the limit again).
update workflows set is_deleted = false where id = :id and user_id = :user_id returning *;

-- name: snapshot_workflow(user_id, workflow_id)^
-- Freeze the current graph of a live workflow for execution.
insert into workflow_snapshots (workflow_id, user_id, snapshot_data)
select w.id, w.user_id, w.definition
  from workflows w
 where w.id = :workflow_id and w.user_id = :user_id and not w.is_deleted
returning *;

-- name: get_snapshot(user_id, id)^
-- One snapshot of the user.
select * from workflow_snapshots where id = :id and user_id = :user_id;
