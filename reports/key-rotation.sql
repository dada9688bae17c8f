-- title: API keys and their age against the state's rotation period
-- review: monthly (000 §2.4.3, §7.4 "API credential rotation check", §7.5 "Rotate all API credentials")
-- Every API key in use or created before the end of the period and not revoked since (by
-- its fingerprint or name, never the key), with its age at the end of the period and the
-- state's rotation period (policy.yaml: CA 90, CO 60, MA 120 days...); DUE keys are past
-- it. A key is as old as its newest `api_key_created` in the audit log, as the rule
-- audit.key_rotation_overdue counts; a key without one is counted from its first use in
-- the archive (it may be older still).
WITH created AS (
  SELECT target AS key_id, max(time) AS created_at, max(location) AS location, max(license) AS license, max(state) AS state
  FROM audit WHERE action = 'api_key_created' AND time < $to GROUP BY target
), revoked AS (
  SELECT target AS key_id, max(time) AS revoked_at
  FROM audit WHERE action = 'api_key_revoked' AND time < $to GROUP BY target
), used AS (
  SELECT key_id, max(location) AS location, max(license) AS license, max(state) AS state, max(integration) AS integration,
         min(time) AS first_used, max(time) AS last_used
  FROM api WHERE time < $to AND key_id IS NOT NULL GROUP BY key_id
), keys AS (
  SELECT coalesce(u.key_id, c.key_id) AS key_id, coalesce(u.location, c.location) AS location, coalesce(u.license, c.license) AS license,
         coalesce(u.state, c.state) AS state, u.integration, c.created_at, u.first_used, u.last_used, coalesce(c.created_at, u.first_used) AS born
  FROM used u FULL OUTER JOIN created c ON c.key_id = u.key_id
)
SELECT k.location, k.license, k.state, k.integration, k.key_id, k.created_at, k.first_used, k.last_used,
       CAST(floor((date_part('epoch', $to) - date_part('epoch', k.born)) / 86400) AS BIGINT) AS age_days,
       p.key_rotation_days AS rotation_days,
       CASE WHEN (date_part('epoch', $to) - date_part('epoch', k.born)) / 86400 > p.key_rotation_days THEN 'DUE' ELSE 'OK' END AS status
FROM keys k
LEFT JOIN revoked r ON r.key_id = k.key_id
LEFT JOIN policy p ON p.state = k.state
WHERE (r.revoked_at IS NULL OR r.revoked_at < k.created_at) AND ($location IS NULL OR k.location = $location)
ORDER BY status, age_days DESC, k.location, k.key_id
