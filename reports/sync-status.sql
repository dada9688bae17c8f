-- title: Sync status per location against its state's limit
-- review: daily (000 §5.2 "Sync status current", §7.2 "Check sync status")
-- The newest sync and the newest successful sync of each location and integration as of
-- the end of the period, the failures within it, and whether the time since the last
-- success is past the state's limit (policy.yaml: sync interval + grace). LATE rows are
-- the ones to act on: 1 hour, call IT or the vendor; 4 hours, the regulator (000 §5.3).
WITH history AS (
  SELECT location, license, state, system, integration, time, outcome
  FROM sync
  WHERE time < $to AND ($location IS NULL OR location = $location)
), per_integration AS (
  SELECT location, license, state, system, integration,
         max(time) AS last_sync,
         max(CASE WHEN outcome = 'success' THEN time END) AS last_success,
         sum(CASE WHEN outcome <> 'success' AND time >= $from THEN 1 ELSE 0 END) AS failures
  FROM history
  GROUP BY location, license, state, system, integration
)
SELECT s.location, s.license, s.state, s.system, s.integration, s.last_sync, s.last_success, s.failures,
       CAST(round((date_part('epoch', $to) - date_part('epoch', s.last_success)) / 3600.0, 1) AS DOUBLE) AS hours_since_success,
       CAST(p.sync_limit_seconds / 3600.0 AS DOUBLE) AS limit_hours,
       CASE
         WHEN s.last_success IS NULL THEN 'NO SUCCESS'
         WHEN date_part('epoch', $to) - date_part('epoch', s.last_success) > greatest(p.sync_limit_seconds, 3600) THEN 'LATE'
         ELSE 'OK'
       END AS status
FROM per_integration s
LEFT JOIN policy p ON p.state = s.state
ORDER BY CASE WHEN s.last_success IS NULL THEN 0 WHEN date_part('epoch', $to) - date_part('epoch', s.last_success) > greatest(p.sync_limit_seconds, 3600) THEN 1 ELSE 2 END,
         s.location, s.integration
