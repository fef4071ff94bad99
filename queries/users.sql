-- Accounts: sign-up, lookup, verification, tier, soft delete.

-- name: sign_up(email, full_name)^
-- Create an e-mail account (free tier, no credits) under the id the transaction acts for.
-- optional: full_name
insert into users (id, email, full_name)
values (coalesce(app_user_id(), gen_random_uuid()), :email, :full_name)
returning *;

-- name: sign_in_oauth(email, full_name, oauth_provider, oauth_id)^
-- Create or refresh the account of an OAuth identity; the provider vouches for the e-mail.
-- optional: full_name
select * from oauth_sign_in(:email, :full_name, :oauth_provider, :oauth_id);

-- name: get_user(id)^
-- One account by id.
select * from users where id = :id;

-- name: find_user_id(email)$
-- The id of the account with this e-mail address, in any case (for sign-in).
select user_id_for_email(:email);

-- name: verify_email(id)^
-- Mark the account's e-mail address as verified.
update users set email_verified = true where id = :id returning *;

-- name: change_tier(id, tier)^
-- Move the account the transaction acts for to another tier (its limits apply to the next write).
select * from change_user_tier(:id, :tier);

-- name: soft_delete_user(id)^
-- Close the account; it stays restorable until the retention purge.
update users set is_deleted = true where id = :id and purged_at is null returning *;

-- name: restore_user(id)^
-- Reopen a closed account that has not been purged yet.
update users set is_deleted = false where id = :id and purged_at is null returning *;
