-- # Accounts with their user counts, mirrored: an account that disappears is deleted.
-- destination = "crm"
-- primary_key = "account_id"
-- mode = "mirror"
-- object = "companies"
-- schedule = "every 15m"         # `reverse-etl daemon` runs it every 15 minutes
select
    a.account_id,
    a.name,
    a.region,
    a.seats,
    count(u.user_id) as users
from accounts a
left join users u using (account_id)
group by all
