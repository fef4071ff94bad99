-- Trained models: registration from a job, listing, deployment, and the best per experiment.

-- name: register_model(user_id, job_id, name, algorithm, problem_type, metrics, hyperparameters, s3_path)^
-- Record a model a job of the user trained (counts toward the tier's model limit).
-- optional: algorithm, problem_type, metrics, hyperparameters, s3_path
insert into models (user_id, job_id, name, algorithm, problem_type, metrics, hyperparameters, s3_path)
values (:user_id, :job_id, :name, :algorithm, :problem_type, coalesce(:metrics::jsonb, '{}'),
        coalesce(:hyperparameters::jsonb, '{}'), :s3_path)
returning *;

-- name: list_models(user_id)
-- A user's models, newest first.
select * from models where user_id = :user_id order by created_at desc, id desc;

-- name: get_model(user_id, id)^
-- One model of the user.
select * from models where id = :id and user_id = :user_id;

-- name: deploy_model(user_id, id)^
-- Start serving a model (deployed_at is stamped by the database).
update models set is_deployed = true where id = :id and user_id = :user_id returning *;

-- name: undeploy_model(user_id, id)^
-- Stop serving a model.
update models set is_deployed = false where id = :id and user_id = :user_id returning *;

-- name: best_model_per_experiment(user_id)
-- For each of the user's experiments, the run whose model scores best on the primary metric.
-- not-null: primary_metric, score
select distinct on (e.id)
       e.id as experiment_id, e.name as experiment_name, e.primary_metric, e.metric_goal,
       r.id as run_id, m.id as model_id, m.name as model_name, m.algorithm,
       (r.metrics ->> e.primary_metric)::float8 as score
  from experiments e
  join experiment_runs r on r.experiment_id = e.id
  join models m on m.id = r.model_id
 where e.user_id = :user_id and r.metrics ? e.primary_metric
 order by e.id,
          case when e.metric_goal = 'maximize' then (r.metrics ->> e.primary_metric)::float8 end desc nulls last,
          case when e.metric_goal = 'minimize' then (r.metrics ->> e.primary_metric)::float8 end asc nulls last,
          r.created_at;
