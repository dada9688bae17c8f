-- title: Quarterly access review per location
-- review: quarterly (000 §7.4 "Full user access audit", §7.5; 001 "who has access")
-- needs: roster
-- Every account the roster lists, with its role and status, its last successful login
-- before the end of the period, its logins and role changes in the period, and what to
-- look at: TERMINATED BUT USED (a login after termination), DORMANT (active, no login for
-- 90 days), ADMIN (to confirm still needed), else OK.
WITH logins AS (
  SELECT location, license, "user",
         max(CASE WHEN outcome = 'success' THEN time END) AS last_login,
         sum(CASE WHEN outcome = 'success' AND time >= $from THEN 1 ELSE 0 END) AS logins_in_period
  FROM login WHERE time < $to
  GROUP BY location, license, "user"
), roles AS (
  SELECT location, target AS "user", count(*) AS role_changes
  FROM audit WHERE action = 'role_changed' AND time >= $from AND time < $to
  GROUP BY location, target
), accounts AS (
  SELECT r."user", coalesce(r.location, max(l.location)) AS location, coalesce(r.license, max(l.license)) AS license,
         r.role, r.status, r.terminated_at, max(l.last_login) AS last_login, coalesce(sum(l.logins_in_period), 0) AS logins_in_period
  FROM roster r
  LEFT JOIN logins l ON l."user" = r."user" AND (l.location = r.location OR (r.location IS NULL AND l.license = r.license))
  GROUP BY r."user", r.location, r.license, r.role, r.status, r.terminated_at
)
SELECT a.location, a.license, a."user", a.role, a.status, a.terminated_at, a.last_login, a.logins_in_period,
       coalesce(o.role_changes, 0) AS role_changes,
       CASE
         WHEN a.terminated_at IS NOT NULL AND a.last_login >= a.terminated_at THEN 'TERMINATED BUT USED'
         WHEN a.terminated_at IS NULL AND (a.last_login IS NULL OR date_part('epoch', $to) - date_part('epoch', a.last_login) > 90 * 86400) THEN 'DORMANT'
         WHEN lower(a.role) = 'admin' THEN 'ADMIN'
         ELSE 'OK'
       END AS review
FROM accounts a
LEFT JOIN roles o ON o.location = a.location AND o."user" = a."user"
WHERE ($location IS NULL OR a.location = $location)
ORDER BY a.location, CASE WHEN a.terminated_at IS NOT NULL AND a.last_login >= a.terminated_at THEN 0 WHEN a.terminated_at IS NULL AND (a.last_login IS NULL OR date_part('epoch', $to) - date_part('epoch', a.last_login) > 90 * 86400) THEN 1 ELSE 2 END, a."user"
