-- Tutorials and each learner's progress.

-- name: list_published_tutorials()
-- The published catalogue in display order.
select * from tutorials where is_published order by sort_order, title;

-- name: start_tutorial(user_id, tutorial_id)^
-- Start (or resume) a published tutorial; records the content version the learner sees.
insert into user_tutorial_progress (user_id, tutorial_id, content_version)
select :user_id, t.id, t.content_version from tutorials t where t.id = :tutorial_id and t.is_published
on conflict (user_id, tutorial_id) do update set last_activity_at = now()
returning *;

-- name: complete_step(user_id, tutorial_id, step_id)^
-- Mark a step of the tutorial done (once) and move the learner past it.
update user_tutorial_progress p
   set completed_steps = case when :step_id = any (p.completed_steps) then p.completed_steps
                              else p.completed_steps || :step_id::text end,
       current_step = greatest(p.current_step, s.position::integer),
       last_activity_at = now()
  from tutorials t
 cross join lateral (select e.ordinality as position
                       from jsonb_array_elements(t.steps) with ordinality as e(step, ordinality)
                      where e.step ->> 'id' = :step_id) s
 where p.user_id = :user_id and p.tutorial_id = :tutorial_id and t.id = p.tutorial_id
   and p.completed_at is null
returning p.*;

-- name: finish_tutorial(user_id, tutorial_id)^
-- Mark the tutorial finished once every step is done.
update user_tutorial_progress p
   set completed_at = now(), last_activity_at = now()
  from tutorials t
 where p.user_id = :user_id and p.tutorial_id = :tutorial_id and t.id = p.tutorial_id
   and p.completed_at is null
   and cardinality(p.completed_steps) >= t.step_count
returning p.*;

-- name: user_progress(user_id)
-- A learner's tutorials with steps done out of total.
-- not-null: step_count, steps_done
select t.id as tutorial_id, t.slug, t.title, t.step_count, cardinality(p.completed_steps) as steps_done,
       p.current_step, p.started_at, p.last_activity_at, p.completed_at
  from user_tutorial_progress p
  join tutorials t on t.id = p.tutorial_id
 where p.user_id = :user_id
 order by p.last_activity_at desc;
