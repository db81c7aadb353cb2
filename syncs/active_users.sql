-- # Active users into the CRM's contacts, one record per user.
-- destination = "crm"
-- primary_key = "user_id"
-- mode = "upsert"
-- object = "contacts"
-- schedule = "every 15m"
select
    user_id,
    email,
    full_name as name,
    plan,
    lifetime_value,
    signed_up_at
from users
where active
