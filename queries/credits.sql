-- Credits: packages on offer, purchases (idempotent on the Stripe payment), balance, history.
-- Entries are posted by the ledger trigger (070_credits.sql): balance_after and entry_number are
-- the database's, and an overdraft is refused with AM001. Purchases and adjustments create
-- credits: only automl_billing may run them.

-- name: packages_for_tier(tier)
-- Active packages the tier may buy, smallest first.
select * from credit_packages
 where credit_package_on_sale(tier_restriction, is_active, :tier)
 order by credits, name;

-- name: purchase_credits(user_id, package_id, stripe_payment_id)^
-- Billing: credit a package bought with a Stripe payment; a repeated payment id returns the first entry (AlreadyExists if it credited another account).
with offer as (
    select p.id, p.credits, p.name
      from credit_packages p
      join users u on u.id = :user_id
     where p.id = :package_id and credit_package_on_sale(p.tier_restriction, p.is_active, u.tier)
), done as (
    select * from credit_transactions where stripe_payment_id = :stripe_payment_id and user_id = :user_id
), posted as (
    insert into credit_transactions (user_id, type, amount, description, package_id, stripe_payment_id)
    select :user_id, 'purchase', offer.credits, 'purchase: ' || offer.name, offer.id, :stripe_payment_id
      from offer
     where not exists (select from done)
    returning *
)
select * from posted
union all
select * from done;

-- name: adjust_credits(user_id, amount, description)^
-- Billing: a manual correction, positive or negative (never below zero).
-- optional: description
insert into credit_transactions (user_id, type, amount, description)
values (:user_id, 'adjustment', :amount, :description)
returning *;

-- name: get_balance(user_id)$
-- The user's credit balance.
select credit_balance from users where id = :user_id;

-- name: credit_history(user_id, before_entry, page_size)
-- A user's ledger newest first, one page below entry number before_entry (NULL for the first page).
-- optional: before_entry
select * from credit_transactions
 where user_id = :user_id and (:before_entry::bigint is null or entry_number < :before_entry::bigint)
 order by entry_number desc
 limit :page_size;
