-- 010_types.sql — the enumerated types and domains shared across tables.
--
-- Owns every PostgreSQL enum and domain. Enum labels are the seed's, in the seed's order; new
-- labels are added by migration with ALTER TYPE ... ADD VALUE (never removed: rows may hold them).
-- Domains carry the rules that bound what a client may write into a column of their kind; a
-- domain's CHECK runs only when a value is written, not on every UPDATE of the row.

create type user_tier as enum ('free', 'pro', 'enterprise');
comment on type user_tier is 'Billing tier of a user; its limits live in tier_limits.';

create type oauth_provider as enum ('google', 'github');
comment on type oauth_provider is 'Identity provider of an OAuth sign-up (NULL on users means e-mail sign-up).';

create type file_format as enum ('csv', 'json', 'parquet', 'excel', 'unknown');
comment on type file_format is 'Format of an uploaded dataset file, as detected at ingestion.';

create type problem_type as enum ('classification', 'regression', 'clustering', 'other');
comment on type problem_type is 'Kind of ML task a dataset, model or experiment is about.';

create type job_status as enum ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled');
comment on type job_status is
    'Lifecycle of a job or ingestion job: pending -> queued -> running -> completed | failed; '
    'cancelled from pending, queued or running; running -> queued is a retry. completed, failed and '
    'cancelled are terminal.';

create type version_status as enum ('pending', 'processing', 'completed', 'failed');
comment on type version_status is
    'Processing state of an uploaded dataset version: pending -> processing -> completed | failed, '
    'or pending -> failed. completed and failed are terminal.';

create type node_status as enum ('pending', 'running', 'success', 'failed', 'skipped');
comment on type node_status is
    'Lifecycle of one workflow node inside a job: pending -> running -> success | failed; '
    'skipped when an upstream node failed.';

create type node_type as enum (
    'dataset', 'preprocess', 'feature_engineering', 'split', 'model', 'evaluate', 'predict', 'export'
);
comment on type node_type is 'Kinds of node a workflow graph is built from.';

create type transaction_type as enum ('purchase', 'consumption', 'refund', 'adjustment');
comment on type transaction_type is
    'Kind of credit ledger entry: purchase (+, bought), consumption (-, a job), refund (+, a job), '
    'adjustment (either sign, by an admin).';

create type tier_restriction as enum ('none', 'pro_only', 'enterprise_only');
comment on type tier_restriction is 'Which tiers may buy a credit package.';

create type metric_goal as enum ('maximize', 'minimize');
comment on type metric_goal is 'Whether a larger or a smaller value of an experiment''s primary metric is better.';

-- Bounds on what clients write, so that whatever the database holds can be read back by any
-- client: Python's json module, for one, recurses once per level and gives up near 1,000.
create domain bounded_jsonb as jsonb
    constraint bounded_jsonb_limits check (
        pg_column_size(value) <= 1048576 and not jsonb_path_exists(value, 'strict $.**{33 to last}'))
    constraint bounded_jsonb_numbers check (
        not jsonb_path_exists(value, 'strict $.** ? (@.type() == "number" && (@ > 1e308 || @ < -1e308))'));
comment on domain bounded_jsonb is
    'A JSON document a client writes: at most 1 MiB as stored, 32 levels deep (no value more than 32 '
    'arrays or objects below the top), numbers within a double''s range (what every reader can parse).';

create domain error_text as text
    constraint error_text_length check (length(value) <= 10000);
comment on domain error_text is 'A short error description: at most 10,000 characters.';

create domain traceback_text as text
    constraint traceback_text_length check (length(value) <= 100000);
comment on domain traceback_text is 'A stack trace: at most 100,000 characters.';

create domain object_path as text
    constraint object_path_length check (length(btrim(value)) between 1 and 2048);
comment on domain object_path is 'Where an object lives in the object store (s3://bucket/key): 1-2,048 characters, not blank.';
