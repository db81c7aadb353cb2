-- # Active users into the CRM's contacts, one record per user.
-- destination = "crm"
-- primary_key = "user_id"
-- mode = "upsert"
-- object = "contacts"
-- after = ["accounts"]           # the daemon runs it when accounts has run: companies first
select
    user_id,
    email,
    full_name as name,
    plan,
    lifetime_value,
    signed_up_at
from users
where active
