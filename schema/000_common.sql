-- 000_common.sql — helpers shared by every domain file.
--
-- Owns: the schema automl, which holds every object of the project (public holds yoyo's
-- bookkeeping only), set_updated_at() (the timestamp trigger every table with updated_at uses),
-- the JSON shape predicates that CHECK constraints call and stamp_deleted_at() (soft delete). All
-- core PostgreSQL (no extensions).
--
-- Name resolution: every PL/pgSQL function pins `set search_path = pg_catalog, automl, pg_temp`
-- (a caller's temporary table or type can never stand in for ours); SQL functions use
-- SQL-standard bodies (BEGIN ATOMIC), whose names are bound when the function is created, so
-- they also hold under the empty search_path of pg_restore and stay inlinable in CHECKs. Sessions
-- find the project's names through the database's search_path (public, automl), which
-- apply_database_privileges() sets; these files create into automl.

create schema automl;
comment on schema automl is
    'Every table, type, function and policy of the AutoML data layer; public holds yoyo''s bookkeeping only.';
set search_path = automl, public;

-- Stamps updated_at on every UPDATE, whatever the client wrote: the database owns the clock.
create function set_updated_at() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    new.updated_at := now();
    return new;
end;
$$;
comment on function set_updated_at() is
    'BEFORE UPDATE trigger: sets updated_at to now() so no client can forge or forget it.';

-- A CHECK on a missing key evaluates to NULL and passes; these predicates return false instead.
create function jsonb_is_object(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select coalesce(jsonb_typeof(doc) = 'object', false);
end;
comment on function jsonb_is_object(jsonb) is
    'True when doc is a JSON object; false (never NULL) for anything else, so CHECKs cannot pass by NULL.';

create function jsonb_is_number_map(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select jsonb_is_object(doc)
       and not exists (select from jsonb_each(doc) as e(key, value)
                       where jsonb_typeof(e.value) <> 'number');
end;
comment on function jsonb_is_number_map(jsonb) is
    'True when doc is an object whose values are all numbers (metric summaries: {"accuracy": 0.93}).';

-- A workflow graph: {"nodes": [{"id": "..."}...], "edges": [{"source": "...", "target": "..."}...]}
-- with unique node ids and edges between existing nodes.
create function workflow_graph_is_valid(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select jsonb_is_object(doc)
       and coalesce(jsonb_typeof(doc -> 'nodes') = 'array', false)
       and coalesce(jsonb_typeof(doc -> 'edges') = 'array', false)
       and not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                       where coalesce(jsonb_typeof(n.node -> 'id') <> 'string', true)
                          or n.node ->> 'id' = ''
                          or coalesce(jsonb_typeof(n.node -> 'type') not in ('string', 'null'), false))
       and (select count(*) = count(distinct n.node ->> 'id')
            from jsonb_array_elements(doc -> 'nodes') as n(node))
       and not exists (select from jsonb_array_elements(doc -> 'edges') as e(edge)
                       where coalesce(jsonb_typeof(e.edge -> 'source') <> 'string', true)
                          or coalesce(jsonb_typeof(e.edge -> 'target') <> 'string', true)
                          or not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                                         where n.node ->> 'id' = e.edge ->> 'source')
                          or not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                                         where n.node ->> 'id' = e.edge ->> 'target'));
end;
comment on function workflow_graph_is_valid(jsonb) is
    'True when doc is {"nodes": [...], "edges": [...]}: nodes carry unique non-empty string ids (and a '
    'type, when given, is a string), edges carry string source/target naming existing nodes. Used by '
    'workflow and snapshot CHECKs.';

-- Soft delete: is_deleted is what clients set; deleted_at is the database's record of when.
create function stamp_deleted_at() returns trigger
language plpgsql
set search_path = pg_catalog, automl, pg_temp as $$
begin
    if new.is_deleted then
        if tg_op = 'INSERT' or not old.is_deleted then
            new.deleted_at := now();
        else
            new.deleted_at := old.deleted_at;
        end if;
    else
        new.deleted_at := null;
    end if;
    return new;
end;
$$;
comment on function stamp_deleted_at() is
    'BEFORE INSERT/UPDATE trigger for soft-deletable tables: stamps deleted_at when is_deleted turns '
    'true, keeps it while it stays true, clears it on restore. Client-written values are ignored.';
