-- title: Users active per location, with new addresses
-- review: weekly (000 §5.2 "All user access appropriate", §7.2 "User activity normal")
-- Every account that logged in (or tried) in the period: successes, failures, addresses,
-- addresses never seen for the account before the period, and its first and last login.
WITH period AS (
  SELECT location, license, "user", outcome, src_ip, time
  FROM login
  WHERE time >= $from AND time < $to AND ($location IS NULL OR location = $location)
), firsts AS (
  SELECT location, "user", src_ip, min(time) AS first_seen
  FROM login
  WHERE outcome = 'success' AND time < $to AND ($location IS NULL OR location = $location)
  GROUP BY location, "user", src_ip
), new_ips AS (
  SELECT location, "user", count(*) AS new_ips FROM firsts WHERE first_seen >= $from GROUP BY location, "user"
)
SELECT p.location, p.license, p."user",
       sum(CASE WHEN p.outcome = 'success' THEN 1 ELSE 0 END) AS logins,
       sum(CASE WHEN p.outcome <> 'success' THEN 1 ELSE 0 END) AS failures,
       count(DISTINCT p.src_ip) AS addresses,
       coalesce(max(n.new_ips), 0) AS new_addresses,
       min(p.time) AS first_login, max(p.time) AS last_login
FROM period p
LEFT JOIN new_ips n ON n.location = p.location AND n."user" = p."user"
GROUP BY p.location, p.license, p."user"
ORDER BY p.location, p."user"
