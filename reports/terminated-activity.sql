-- title: Activity by terminated users
-- review: weekly (000 §7.3 "Review terminated employee list"; 001 mistake 1: ex-employees with live accounts)
-- needs: roster
-- Logins (any outcome), API calls and audit actions in the period by an account the roster
-- lists as terminated, after its termination (a date in the roster ends access at the end
-- of that local day). Any row here is an incident: disable the account in the state system.
WITH activity AS (
  SELECT 'login' AS family, location, license, "user", time FROM login
  UNION ALL SELECT 'api', location, license, "user", time FROM api WHERE "user" IS NOT NULL
  UNION ALL SELECT 'audit', location, license, actor, time FROM audit
)
SELECT r."user", a.location, a.license, r.terminated_at, a.family, count(*) AS events, min(a.time) AS first_after, max(a.time) AS last_after
FROM activity a
JOIN roster r ON r."user" = a."user" AND (r.location = a.location OR (r.location IS NULL AND r.license = a.license))
WHERE r.terminated_at IS NOT NULL AND a.time >= r.terminated_at
  AND a.time >= $from AND a.time < $to AND ($location IS NULL OR a.location = $location)
GROUP BY r."user", a.location, a.license, r.terminated_at, a.family
ORDER BY first_after, r."user", a.family
