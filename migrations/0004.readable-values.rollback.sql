-- Rolls back 0004: JSON numbers unbounded again, tutorials' steps plain jsonb.
-- tutorials is reference data (tens of rows): rewriting it is instant.
-- squawk-ignore-file changing-column-type, ban-drop-column, adding-field-with-default, ban-alter-domain-with-add-constraint, ban-drop-constraint
set local lock_timeout = '5s';
set local statement_timeout = '5min';

alter table tutorials drop column step_count;
alter table tutorials alter column steps type jsonb;
alter table tutorials add column step_count integer generated always as (
        case when jsonb_typeof(steps) = 'array' then jsonb_array_length(steps) end) stored;
comment on column tutorials.step_count is 'Number of steps (generated), so progress can be shown as n of m without parsing steps.';

comment on domain bounded_jsonb is
    'A JSON document a client writes: at most 1 MiB as stored and 32 levels deep (no value more than 32 '
    'arrays or objects below the top).';
-- Last: a statement after this one in the same transaction would fail (PostgreSQL cannot open yoyo's next
-- savepoint over the invalidations an ALTER DOMAIN ... DROP CONSTRAINT leaves).
alter domain bounded_jsonb drop constraint bounded_jsonb_numbers;
