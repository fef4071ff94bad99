-- Accounts: sign-up, sign-in, verification, tier, soft delete. Sign-in reveals one id and
-- changes nothing; a sign-up creates the account the transaction acts for, nothing else.

-- name: sign_up(email, full_name)^
-- Create an e-mail account (free tier, no credits) under the id the transaction acts for.
-- optional: full_name
insert into users (id, email, full_name)
values (coalesce(app_user_id(), gen_random_uuid()), :email, :full_name)
returning *;

-- name: sign_up_oauth(email, full_name, oauth_provider, oauth_id)^
-- Create an OAuth account (verified: the provider vouches for the e-mail) under the id the transaction acts for.
-- optional: full_name
insert into users (id, email, full_name, oauth_provider, oauth_id, email_verified)
values (coalesce(app_user_id(), gen_random_uuid()), :email, :full_name, :oauth_provider, :oauth_id, true)
returning *;

-- name: sign_in_oauth(oauth_provider, oauth_id)$
-- The id of the account of an OAuth identity, or None (then sign up under a new id).
select user_id_for_oauth(:oauth_provider, :oauth_id);

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
-- Billing: move an account to another tier (its limits apply to the next write).
update users set tier = :tier where id = :id returning *;

-- name: soft_delete_user(id)^
-- Close the account; it stays restorable until the retention purge.
update users set is_deleted = true where id = :id and purged_at is null returning *;

-- name: restore_user(id)^
-- Reopen a closed account that has not been purged yet.
update users set is_deleted = false where id = :id and purged_at is null returning *;
