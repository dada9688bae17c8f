"""DuckDB's times for benchmark 6's queries (benches/queries.sql) over the archive that
benches/query.rs built, so both sides run the same text over the same files.

Usage: query_duckdb.py ARCHIVE_DIR
"""
import pathlib
import sys
import time

import duckdb


def queries():
    """(name, sql) pairs of benches/queries.sql."""
    text = (pathlib.Path(__file__).parent / "queries.sql").read_text()
    out = []
    for block in text.split("-- name:")[1:]:
        name, _, sql = block.partition("\n")
        out.append((name.strip(), sql.strip().rstrip(";")))
    return out


root = sys.argv[1]
con = duckdb.connect()
for table in ("login", "api"):
    # `date=*` and `month=*` folders, not `_delta_log` (its checkpoints are Parquet too);
    # each file holds its rows' `date`.
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{root}/{table}/*=*/*.parquet', hive_partitioning = false)")
for name, sql in queries():
    times = []
    for _ in range(4):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    print(f"duckdb/{name}: {len(rows)} rows, first run {times[0]:.2f} s, warm best of 3 {min(times[1:]):.2f} s")
