-- Reference data every environment starts with, and an overview of what a database holds.

-- name: seed_reference_data#
-- Insert the standard credit packages and starter tutorials; rows that exist are left alone (the
-- migrations' post-apply layer, schema/post/930_reference_data.sql, already loads them).
insert into credit_packages (name, credits, price_cents, stripe_price_id, tier_restriction)
values ('Starter',    100,   999,   'price_starter_100',      'none'),
       ('Builder',    500,   3999,  'price_builder_500',      'none'),
       ('Pro Pack',   2500,  14999, 'price_pro_2500',         'pro_only'),
       ('Enterprise', 20000, 99999, 'price_enterprise_20000', 'enterprise_only')
on conflict (name) do nothing;

insert into tutorials (slug, title, description, difficulty, steps, estimated_minutes, sort_order, is_published)
values ('first-model', 'Train your first model',
        'Upload a CSV, build a three-node workflow and train a classifier.', 'beginner',
        '[{"id": "upload", "title": "Upload a dataset"},
          {"id": "workflow", "title": "Build a workflow"},
          {"id": "train", "title": "Run the job"},
          {"id": "inspect", "title": "Inspect the model"}]', 15, 10, true),
       ('compare-models', 'Compare models in an experiment',
        'Train two algorithms on one dataset and read the leaderboard.', 'intermediate',
        '[{"id": "experiment", "title": "Create an experiment"},
          {"id": "runs", "title": "Add runs"},
          {"id": "leaderboard", "title": "Read the leaderboard"}]', 20, 20, true),
       ('feature-engineering', 'Feature engineering basics',
        'Scale, encode and select features before training.', 'advanced',
        '[{"id": "scale", "title": "Scale numeric columns"},
          {"id": "encode", "title": "Encode categories"}]', 30, 30, false)
on conflict (slug) do nothing;

-- name: schema_tables()
-- Names of the schema's tables (the schema automl; yoyo's bookkeeping lives in public), for summaries.
-- not-null: table_name
select c.relname::text as table_name
  from pg_class c
 where c.relnamespace = 'automl'::regnamespace and c.relkind = 'r'
 order by c.relname;
