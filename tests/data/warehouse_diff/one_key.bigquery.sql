-- a run: the rows to send and the counts
WITH __retl_model AS (
  SELECT
    *
  FROM (
    SELECT
      id,
      email,
      plan
    FROM users
    WHERE
      active
  ) AS __retl_m
), __retl_current AS (
  SELECT
    CASE
      WHEN m.`id` IS NULL
      THEN NULL
      ELSE COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
    END AS __retl_wh_key,
    TO_HEX(
      MD5(
        'email,id,plan' || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`email` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`plan` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
      )
    ) AS __retl_hash,
    m.*
  FROM __retl_model AS m
), __retl_repeated AS (
  SELECT
    __retl_wh_key,
    COUNT(*) AS __retl_rows
  FROM __retl_current
  WHERE
    __retl_wh_key IS NOT NULL
  GROUP BY
    __retl_wh_key
  HAVING
    COUNT(*) > 1
), __retl_status AS (
  SELECT
    CASE
      WHEN v.__retl_wh_key IS NULL OR r.__retl_wh_key IS NOT NULL
      THEN 'invalid'
      WHEN s.wh_key IS NULL
      THEN 'added'
      WHEN s.`hash` <> v.__retl_hash
      THEN 'changed'
      ELSE 'unchanged'
    END AS __retl_status,
    v.*
  FROM __retl_current AS v
  LEFT JOIN __retl_repeated AS r
    ON r.__retl_wh_key = v.__retl_wh_key
  LEFT JOIN `reverse_etl`.`snapshot_users` AS s
    ON s.wh_key = v.__retl_wh_key
)
SELECT
  'row' AS __retl_kind,
  1 AS __retl_count,
  st.__retl_status,
  st.__retl_wh_key,
  st.__retl_hash,
  st.`id`,
  st.`email`,
  st.`plan`
FROM __retl_status AS st
WHERE
  st.__retl_status IN ('added', 'changed')
UNION ALL
SELECT
  'count' AS __retl_kind,
  COUNT(*) AS __retl_count,
  __retl_status,
  NULL AS __retl_wh_key,
  NULL AS __retl_hash,
  NULL AS `id`,
  NULL AS `email`,
  NULL AS `plan`
FROM __retl_status
GROUP BY
  __retl_status
UNION ALL
SELECT
  'count',
  COUNT(*),
  'removed',
  NULL,
  NULL,
  NULL AS `id`,
  NULL AS `email`,
  NULL AS `plan`
FROM `reverse_etl`.`snapshot_users` AS gone
WHERE
  NOT EXISTS(
    SELECT
      1
    FROM __retl_current AS c
    WHERE
      c.__retl_wh_key = gone.wh_key
  );

-- a plan: the counts
WITH __retl_model AS (
  SELECT
    *
  FROM (
    SELECT
      id,
      email,
      plan
    FROM users
    WHERE
      active
  ) AS __retl_m
), __retl_current AS (
  SELECT
    CASE
      WHEN m.`id` IS NULL
      THEN NULL
      ELSE COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
    END AS __retl_wh_key,
    TO_HEX(
      MD5(
        'email,id,plan' || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`email` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`plan` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
      )
    ) AS __retl_hash,
    m.*
  FROM __retl_model AS m
), __retl_repeated AS (
  SELECT
    __retl_wh_key,
    COUNT(*) AS __retl_rows
  FROM __retl_current
  WHERE
    __retl_wh_key IS NOT NULL
  GROUP BY
    __retl_wh_key
  HAVING
    COUNT(*) > 1
), __retl_status AS (
  SELECT
    CASE
      WHEN v.__retl_wh_key IS NULL OR r.__retl_wh_key IS NOT NULL
      THEN 'invalid'
      WHEN s.wh_key IS NULL
      THEN 'added'
      WHEN s.`hash` <> v.__retl_hash
      THEN 'changed'
      ELSE 'unchanged'
    END AS __retl_status,
    v.*
  FROM __retl_current AS v
  LEFT JOIN __retl_repeated AS r
    ON r.__retl_wh_key = v.__retl_wh_key
  LEFT JOIN `reverse_etl`.`snapshot_users` AS s
    ON s.wh_key = v.__retl_wh_key
)
SELECT
  'count' AS __retl_kind,
  COUNT(*) AS __retl_count,
  __retl_status,
  NULL AS __retl_wh_key,
  NULL AS __retl_hash,
  NULL AS `id`,
  NULL AS `email`,
  NULL AS `plan`
FROM __retl_status
GROUP BY
  __retl_status
UNION ALL
SELECT
  'count',
  COUNT(*),
  'removed',
  NULL,
  NULL,
  NULL AS `id`,
  NULL AS `email`,
  NULL AS `plan`
FROM `reverse_etl`.`snapshot_users` AS gone
WHERE
  NOT EXISTS(
    SELECT
      1
    FROM __retl_current AS c
    WHERE
      c.__retl_wh_key = gone.wh_key
  );

-- removed
WITH __retl_model AS (
  SELECT
    *
  FROM (
    SELECT
      id,
      email,
      plan
    FROM users
    WHERE
      active
  ) AS __retl_m
), __retl_keys AS (
  SELECT
    CASE
      WHEN m.`id` IS NULL
      THEN NULL
      ELSE COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
    END AS __retl_wh_key
  FROM __retl_model AS m
)
SELECT
  r.wh_key,
  r.key,
  r.`hash`,
  r.fields
FROM `reverse_etl`.`snapshot_users` AS r
WHERE
  NOT EXISTS(
    SELECT
      1
    FROM __retl_keys AS c
    WHERE
      c.__retl_wh_key = r.wh_key
  );

-- invalid
WITH __retl_model AS (
  SELECT
    *
  FROM (
    SELECT
      id,
      email,
      plan
    FROM users
    WHERE
      active
  ) AS __retl_m
), __retl_current AS (
  SELECT
    CASE
      WHEN m.`id` IS NULL
      THEN NULL
      ELSE COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
    END AS __retl_wh_key,
    TO_HEX(
      MD5(
        'email,id,plan' || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`email` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`plan` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
      )
    ) AS __retl_hash,
    m.*
  FROM __retl_model AS m
), __retl_repeated AS (
  SELECT
    __retl_wh_key,
    COUNT(*) AS __retl_rows
  FROM __retl_current
  WHERE
    __retl_wh_key IS NOT NULL
  GROUP BY
    __retl_wh_key
  HAVING
    COUNT(*) > 1
)
SELECT
  r.__retl_rows,
  c.*
FROM __retl_current AS c
LEFT JOIN __retl_repeated AS r
  ON r.__retl_wh_key = c.__retl_wh_key
WHERE
  c.__retl_wh_key IS NULL OR r.__retl_wh_key IS NOT NULL;

-- a first plan (no snapshot yet)
WITH __retl_model AS (
  SELECT
    *
  FROM (
    SELECT
      id,
      email,
      plan
    FROM users
    WHERE
      active
  ) AS __retl_m
), __retl_current AS (
  SELECT
    CASE
      WHEN m.`id` IS NULL
      THEN NULL
      ELSE COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
    END AS __retl_wh_key,
    TO_HEX(
      MD5(
        'email,id,plan' || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`email` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`id` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N') || '|' || COALESCE(REPLACE(REPLACE(CAST(m.`plan` AS STRING), '\\', '\\\\'), '|', '\\|'), '\\N')
      )
    ) AS __retl_hash,
    m.*
  FROM __retl_model AS m
), __retl_repeated AS (
  SELECT
    __retl_wh_key,
    COUNT(*) AS __retl_rows
  FROM __retl_current
  WHERE
    __retl_wh_key IS NOT NULL
  GROUP BY
    __retl_wh_key
  HAVING
    COUNT(*) > 1
), __retl_status AS (
  SELECT
    CASE
      WHEN v.__retl_wh_key IS NULL OR r.__retl_wh_key IS NOT NULL
      THEN 'invalid'
      WHEN s.wh_key IS NULL
      THEN 'added'
      WHEN s.`hash` <> v.__retl_hash
      THEN 'changed'
      ELSE 'unchanged'
    END AS __retl_status,
    v.*
  FROM __retl_current AS v
  LEFT JOIN __retl_repeated AS r
    ON r.__retl_wh_key = v.__retl_wh_key
  LEFT JOIN (
    SELECT
      CAST(NULL AS STRING) AS wh_key,
      CAST(NULL AS STRING) AS key,
      CAST(NULL AS STRING) AS `hash`,
      CAST(NULL AS STRING) AS fields
    WHERE
      1 = 0
  ) AS s
    ON s.wh_key = v.__retl_wh_key
)
SELECT
  'count' AS __retl_kind,
  COUNT(*) AS __retl_count,
  __retl_status,
  NULL AS __retl_wh_key,
  NULL AS __retl_hash,
  NULL AS `id`,
  NULL AS `email`,
  NULL AS `plan`
FROM __retl_status
GROUP BY
  __retl_status
UNION ALL
SELECT
  'count',
  COUNT(*),
  'removed',
  NULL,
  NULL,
  NULL AS `id`,
  NULL AS `email`,
  NULL AS `plan`
FROM (
  SELECT
    CAST(NULL AS STRING) AS wh_key,
    CAST(NULL AS STRING) AS key,
    CAST(NULL AS STRING) AS `hash`,
    CAST(NULL AS STRING) AS fields
  WHERE
    1 = 0
) AS gone
WHERE
  NOT EXISTS(
    SELECT
      1
    FROM __retl_current AS c
    WHERE
      c.__retl_wh_key = gone.wh_key
  );

-- snapshot table
CREATE SCHEMA IF NOT EXISTS `reverse_etl`;

-- snapshot table
CREATE TABLE IF NOT EXISTS `reverse_etl`.`snapshot_users` (wh_key STRING PRIMARY KEY, key STRING NOT NULL, `hash` STRING NOT NULL, fields STRING);

