-- The example warehouse: `reverse-etl demo` loads this into warehouse.duckdb.
create table accounts as
select
    i as account_id,
    'Account ' || i as name,
    (['eu', 'us', 'apac'])[1 + i % 3] as region,
    (i * 37 % 500)::integer as seats
from range(1, 51) as t(i);

create table users as
select
    i as user_id,
    'user' || i || '@example.com' as email,
    'User ' || i as full_name,
    (['free', 'pro', 'enterprise'])[1 + i % 3] as plan,
    1 + i % 50 as account_id,
    (i * 7.25)::decimal(12, 2) as lifetime_value,
    timestamp '2025-01-01 09:00:00' + to_days(i) as signed_up_at,
    i % 10 <> 0 as active
from range(1, 1001) as t(i);
