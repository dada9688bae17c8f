-- title: Changes outside business hours
-- review: weekly (000 §5.2 "Unusual patterns identified"; 001: admin work at 2 am is how a stolen account shows)
-- needs: locations
-- Audit-log actions (user and role changes, key changes, exports, adjustments) taken
-- outside the location's business hours, on its own clock (locations.csv: timezone, open,
-- close; hours may cross midnight; a 00:00-24:00 site has no off-hours).
WITH changes AS (
  SELECT a.location, a.license, a.actor, a.action, a.target, a.records, a.time,
         local_time(a.time, l.timezone) AS local, l.open, l.close
  FROM audit a
  JOIN locations l ON l.location = a.location
  WHERE a.time >= $from AND a.time < $to AND ($location IS NULL OR a.location = $location)
)
SELECT location, license, actor, action, target, records, time, local AS local_time, concat(open, '-', close) AS business_hours
FROM changes
WHERE NOT (open = '00:00' AND close = '24:00')
  AND NOT (CASE WHEN open <= close THEN local >= open AND local < close ELSE local >= open OR local < close END)
ORDER BY time, location, actor
