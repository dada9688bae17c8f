-- title: Bulk exports and large API reads
-- review: weekly (000 §7.3 "Review API activity logs"; 001: bulk pulls of inventory data)
-- Exports recorded in the audit log, and API requests that moved 1,000 records or more,
-- in the period: who or which key, where, when and how many records.
SELECT 'audit' AS source, location, license, actor AS who, action AS what, records, time
FROM audit
WHERE action = 'data_exported' AND time >= $from AND time < $to AND ($location IS NULL OR location = $location)
UNION ALL
SELECT 'api', location, license, coalesce("user", key_id), concat(method, ' ', endpoint), records, time
FROM api
WHERE records >= 1000 AND time >= $from AND time < $to AND ($location IS NULL OR location = $location)
ORDER BY records DESC, time
