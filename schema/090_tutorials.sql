-- 090_tutorials.sql — tutorials and each user's progress through them.
--
-- Owns: tutorials (reference content: ordered steps, versioned) and user_tutorial_progress
-- (one row per user and tutorial, as Open edX / Oppia keep it: steps done, last activity,
-- completion, and the content version the learner saw).

create function tutorial_steps_are_valid(steps jsonb) returns boolean
language sql immutable parallel safe
begin atomic
    select coalesce(jsonb_typeof(steps) = 'array', false)
       and not exists (select from jsonb_array_elements(steps) as s(step)
                       where coalesce(jsonb_typeof(s.step -> 'id') <> 'string', true)
                          or coalesce(jsonb_typeof(s.step -> 'title') <> 'string', true)
                          or s.step ->> 'id' = '')
       and (select count(*) = count(distinct s.step ->> 'id') from jsonb_array_elements(steps) as s(step));
end;
comment on function tutorial_steps_are_valid(jsonb) is
    'True when steps is an array of objects with a unique non-empty string "id" and a string "title".';

create table tutorials (
    id                uuid primary key default gen_random_uuid(),
    slug              text not null,
    title             text not null,
    description       text,
    difficulty        text not null default 'beginner',
    steps             bounded_jsonb not null default '[]',
    content_version   integer not null default 1,
    estimated_minutes integer,
    sort_order        integer not null default 0,
    is_published      boolean not null default false,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    -- last: migration 0004 re-created it (a generated column cannot outlive a change to its source's type)
    step_count        integer generated always as (
        case when jsonb_typeof(steps) = 'array' then jsonb_array_length(steps) end) stored,
    constraint tutorials_slug_key unique (slug),
    constraint tutorials_slug_format check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(slug) <= 100),
    constraint tutorials_title_length check (length(btrim(title)) between 1 and 200),
    constraint tutorials_description_length check (length(description) <= 5000),
    constraint tutorials_difficulty_valid check (difficulty in ('beginner', 'intermediate', 'advanced')),
    constraint tutorials_steps_shape check (tutorial_steps_are_valid(steps)),
    constraint tutorials_content_version_positive check (content_version >= 1),
    constraint tutorials_estimated_minutes_positive check (estimated_minutes > 0)
);
comment on table tutorials is 'Interactive learning content (reference data): an ordered list of steps.';
comment on column tutorials.id is 'Primary key.';
comment on column tutorials.slug is 'Stable URL name, lower-case words joined by dashes; unique.';
comment on column tutorials.title is 'Display title.';
comment on column tutorials.description is 'Summary shown in the catalogue.';
comment on column tutorials.difficulty is 'beginner, intermediate or advanced.';
comment on column tutorials.steps is 'Ordered steps: [{"id", "title", ...}] with unique ids (tutorials_steps_shape).';
comment on column tutorials.step_count is 'Number of steps (generated), so progress can be shown as n of m without parsing steps.';
comment on column tutorials.content_version is 'Bumped when steps change, so progress records which version a learner saw.';
comment on column tutorials.estimated_minutes is 'Expected time to finish.';
comment on column tutorials.sort_order is 'Position in the catalogue (ascending).';
comment on column tutorials.is_published is 'Whether learners can see it.';
comment on column tutorials.created_at is 'Creation time.';
comment on column tutorials.updated_at is 'Last change of this row (set by trigger).';

create index tutorials_published_idx on tutorials (sort_order, title) where is_published;
comment on index tutorials_published_idx is 'The published catalogue in display order.';

create trigger tutorials_set_updated_at before update on tutorials
    for each row execute function set_updated_at();

create table user_tutorial_progress (
    id               uuid primary key default gen_random_uuid(),
    user_id          uuid not null references users (id) on delete cascade,
    tutorial_id      uuid not null references tutorials (id) on delete cascade,
    content_version  integer not null default 1,
    completed_steps  text[] not null default '{}',
    current_step     integer not null default 0,
    started_at       timestamptz not null default now(),
    last_activity_at timestamptz not null default now(),
    completed_at     timestamptz,
    updated_at       timestamptz not null default now(),
    created_at       timestamptz not null default now(),  -- last: migration 0006 added it
    constraint user_tutorial_progress_user_tutorial_key unique (user_id, tutorial_id),
    constraint user_tutorial_progress_current_step_nonnegative check (current_step >= 0),
    constraint user_tutorial_progress_content_version_positive check (content_version >= 1),
    constraint user_tutorial_progress_steps_no_nulls check (array_position(completed_steps, null) is null),
    constraint user_tutorial_progress_steps_bounded check (
        cardinality(completed_steps) <= 1000 and octet_length(array_to_string(completed_steps, '')) <= 100000),
    constraint user_tutorial_progress_times_ordered check (
        last_activity_at >= started_at and completed_at >= started_at)
);
comment on table user_tutorial_progress is 'Where a user stands in a tutorial: one row per user and tutorial.';
comment on column user_tutorial_progress.id is 'Primary key.';
comment on column user_tutorial_progress.user_id is 'Learner.';
comment on column user_tutorial_progress.tutorial_id is 'Tutorial followed.';
comment on column user_tutorial_progress.content_version is 'tutorials.content_version the learner started on.';
comment on column user_tutorial_progress.completed_steps is 'Ids of the steps done, in the order they were done.';
comment on column user_tutorial_progress.current_step is 'Index (0-based) of the step the learner is on, to resume there.';
comment on column user_tutorial_progress.started_at is 'When the learner started.';
comment on column user_tutorial_progress.last_activity_at is 'Last step activity, for "continue where you left off" and dropout analysis.';
comment on column user_tutorial_progress.completed_at is 'When the tutorial was finished; NULL while in progress.';
comment on column user_tutorial_progress.updated_at is 'Last change of this row (set by trigger).';
comment on column user_tutorial_progress.created_at is 'Row creation time.';

create index user_tutorial_progress_tutorial_idx on user_tutorial_progress (tutorial_id);
comment on index user_tutorial_progress_tutorial_idx is 'Foreign key index; learners per tutorial.';

create trigger user_tutorial_progress_set_updated_at before update on user_tutorial_progress
    for each row execute function set_updated_at();
create trigger user_tutorial_progress_owner_immutable before update of user_id on user_tutorial_progress
    for each row when (old.user_id is distinct from new.user_id) execute function refuse_owner_change();
