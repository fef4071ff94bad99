-- Rolls back 0003: unbounded columns again, and the earlier graph rule.
-- squawk-ignore-file changing-column-type, ban-drop-constraint, ban-drop-domain
set local lock_timeout = '5s';
set local statement_timeout = '5min';

create or replace function workflow_graph_is_valid(doc jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select jsonb_is_object(doc)
       and coalesce(jsonb_typeof(doc -> 'nodes') = 'array', false)
       and coalesce(jsonb_typeof(doc -> 'edges') = 'array', false)
       and not exists (select from jsonb_array_elements(doc -> 'nodes') as n(node)
                       where coalesce(jsonb_typeof(n.node -> 'id') <> 'string', true)
                          or n.node ->> 'id' = '')
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
    'True when doc is {"nodes": [...], "edges": [...]}: nodes carry unique non-empty string ids, '
    'edges carry string source/target naming existing nodes. Used by workflow and snapshot CHECKs.';

alter table user_tutorial_progress drop constraint user_tutorial_progress_steps_bounded;
alter table experiment_runs
    alter column params type jsonb,
    alter column metrics type jsonb,
    alter column tags type jsonb;
alter table experiments alter column tags type jsonb;
alter table models
    alter column metrics type jsonb,
    alter column hyperparameters type jsonb,
    alter column s3_path type text;
alter table job_nodes
    alter column output_data type jsonb,
    alter column error_message type text;
alter table jobs
    alter column results type jsonb,
    alter column error_message type text,
    alter column error_traceback type text;
alter table workflow_snapshots alter column snapshot_data type jsonb;
alter table workflows alter column definition type jsonb;
alter table ingestion_jobs alter column error_message type text;
alter table dataset_profiles
    alter column columns type jsonb,
    alter column correlations type jsonb,
    alter column alerts type jsonb,
    drop constraint dataset_profiles_profiler_version_length;
alter table dataset_versions
    alter column s3_path type text,
    alter column columns_metadata type jsonb,
    alter column error_message type text;
drop domain object_path;
drop domain traceback_text;
drop domain error_text;
drop domain bounded_jsonb;
