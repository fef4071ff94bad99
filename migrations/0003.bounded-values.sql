-- 0003 bounded values: whatever a client writes can be read back by any client (issue 9).
--   * every client-written JSON column is a bounded_jsonb (1 MiB, 32 levels);
--   * error messages, tracebacks and object paths get length rules (domains error_text,
--     traceback_text, object_path), as do profiler versions and tutorial progress;
--   * a workflow node's type, when given, is a string (what the typed API reads it as); existing
--     graphs are checked again.
-- A column moves to a domain over its own type without a rewrite, after one scan that checks it.
-- Domains rather than table CHECKs on purpose: a domain's check runs when a value is written, a
-- table's on every UPDATE of the row (the queue updates jobs several times per job). Changing a
-- bound later means a new domain and a column move, which this file shows is cheap.
-- squawk-ignore-file changing-column-type, ban-drop-constraint, constraint-missing-not-valid, ban-create-domain-with-constraint
set local lock_timeout = '5s';
set local statement_timeout = '5min';

-- Bounds on what clients write, so that whatever the database holds can be read back by any
-- client: Python's json module, for one, recurses once per level and gives up near 1,000.
create domain bounded_jsonb as jsonb
    constraint bounded_jsonb_limits check (
        pg_column_size(value) <= 1048576 and not jsonb_path_exists(value, 'strict $.**{33 to last}'));
comment on domain bounded_jsonb is
    'A JSON document a client writes: at most 1 MiB as stored and 32 levels deep (no value more than 32 '
    'arrays or objects below the top).';

create domain error_text as text
    constraint error_text_length check (length(value) <= 10000);
comment on domain error_text is 'A short error description: at most 10,000 characters.';

create domain traceback_text as text
    constraint traceback_text_length check (length(value) <= 100000);
comment on domain traceback_text is 'A stack trace: at most 100,000 characters.';

create domain object_path as text
    constraint object_path_length check (length(btrim(value)) between 1 and 2048);
comment on domain object_path is 'Where an object lives in the object store (s3://bucket/key): 1-2,048 characters, not blank.';

alter domain bounded_jsonb owner to automl_owner;
alter domain error_text owner to automl_owner;
alter domain traceback_text owner to automl_owner;
alter domain object_path owner to automl_owner;

alter table dataset_versions
    alter column s3_path type object_path,
    alter column columns_metadata type bounded_jsonb,
    alter column error_message type error_text;
alter table dataset_profiles
    alter column columns type bounded_jsonb,
    alter column correlations type bounded_jsonb,
    alter column alerts type bounded_jsonb,
    add constraint dataset_profiles_profiler_version_length check (length(btrim(profiler_version)) between 1 and 100);
alter table ingestion_jobs alter column error_message type error_text;
alter table workflows alter column definition type bounded_jsonb;
alter table workflow_snapshots alter column snapshot_data type bounded_jsonb;
alter table jobs
    alter column results type bounded_jsonb,
    alter column error_message type error_text,
    alter column error_traceback type traceback_text;
alter table job_nodes
    alter column output_data type bounded_jsonb,
    alter column error_message type error_text;
alter table models
    alter column metrics type bounded_jsonb,
    alter column hyperparameters type bounded_jsonb,
    alter column s3_path type object_path;
alter table experiments alter column tags type bounded_jsonb;
alter table experiment_runs
    alter column params type bounded_jsonb,
    alter column metrics type bounded_jsonb,
    alter column tags type bounded_jsonb;
alter table user_tutorial_progress add constraint user_tutorial_progress_steps_bounded check (
        cardinality(completed_steps) <= 1000 and octet_length(array_to_string(completed_steps, '')) <= 100000);

create or replace function workflow_graph_is_valid(doc jsonb) returns boolean
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

-- Checked again against every stored graph: a constraint is only checked when it is added.
alter table workflows drop constraint workflows_definition_shape,
    add constraint workflows_definition_shape check (workflow_graph_is_valid(definition));
alter table workflow_snapshots drop constraint workflow_snapshots_data_shape,
    add constraint workflow_snapshots_data_shape check (workflow_graph_is_valid(snapshot_data));
