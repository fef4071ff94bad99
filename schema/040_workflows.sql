-- 040_workflows.sql — workflows (mutable designs) and their immutable snapshots.
--
-- Owns: workflows (a user's editable graph of nodes and edges, soft-deletable) and
-- workflow_snapshots (the frozen copy a job executes). Deleting a workflow keeps its
-- snapshots and their jobs: workflow_id becomes NULL.

create table workflows (
    id          uuid primary key default gen_random_uuid(),
    user_id     uuid not null references users (id) on delete cascade,
    name        text not null,
    description text,
    definition  bounded_jsonb not null default '{"nodes": [], "edges": []}',
    is_deleted  boolean not null default false,
    deleted_at  timestamptz,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint workflows_id_user_key unique (id, user_id),
    constraint workflows_name_length check (length(btrim(name)) between 1 and 200),
    constraint workflows_description_length check (length(description) <= 5000),
    constraint workflows_definition_shape check (workflow_graph_is_valid(definition)),
    constraint workflows_deleted_at_matches check (is_deleted = (deleted_at is not null))
);
comment on table workflows is
    'A user''s ML pipeline design: a graph of nodes and edges that the user edits. Jobs never run it '
    'directly; they run a workflow_snapshot of it.';
comment on column workflows.id is 'Primary key.';
comment on column workflows.user_id is 'Owner.';
comment on column workflows.name is 'Display name (1-200 characters, not blank).';
comment on column workflows.description is 'Optional free text (at most 5000 characters).';
comment on column workflows.definition is
    'The graph: {"nodes": [{"id", "type", ...}], "edges": [{"source", "target"}]} (workflows_definition_shape).';
comment on column workflows.is_deleted is 'Soft delete flag; a deleted workflow is hidden and not counted, but restorable.';
comment on column workflows.deleted_at is 'When is_deleted last turned true (stamped by trigger); purge counts retention from it.';
comment on column workflows.created_at is 'Creation time.';
comment on column workflows.updated_at is 'Last change of this row (set by trigger).';

create index workflows_user_created_idx on workflows (user_id, created_at desc, id desc) where not is_deleted;
create index workflows_user_idx on workflows (user_id);
create index workflows_deleted_at_idx on workflows (deleted_at) where is_deleted;
comment on index workflows_user_created_idx is 'A user''s live workflows newest first.';
comment on index workflows_user_idx is 'Foreign key index (covers soft-deleted rows too).';
comment on index workflows_deleted_at_idx is 'Finds soft-deleted workflows past retention for purge.';

create trigger workflows_set_updated_at before update on workflows
    for each row execute function set_updated_at();
create trigger workflows_stamp_deleted_at before insert or update of is_deleted, deleted_at on workflows
    for each row execute function stamp_deleted_at();

create table workflow_snapshots (
    id            uuid primary key default gen_random_uuid(),
    workflow_id   uuid,
    user_id       uuid not null references users (id) on delete cascade,
    snapshot_data bounded_jsonb not null,
    created_at    timestamptz not null default now(),
    constraint workflow_snapshots_workflow_fkey foreign key (workflow_id, user_id)
        references workflows (id, user_id) on delete set null (workflow_id),
    constraint workflow_snapshots_id_user_key unique (id, user_id),
    constraint workflow_snapshots_data_shape check (workflow_graph_is_valid(snapshot_data))
);
comment on table workflow_snapshots is
    'Immutable copy of a workflow''s graph taken when a job is submitted, so every job can be reproduced '
    'exactly even after the workflow is edited or deleted.';
comment on column workflow_snapshots.id is 'Primary key.';
comment on column workflow_snapshots.workflow_id is
    'Workflow it was taken from, of the same owner; NULL once that workflow is deleted.';
comment on column workflow_snapshots.user_id is 'Owner.';
comment on column workflow_snapshots.snapshot_data is 'The complete graph as it was, same shape as workflows.definition.';
comment on column workflow_snapshots.created_at is 'Snapshot time.';

create index workflow_snapshots_workflow_idx on workflow_snapshots (workflow_id, created_at desc);
create index workflow_snapshots_user_created_idx on workflow_snapshots (user_id, created_at desc);
comment on index workflow_snapshots_workflow_idx is 'A workflow''s snapshots newest first; also the foreign key index.';
comment on index workflow_snapshots_user_created_idx is 'A user''s snapshots newest first; also the user_id foreign key index.';

create function workflows_count_usage() returns trigger
language plpgsql
security definer set search_path = pg_catalog, automl, pg_temp as $$
declare
    delta integer := 0;
begin
    if tg_op in ('INSERT', 'UPDATE') and not new.is_deleted then
        delta := 1;
    end if;
    if tg_op in ('UPDATE', 'DELETE') and not old.is_deleted then
        delta := delta - 1;
    end if;
    if delta <> 0 then
        perform users_adjust_usage(coalesce(new.user_id, old.user_id), workflows => delta);
    end if;
    return null;
end;
$$;
comment on function workflows_count_usage() is
    'AFTER INSERT/DELETE/UPDATE OF is_deleted on workflows: keeps users.workflow_count equal to the '
    'live workflows (soft delete -1, restore +1) and enforces the tier''s workflow limit.';

create trigger workflows_count_usage after insert or delete or update of is_deleted on workflows
    for each row execute function workflows_count_usage();
-- Lock order: soft-deleting, restoring or deleting a workflow moves the owner's counter.
create trigger workflows_lock_acting_user before update or delete on workflows
    for each statement when (pg_trigger_depth() = 0 and current_setting('automl.user_id', true) <> '')
    execute function lock_acting_user();
create trigger workflows_owner_immutable before update of user_id on workflows
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();

-- A snapshot is frozen: only the foreign key's own ON DELETE SET NULL may touch it.
create function workflow_snapshots_refuse_change() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    if new.id = old.id and new.user_id = old.user_id and new.snapshot_data = old.snapshot_data
       and new.created_at = old.created_at and new.workflow_id is null then
        return new;
    end if;
    raise exception 'workflow snapshot % is immutable', old.id
        using errcode = 'AM004', constraint = 'workflow_snapshots_immutable';
end;
$$;
comment on function workflow_snapshots_refuse_change() is
    'BEFORE UPDATE on workflow_snapshots: refuses every change except clearing workflow_id '
    '(what deleting the source workflow does).';

create trigger workflow_snapshots_immutable before update on workflow_snapshots
    for each row execute function workflow_snapshots_refuse_change();
