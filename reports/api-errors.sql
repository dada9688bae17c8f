-- title: API errors per integration and key
-- review: daily (000 §5.2 "API errors reviewed", §7.2 "Review API errors")
-- Requests and errors (HTTP status 400 and above) per location, integration and API key
-- in the period, with the share of errors and the most frequent error status; keys with
-- errors first. 401/403 bursts are a wrong or revoked key; 429 a sync loop; 5xx the state system.
WITH calls AS (
  SELECT location, license, integration, key_id, status
  FROM api
  WHERE time >= $from AND time < $to AND ($location IS NULL OR location = $location)
), statuses AS (
  SELECT location, integration, key_id, status, count(*) AS n,
         row_number() OVER (PARTITION BY location, integration, key_id ORDER BY count(*) DESC, status) AS rank
  FROM calls WHERE status >= 400
  GROUP BY location, integration, key_id, status
)
SELECT c.location, c.license, c.integration, c.key_id, count(*) AS requests,
       sum(CASE WHEN c.status >= 400 THEN 1 ELSE 0 END) AS errors,
       round(100.0 * sum(CASE WHEN c.status >= 400 THEN 1 ELSE 0 END) / count(*), 2) AS error_pct,
       max(s.status) AS top_error_status
FROM calls c
LEFT JOIN statuses s ON s.location = c.location AND (s.integration IS NOT DISTINCT FROM c.integration) AND (s.key_id IS NOT DISTINCT FROM c.key_id) AND s.rank = 1
GROUP BY c.location, c.license, c.integration, c.key_id
ORDER BY errors DESC, c.location, c.integration, c.key_id
