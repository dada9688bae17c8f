"""seedwatch side by side with DuckDB, on the same data, in one go.

(a) detections: `seedwatch run` (decode, validate, redact, the whole rule
    catalog, archive) against the same three detections written as DuckDB SQL
    over the same NDJSON (failed-login bursts, 2x volume per key per hour, new
    IPs per user), DuckDB reading only the 8 columns they need; then the same job
    on both sides ("like for like"): DuckDB also loads every column and writes
    the events to a zstd Parquet archive, as `seedwatch run` does;
(b) analyst queries over the same Parquet archive: `seedwatch query` against
    DuckDB's read_parquet;
(c) bytes per event of the login and API tables: a streaming archive (the input
    archived by 8 runs of interleaved lines, so each day has 8 files, as a
    detector's commits leave it), then after `seedwatch archive compact`, against
    DuckDB writing the same rows as one zstd Parquet file in the same order.

Prints both times (or sizes) and the ratio (DuckDB / seedwatch: above 1 means
seedwatch is faster, or smaller). Usage: compare.py SEEDWATCH_BIN DATA_DIR WORK_DIR
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

REPEAT = 3
RULES = Path(__file__).resolve().parent.parent / "rules"
# seedwatch's rules for the three DuckDB detections below, in the same order.
THREE_RULES = ["login/failed_burst.yaml", "api/volume_spike.yaml", "login/new_ip.yaml"]

DETECTIONS = {
    "failed-login bursts (3 in 1 h)": """
        SELECT count(*) FROM (
          SELECT count(*) OVER (PARTITION BY license, "user" ORDER BY t
                                RANGE BETWEEN INTERVAL 1 HOUR PRECEDING AND CURRENT ROW) AS n
          FROM (SELECT license, "user", "time" AS t FROM ev
                WHERE family = 'login' AND outcome = 'failure'))
        WHERE n >= 3""",
    "2x volume per key per hour": """
        WITH hourly AS (
          SELECT license, key_id, date_trunc('hour', "time") AS h, sum(coalesce(records, 0)) AS v
          FROM ev WHERE family = 'api' GROUP BY ALL),
        judged AS (
          SELECT v, median(v) OVER (PARTITION BY license, key_id, hour(h) ORDER BY h
                                    ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING) AS normal,
                 count(*) OVER (PARTITION BY license, key_id, hour(h) ORDER BY h
                                ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING) AS samples
          FROM hourly)
        SELECT count(*) FROM judged WHERE samples >= 7 AND v >= 2 * normal AND v >= 2000""",
    "new IPs per user (after 7 days)": """
        WITH logins AS (
          SELECT license, "user", src_ip, "time" AS t FROM ev
          WHERE family = 'login' AND outcome = 'success' AND src_ip IS NOT NULL),
        firsts AS (SELECT license, "user", src_ip, min(t) AS first FROM logins GROUP BY ALL),
        users AS (SELECT license, "user", min(t) AS born FROM logins GROUP BY ALL)
        SELECT count(*) FROM firsts JOIN users USING (license, "user")
        WHERE first >= born + INTERVAL 7 DAY""",
}

QUERIES = {
    "failed logins by user over a month": (
        "SELECT license, \"user\", count(*) AS n FROM login WHERE outcome = 'failure' "
        "AND time >= TIMESTAMP '2026-10-19' AND time < TIMESTAMP '2026-11-19' GROUP BY license, \"user\" ORDER BY n DESC LIMIT 20"
    ),
    "API records per key per day": (
        "SELECT key_id, date, sum(records) AS records FROM api GROUP BY key_id, date ORDER BY key_id, date"
    ),
    "top source IPs": (
        "SELECT src_ip, count(*) AS n FROM login GROUP BY src_ip ORDER BY n DESC LIMIT 20"
    ),
}


def best_of(fn):
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(label, ours, theirs):
    print(f"  {label:<40} seedwatch {ours:8.3f} s   duckdb {theirs:8.3f} s   ratio {theirs / ours:6.2f}x")
    return {"what": label, "seedwatch_s": ours, "duckdb_s": theirs, "ratio": theirs / ours}


# Each table's compaction order (schemas::Table::compaction_order), for DuckDB's copy.
ORDER = {"login": 'license, "user", "time"', "api": 'license, key_id, "time"'}


def table_bytes(archive, table):
    """Bytes of the data files under a table's day folders (the live ones: compaction deletes
    what it replaced)."""
    return sum(f.stat().st_size for f in (archive / table).glob("*=*/*.parquet"))


def bytes_per_event(seedwatch, data, work, pieces=8):
    stream = work / "archive-stream"
    shutil.rmtree(stream, ignore_errors=True)
    paths = [work / f"piece-{i}.ndjson" for i in range(pieces)]
    outs = [p.open("w") for p in paths]
    with (data / "events.ndjson").open() as f:
        for i, line in enumerate(f):
            outs[i % pieces].write(line)
    for out in outs:
        out.close()
    keys = ["--fingerprint-key", str(work / "fp.key"), "--signing-key", str(work / "signing.pem")]
    for path in paths:
        subprocess.run([seedwatch, "run", "--quiet", "--input", str(path), "--archive", str(stream),
                        "--locations", str(data / "locations.csv"), "--roster", str(data / "roster.csv"), *keys],
                       check=True, stdout=subprocess.DEVNULL)
        path.unlink()
    streaming = {t: table_bytes(stream, t) for t in ORDER}
    files = {t: len(list((stream / t).glob("*=*/*.parquet"))) for t in ORDER}
    subprocess.run([seedwatch, "archive", "compact", "--archive", str(stream), "--table", "login", "--table", "api",
                    "--signing-key", str(work / "signing.pem")], check=True, stdout=subprocess.DEVNULL)
    con = duckdb.connect()
    out = []
    print(f"(c) bytes per event: a streaming archive ({pieces} runs of interleaved lines), compacted, against DuckDB")
    for table, order in ORDER.items():
        # Day and month folders (each file holds its rows' `date`), not `_delta_log`.
        glob = f"{stream}/{table}/*=*/*.parquet"
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
        theirs = work / f"duckdb-{table}.parquet"
        con.execute(f"COPY (SELECT * FROM read_parquet('{glob}') ORDER BY {order}) TO '{theirs}' (FORMAT parquet, COMPRESSION zstd)")
        # The same rows in the archive's layout, a file per day (what retention by whole days needs).
        per_day = work / f"duckdb-{table}-by-date"
        shutil.rmtree(per_day, ignore_errors=True)
        con.execute(f"COPY (SELECT * FROM read_parquet('{glob}', hive_partitioning = false) ORDER BY {order}) TO '{per_day}' "
                    "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))")
        # And a file per month: what a coarser layout for compacted history would give (issue 18).
        per_month = work / f"duckdb-{table}-by-month"
        shutil.rmtree(per_month, ignore_errors=True)
        con.execute(f"COPY (SELECT *, substr(CAST(date AS VARCHAR), 1, 7) AS month FROM read_parquet('{glob}', hive_partitioning = false) ORDER BY {order}) "
                    f"TO '{per_month}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (month))")
        compacted = table_bytes(stream, table)
        duck = theirs.stat().st_size
        duck_by_day = sum(f.stat().st_size for f in per_day.glob("date=*/*.parquet"))
        duck_by_month = sum(f.stat().st_size for f in per_month.glob("month=*/*.parquet"))
        print(f"  {table:<6} {rows:>11,} events   streaming {streaming[table] / rows:6.1f} B/event ({files[table]} files)"
              f"   compacted {compacted / rows:6.1f}   duckdb one file {duck / rows:6.1f} ({duck / compacted:4.2f}x)"
              f"   duckdb a file per day {duck_by_day / rows:6.1f} ({duck_by_day / compacted:4.2f}x)"
              f"   a file per month {duck_by_month / rows:6.1f} ({duck_by_month / compacted:4.2f}x)")
        out.append({"table": table, "events": rows, "streaming_files": files[table], "streaming_bytes_per_event": streaming[table] / rows,
                    "compacted_bytes_per_event": compacted / rows, "duckdb_bytes_per_event": duck / rows, "ratio": duck / compacted,
                    "duckdb_by_date_bytes_per_event": duck_by_day / rows, "ratio_by_date": duck_by_day / compacted,
                    "duckdb_by_month_bytes_per_event": duck_by_month / rows})
    return out


def main():
    seedwatch, data, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    events = data / "events.ndjson"
    archive = work / "archive"
    results = {"detections": [], "queries": []}

    # The same three detections as seedwatch rules (with the policy they read), for the
    # like-for-like row; the first row runs the whole catalog.
    three = work / "rules-three"
    shutil.rmtree(three, ignore_errors=True)
    for rule in THREE_RULES:
        (three / rule).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(RULES / rule, three / rule)
    shutil.copy(RULES / "policy.yaml", three / "policy.yaml")

    def run_seedwatch(rules=RULES):
        shutil.rmtree(archive, ignore_errors=True)
        subprocess.run(
            [seedwatch, "run", "--quiet", "--input", str(events), "--archive", str(archive),
             "--rules", str(rules),
             "--locations", str(data / "locations.csv"), "--roster", str(data / "roster.csv"),
             "--fingerprint-key", str(work / "fp.key")],
            check=True, stdout=subprocess.DEVNULL)

    def run_duckdb():
        con = duckdb.connect()
        # `time` is RFC 3339 text or epoch milliseconds in the event contract.
        con.execute(f"""CREATE TEMP VIEW ev AS SELECT * REPLACE (
            CASE WHEN regexp_full_match(CAST("time" AS VARCHAR), '[0-9]+') THEN make_timestamp(CAST("time" AS BIGINT) * 1000)
                 ELSE CAST(CAST("time" AS VARCHAR) AS TIMESTAMPTZ) END AS "time")
            FROM read_json_auto('{events}', format = 'newline_delimited', ignore_errors = true, union_by_name = true,
                                columns = {{"time": 'VARCHAR', family: 'VARCHAR', license: 'VARCHAR', "user": 'VARCHAR', outcome: 'VARCHAR',
                                           key_id: 'VARCHAR', records: 'BIGINT', src_ip: 'VARCHAR'}})""")
        for sql in DETECTIONS.values():
            con.execute(sql).fetchall()

    def run_duckdb_archiving():
        # What `run` does besides detecting: every column read, the events kept as Parquet.
        shutil.rmtree(work / "duckdb-archive", ignore_errors=True)
        con = duckdb.connect()
        con.execute(f"""CREATE TEMP TABLE ev AS SELECT * REPLACE (
            CASE WHEN regexp_full_match(trim(CAST("time" AS VARCHAR), '"'), '[0-9]+') THEN make_timestamp(CAST("time" AS BIGINT) * 1000)
                 ELSE CAST(trim(CAST("time" AS VARCHAR), '"') AS TIMESTAMPTZ) END AS "time")
            FROM read_json_auto('{events}', format = 'newline_delimited', ignore_errors = true, union_by_name = true)""")
        for sql in DETECTIONS.values():
            con.execute(sql).fetchall()
        con.execute(f"COPY ev TO '{work / 'duckdb-archive'}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (family))")

    print(f"(a) detections over {events} ({events.stat().st_size / 1e6:.0f} MB)")
    print("    seedwatch: decode + validate + redact + rules + Parquet archive; duckdb: the 3 detections below")
    theirs = best_of(run_duckdb)
    results["detections"].append(row("whole catalog (23 rules)", best_of(run_seedwatch), theirs))
    same_three = best_of(lambda: run_seedwatch(three))
    results["detections"].append(row("the same 3 rules", same_three, theirs))
    print("    like for like: duckdb also reads every column and writes a zstd Parquet archive")
    results["detections"].append(row("like for like, the same 3 rules", same_three, best_of(run_duckdb_archiving)))
    run_seedwatch()  # (b) reads the whole catalog's archive

    print(f"(b) analyst queries over the archive at {archive}")
    con = duckdb.connect()
    for table in ("login", "api"):
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{archive}/{table}/*=*/*.parquet', hive_partitioning = false)")
    for label, sql in QUERIES.items():
        def ours_query():
            subprocess.run([seedwatch, "query", "--archive", str(archive), "--format", "csv", sql], check=True, stdout=subprocess.DEVNULL)
        con.execute(sql).fetchall()  # warm
        results["queries"].append(row(label, best_of(ours_query), best_of(lambda: con.execute(sql).fetchall())))
    results["bytes_per_event"] = bytes_per_event(seedwatch, data, work)
    (work / "compare.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
