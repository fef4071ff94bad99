-- Datasets, their versions (uploads), ingestion runs and profiles. Every query is scoped to the
-- owner: a row of another user is never found, and composite keys refuse cross-owner links.

-- name: create_dataset(user_id, name, description, problem_type, target_column)^
-- Create an empty dataset (counts toward the tier's dataset limit).
-- optional: description, problem_type, target_column
insert into datasets (user_id, name, description, problem_type, target_column)
values (:user_id, :name, :description, :problem_type, :target_column)
returning *;

-- name: list_datasets(user_id)
-- A user's datasets newest first, each with its current version's state.
select d.id, d.name, d.description, d.problem_type, d.target_column, d.current_version_id,
       v.version_number as current_version_number, v.status as current_version_status,
       v.row_count as current_row_count, v.column_count as current_column_count,
       d.created_at, d.updated_at
  from datasets d
  left join dataset_versions v on v.id = d.current_version_id
 where d.user_id = :user_id
 order by d.created_at desc, d.id desc;

-- name: get_dataset(user_id, id)^
-- One dataset of the user.
select * from datasets where id = :id and user_id = :user_id;

-- name: rename_dataset(user_id, id, name)^
-- Give a dataset a new name.
update datasets set name = :name where id = :id and user_id = :user_id returning *;

-- name: delete_dataset(user_id, id)!
-- Delete a dataset with its versions, profiles and ingestion runs (storage is released).
delete from datasets where id = :id and user_id = :user_id;

-- name: add_version(user_id, dataset_id, upload_id, original_filename, original_format, original_size_bytes, version_label, content_sha256)^
-- Record an upload as the dataset's next version (numbered by the database, storage quota enforced).
-- optional: upload_id, original_filename, original_format, version_label, content_sha256
insert into dataset_versions (user_id, dataset_id, upload_id, original_filename, original_format,
                              original_size_bytes, version_label, content_sha256)
values (:user_id, :dataset_id, coalesce(:upload_id::uuid, gen_random_uuid()), :original_filename,
        coalesce(:original_format::file_format, 'unknown'), :original_size_bytes, :version_label, :content_sha256)
returning *;

-- name: mark_version_processing(user_id, id)^
-- The version's file is being converted.
update dataset_versions set status = 'processing' where id = :id and user_id = :user_id returning *;

-- name: mark_version_completed(user_id, id, s3_path, parquet_size_bytes, row_count, column_count, columns_metadata)^
-- The version is converted: its Parquet file, sizes, counts and column metadata.
-- optional: columns_metadata
update dataset_versions
   set status = 'completed', s3_path = :s3_path, parquet_size_bytes = :parquet_size_bytes,
       row_count = :row_count, column_count = :column_count, columns_metadata = :columns_metadata
 where id = :id and user_id = :user_id
returning *;

-- name: mark_version_failed(user_id, id, error_message)^
-- The version could not be processed.
-- optional: error_message
update dataset_versions set status = 'failed', error_message = :error_message
 where id = :id and user_id = :user_id
returning *;

-- name: list_versions(user_id, dataset_id)
-- A dataset's versions, newest first.
select * from dataset_versions
 where dataset_id = :dataset_id and user_id = :user_id
 order by version_number desc;

-- name: set_current_version(user_id, dataset_id, version_id)^
-- Make a version of the dataset its current one.
update datasets set current_version_id = :version_id
 where id = :dataset_id and user_id = :user_id
returning *;

-- name: create_ingestion_job(user_id, dataset_version_id)^
-- Request processing of an uploaded version.
insert into ingestion_jobs (user_id, dataset_version_id) values (:user_id, :dataset_version_id) returning *;

-- name: start_ingestion(user_id, id, worker_id)^
-- A worker starts an attempt at the run.
update ingestion_jobs set status = 'running', worker_id = :worker_id, attempt = attempt + 1
 where id = :id and user_id = :user_id
returning *;

-- name: report_ingestion_progress(user_id, id, stage, progress_percent, rows_processed, bytes_processed)^
-- Progress of a running ingestion; also a heartbeat.
-- optional: stage, rows_processed, bytes_processed
update ingestion_jobs
   set stage = coalesce(:stage, stage), progress_percent = :progress_percent,
       rows_processed = coalesce(:rows_processed, rows_processed),
       bytes_processed = coalesce(:bytes_processed, bytes_processed), heartbeat_at = now()
 where id = :id and user_id = :user_id and status = 'running'
returning *;

-- name: finish_ingestion(user_id, id, status, error_message)^
-- End a run as completed, failed or cancelled.
-- optional: error_message
update ingestion_jobs set status = :status, error_message = :error_message,
       progress_percent = case when :status::job_status = 'completed' then 100 else progress_percent end
 where id = :id and user_id = :user_id
returning *;

-- name: list_ingestion_jobs(user_id, dataset_version_id)
-- A version's ingestion runs, newest first.
select * from ingestion_jobs
 where dataset_version_id = :dataset_version_id and user_id = :user_id
 order by created_at desc;

-- name: store_profile(user_id, dataset_version_id, row_count, column_count, missing_cells, duplicate_rows, memory_bytes, columns, correlations, alerts, profiler_version, duration_ms)^
-- Store (or replace) the statistical profile of a version.
-- optional: row_count, column_count, missing_cells, duplicate_rows, memory_bytes, columns, correlations, alerts
-- optional: profiler_version, duration_ms
insert into dataset_profiles (user_id, dataset_version_id, row_count, column_count, missing_cells,
                              duplicate_rows, memory_bytes, columns, correlations, alerts, profiler_version,
                              duration_ms)
values (:user_id, :dataset_version_id, :row_count, :column_count, :missing_cells, :duplicate_rows,
        :memory_bytes, coalesce(:columns::jsonb, '{}'), :correlations, coalesce(:alerts::jsonb, '[]'),
        :profiler_version, :duration_ms)
on conflict (dataset_version_id) do update
   set row_count = excluded.row_count, column_count = excluded.column_count,
       missing_cells = excluded.missing_cells, duplicate_rows = excluded.duplicate_rows,
       memory_bytes = excluded.memory_bytes, columns = excluded.columns,
       correlations = excluded.correlations, alerts = excluded.alerts,
       profiler_version = excluded.profiler_version, duration_ms = excluded.duration_ms,
       created_at = now()
 where dataset_profiles.user_id = excluded.user_id
returning *;

-- name: get_profile(user_id, dataset_version_id)^
-- The profile of a version.
select * from dataset_profiles where dataset_version_id = :dataset_version_id and user_id = :user_id;
