-- The analyst queries of benchmark 6 (benches/query.rs, benches/query_duckdb.py), over the
-- synthetic 120-day archive that benches/query.rs builds. Each query follows a "name" comment line.

-- name: failed logins by user over a month
SELECT license, "user", count(*) AS n FROM login WHERE outcome = 'failure'
  AND time >= TIMESTAMP '2026-08-01' AND time < TIMESTAMP '2026-09-01'
GROUP BY license, "user" ORDER BY n DESC LIMIT 20;

-- name: API records per key per day
SELECT key_id, date, sum(records) AS records FROM api GROUP BY key_id, date ORDER BY key_id, date;

-- name: top source IPs
SELECT src_ip, count(*) AS n FROM login GROUP BY src_ip ORDER BY n DESC LIMIT 20;
