-- 930_reference_data.sql — the reference rows every database holds: tier limits, credit packages,
-- tutorials.
--
-- Idempotent layer (schema/post/): re-applied after every migration run, so `yoyo apply` alone
-- gives a database its reference data. These rows are the source of truth: a row that differs is
-- brought back to what is written here (a tutorial whose steps change gets the next
-- content_version), rows added by hand are left alone, and a row that already matches is not
-- even locked (a purchase in flight holds a key-share lock on its package). Ids are fixed, so
-- every database names the same package and tutorial by the same id (a data-only restore leaves
-- these tables out, README "Restoring a dump"); a row created earlier under another id keeps it.

-- What each tier may use (users.tier references these rows).
insert into tier_limits as t (tier, max_storage_bytes, max_datasets, max_workflows, max_models)
select v.tier, v.max_storage_bytes, v.max_datasets, v.max_workflows, v.max_models
  from (values ('free'::user_tier, 1073741824::bigint, 10,   10,   20),    -- 1 GiB
               ('pro',             53687091200,         200,  200,  1000),  -- 50 GiB
               ('enterprise',      1099511627776,       null, null, null)   -- 1 TiB
       ) as v(tier, max_storage_bytes, max_datasets, max_workflows, max_models)
 where not exists (select from tier_limits x
                    where x.tier = v.tier
                      and (x.max_storage_bytes, x.max_datasets, x.max_workflows, x.max_models)
                          is not distinct from (v.max_storage_bytes, v.max_datasets, v.max_workflows, v.max_models))
on conflict (tier) do update
   set max_storage_bytes = excluded.max_storage_bytes, max_datasets = excluded.max_datasets,
       max_workflows = excluded.max_workflows, max_models = excluded.max_models;

-- What can be bought.
insert into credit_packages as p (id, name, credits, price_cents, stripe_price_id, is_active, tier_restriction)
select v.id, v.name, v.credits, v.price_cents, v.stripe_price_id, v.is_active, v.tier_restriction
  from (values ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0001'::uuid, 'Starter', 100, 999, 'price_starter_100', true,
                'none'::tier_restriction),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0002', 'Builder', 500, 3999, 'price_builder_500', true, 'none'),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0003', 'Pro Pack', 2500, 14999, 'price_pro_2500', true, 'pro_only'),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a0004', 'Enterprise', 20000, 99999, 'price_enterprise_20000', true,
                'enterprise_only')
       ) as v(id, name, credits, price_cents, stripe_price_id, is_active, tier_restriction)
 where not exists (select from credit_packages x
                    where x.name = v.name
                      and (x.credits, x.price_cents, x.stripe_price_id, x.is_active, x.tier_restriction)
                          is not distinct from (v.credits, v.price_cents, v.stripe_price_id, v.is_active,
                                                v.tier_restriction))
on conflict (name) do update
   set (credits, price_cents, stripe_price_id, is_active, tier_restriction)
       = (excluded.credits, excluded.price_cents, excluded.stripe_price_id, excluded.is_active,
          excluded.tier_restriction);

-- The starter tutorials.
insert into tutorials as t (id, slug, title, description, difficulty, steps, estimated_minutes, sort_order,
                            is_published)
select v.id, v.slug, v.title, v.description, v.difficulty, v.steps, v.estimated_minutes, v.sort_order,
       v.is_published
  from (values ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1001'::uuid, 'first-model', 'Train your first model',
                'Upload a CSV, build a three-node workflow and train a classifier.', 'beginner',
                '[{"id": "upload", "title": "Upload a dataset"},
                  {"id": "workflow", "title": "Build a workflow"},
                  {"id": "train", "title": "Run the job"},
                  {"id": "inspect", "title": "Inspect the model"}]'::jsonb, 15, 10, true),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1002', 'compare-models', 'Compare models in an experiment',
                'Train two algorithms on one dataset and read the leaderboard.', 'intermediate',
                '[{"id": "experiment", "title": "Create an experiment"},
                  {"id": "runs", "title": "Add runs"},
                  {"id": "leaderboard", "title": "Read the leaderboard"}]', 20, 20, true),
               ('6f0c2a0e-5b1d-4c39-9f60-0d6d7c1a1003', 'feature-engineering', 'Feature engineering basics',
                'Scale, encode and select features before training.', 'advanced',
                '[{"id": "scale", "title": "Scale numeric columns"},
                  {"id": "encode", "title": "Encode categories"}]', 30, 30, false)
       ) as v(id, slug, title, description, difficulty, steps, estimated_minutes, sort_order, is_published)
 where not exists (select from tutorials x
                    where x.slug = v.slug
                      and (x.title, x.description, x.difficulty, x.steps::jsonb, x.estimated_minutes, x.sort_order,
                           x.is_published)
                          is not distinct from (v.title, v.description, v.difficulty, v.steps, v.estimated_minutes,
                                                v.sort_order, v.is_published))
on conflict (slug) do update
   set title = excluded.title, description = excluded.description, difficulty = excluded.difficulty,
       steps = excluded.steps, estimated_minutes = excluded.estimated_minutes, sort_order = excluded.sort_order,
       is_published = excluded.is_published,
       content_version = t.content_version + (t.steps::jsonb is distinct from excluded.steps::jsonb)::integer;
