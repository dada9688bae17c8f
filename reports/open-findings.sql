-- title: Open findings, most severe first
-- review: daily (000 §7.2 "Check alerts")
-- Every finding still open or acknowledged (newest version of each) that started before
-- the end of the period, most severe and oldest first, with how long it has been open.
SELECT finding_id, rule, severity, status, location, license, subject, window_start, window_end, event_count,
       CAST(round((date_part('epoch', $to) - date_part('epoch', window_start)) / 3600.0, 1) AS DOUBLE) AS open_hours
FROM findings_latest
WHERE status IN ('open', 'acknowledged') AND window_start < $to AND ($location IS NULL OR location = $location)
ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END, window_start, finding_id
