-- Experiments: groups of runs compared on one primary metric.

-- name: create_experiment(user_id, name, description, dataset_id, problem_type, primary_metric, metric_goal)^
-- Create an experiment ranking runs by primary_metric (maximize or minimize).
-- optional: description, dataset_id, problem_type, primary_metric, metric_goal
insert into experiments (user_id, name, description, dataset_id, problem_type, primary_metric, metric_goal)
values (:user_id, :name, :description, :dataset_id, :problem_type, :primary_metric,
        coalesce(:metric_goal::metric_goal, 'maximize'))
returning *;

-- name: list_experiments(user_id)
-- A user's experiments, newest first.
select * from experiments where user_id = :user_id order by created_at desc, id desc;

-- name: add_run(user_id, experiment_id, job_id, model_id, run_name, params, metrics)^
-- Record a run of the experiment: its job and/or model, parameters and final metrics.
-- optional: job_id, model_id, run_name, params, metrics
insert into experiment_runs (user_id, experiment_id, job_id, model_id, run_name, params, metrics)
values (:user_id, :experiment_id, :job_id, :model_id, :run_name, coalesce(:params::jsonb, '{}'),
        coalesce(:metrics::jsonb, '{}'))
returning *;

-- name: leaderboard(user_id, experiment_id)
-- The experiment's runs ranked by its primary metric (best first; runs without it last).
select rank() over (order by case when e.metric_goal = 'maximize' then (r.metrics ->> e.primary_metric)::float8
                                  end desc nulls last,
                             case when e.metric_goal = 'minimize' then (r.metrics ->> e.primary_metric)::float8
                                  end asc nulls last) as position,
       r.id as run_id, r.run_name, r.model_id, m.name as model_name, m.algorithm, r.job_id,
       (r.metrics ->> e.primary_metric)::float8 as score, r.metrics, r.created_at
  from experiments e
  join experiment_runs r on r.experiment_id = e.id
  left join models m on m.id = r.model_id
 where e.id = :experiment_id and e.user_id = :user_id
 order by position, r.created_at;
