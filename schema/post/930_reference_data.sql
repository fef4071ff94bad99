-- 930_reference_data.sql — the reference rows every database holds: tier limits, credit packages,
-- tutorials.
--
-- Idempotent layer (schema/post/): re-applied after every migration run, so `yoyo apply` alone
-- gives a database its reference data. These rows are the source of truth: a row that differs is
-- brought back to what is written here (a tutorial whose steps change gets the next
-- content_version), a row that already matches is not touched, and rows added by hand are left
-- alone. Ids are fixed, so every database names the same package and tutorial by the same id (a
-- data-only restore leaves these tables out, README "Restoring a dump"); a row created earlier
-- under another id keeps it.

-- What each tier may use (users.tier references these rows).
insert into tier_limits as t (tier, max_storage_bytes, max_datasets, max_workflows, max_models)
values ('free',       1073741824,    10,   10,   20),    -- 1 GiB
       ('pro',        53687091200,   200,  200,  1000),  -- 50 GiB
       ('enterprise', 1099511627776, null, null, null)   -- 1 TiB
on conflict (tier) do update
   set max_storage_bytes = excluded.max_storage_bytes, max_datasets = excluded.max_datasets,
       max_workflows = excluded.max_workflows, max_models = excluded.max_models
 where (t.max_storage_bytes, t.max_datasets, t.max_workflows, t.max_models)
       is distinct from (excluded.max_storage_bytes, excluded.max_datasets, excluded.max_workflows,
                         excluded.max_models);

-- What can be bought.
insert into credit_packages as p (id, name, credits, price_cents, stripe_price_id, is_active, tier_restriction)
values ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0001', 'Starter',    100,   999,   'price_starter_100',      true, 'none'),
       ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0002', 'Builder',    500,   3999,  'price_builder_500',      true, 'none'),
       ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0003', 'Pro Pack',   2500,  14999, 'price_pro_2500',         true, 'pro_only'),
       ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0004', 'Enterprise', 20000, 99999, 'price_enterprise_20000', true,
        'enterprise_only')
on conflict (name) do update
   set (credits, price_cents, stripe_price_id, is_active, tier_restriction)
       = (excluded.credits, excluded.price_cents, excluded.stripe_price_id, excluded.is_active,
          excluded.tier_restriction)
 where (p.credits, p.price_cents, p.stripe_price_id, p.is_active, p.tier_restriction)
       is distinct from (excluded.credits, excluded.price_cents, excluded.stripe_price_id, excluded.is_active,
                         excluded.tier_restriction);

-- The starter tutorials.
insert into tutorials as t (id, slug, title, description, difficulty, steps, estimated_minutes, sort_order,
                            is_published)
values ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1001', 'first-model', 'Train your first model',
        'Upload a CSV, build a three-node workflow and train a classifier.', 'beginner',
        '[{"id": "upload", "title": "Upload a dataset"},
          {"id": "workflow", "title": "Build a workflow"},
          {"id": "train", "title": "Run the job"},
          {"id": "inspect", "title": "Inspect the model"}]', 15, 10, true),
       ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1002', 'compare-models', 'Compare models in an experiment',
        'Train two algorithms on one dataset and read the leaderboard.', 'intermediate',
        '[{"id": "experiment", "title": "Create an experiment"},
          {"id": "runs", "title": "Add runs"},
          {"id": "leaderboard", "title": "Read the leaderboard"}]', 20, 20, true),
       ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1003', 'feature-engineering', 'Feature engineering basics',
        'Scale, encode and select features before training.', 'advanced',
        '[{"id": "scale", "title": "Scale numeric columns"},
          {"id": "encode", "title": "Encode categories"}]', 30, 30, false)
on conflict (slug) do update
   set title = excluded.title, description = excluded.description, difficulty = excluded.difficulty,
       steps = excluded.steps, estimated_minutes = excluded.estimated_minutes, sort_order = excluded.sort_order,
       is_published = excluded.is_published,
       content_version = t.content_version + (t.steps::jsonb is distinct from excluded.steps::jsonb)::integer
 where (t.title, t.description, t.difficulty, t.steps::jsonb, t.estimated_minutes, t.sort_order, t.is_published)
       is distinct from (excluded.title, excluded.description, excluded.difficulty, excluded.steps::jsonb,
                         excluded.estimated_minutes, excluded.sort_order, excluded.is_published);
