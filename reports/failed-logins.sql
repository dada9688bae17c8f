-- title: Failed logins per user
-- review: daily (000 §5.2 "Failed logins reviewed", §7.2 "Review failed logins")
-- Each account with failed logins in the period: how many, from how many addresses, the
-- first and last, and whether a success followed the last failure (a guessed password).
WITH failures AS (
  SELECT location, license, "user", count(*) AS failures, count(DISTINCT src_ip) AS source_ips,
         min(time) AS first_failure, max(time) AS last_failure
  FROM login
  WHERE outcome = 'failure' AND time >= $from AND time < $to AND ($location IS NULL OR location = $location)
  GROUP BY location, license, "user"
), successes AS (
  SELECT location, "user", max(time) AS last_success
  FROM login
  WHERE outcome = 'success' AND time >= $from AND time < $to AND ($location IS NULL OR location = $location)
  GROUP BY location, "user"
)
SELECT f.location, f.license, f."user", f.failures, f.source_ips, f.first_failure, f.last_failure,
       coalesce(s.last_success > f.last_failure, false) AS success_after_last_failure
FROM failures f
LEFT JOIN successes s ON s.location = f.location AND s."user" = f."user"
ORDER BY f.failures DESC, f.location, f."user"
