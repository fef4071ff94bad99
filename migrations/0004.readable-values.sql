-- 0004 readable values: whatever the database holds, every client can read back (issue 9).
--   * JSON numbers stay within a double's range (Python's json module cannot read 1e400, nor an
--     integer of 5,000 digits);
--   * tutorials' steps are bounded like every other JSON column.
-- A domain's new rule is checked against every column that uses it; step_count is generated from steps,
-- so it is dropped and added again around the type change.
-- tutorials is reference data (tens of rows): rewriting it is instant.
-- squawk-ignore-file changing-column-type, ban-drop-column, adding-field-with-default, ban-alter-domain-with-add-constraint, ban-drop-constraint
set local lock_timeout = '5s';
set local statement_timeout = '5min';

alter domain bounded_jsonb add constraint bounded_jsonb_numbers check (
        not jsonb_path_exists(value, 'strict $.** ? (@.type() == "number" && (@ > 1e308 || @ < -1e308))'));
comment on domain bounded_jsonb is
    'A JSON document a client writes: at most 1 MiB as stored, 32 levels deep (no value more than 32 '
    'arrays or objects below the top), numbers within a double''s range (what every reader can parse).';

alter table tutorials drop column step_count;
alter table tutorials alter column steps type bounded_jsonb;
alter table tutorials add column step_count integer generated always as (
        case when jsonb_typeof(steps) = 'array' then jsonb_array_length(steps) end) stored;
comment on column tutorials.step_count is 'Number of steps (generated), so progress can be shown as n of m without parsing steps.';
