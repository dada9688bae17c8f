"""Read a seedwatch archive with engines other than seedwatch's own.

Prints one JSON object: for each table, the row count seen by pyarrow's
dataset reader and by DuckDB (both with Hive partitioning), by the Python
`deltalake` package through the table's Delta log, and by DuckDB over the
files that log lists, plus a few values the Rust test compares with
DataFusion's answers.
"""
import json
import os
import sys

import duckdb
import pyarrow.dataset as ds
from deltalake import DeltaTable

root = sys.argv[1]
tables = ["login", "api", "sync", "audit", "findings", "dead_letter"]
out = {}
con = duckdb.connect()
for table in tables:
    path = os.path.join(root, table)
    if not os.path.isdir(path):
        out[table] = {"pyarrow": 0, "duckdb": 0, "delta": 0, "duckdb_delta_files": 0}
        continue
    # Each file holds its rows' `date`; `_delta_log` (checkpoints are Parquet too) is skipped
    # as every folder starting with `_` is.
    dataset = ds.dataset(path, format="parquet")
    pa_rows = dataset.count_rows()
    glob = os.path.join(path, "*=*", "*.parquet")
    duck_rows = con.execute(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = false)").fetchone()[0]
    delta = DeltaTable(path)
    delta_rows = delta.to_pyarrow_dataset().count_rows()
    files = delta.file_uris()
    listed = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0] if files else 0
    out[table] = {"pyarrow": pa_rows, "duckdb": duck_rows, "delta": delta_rows, "duckdb_delta_files": listed}

# `date=YYYY-MM-DD/` and `month=YYYY-MM/` folders; not `_delta_log/`.
glob = lambda t: os.path.join(root, t, "*=*", "*.parquet")
out["failed_logins_by_user"] = con.execute(
    f"SELECT license, \"user\", count(*) AS n FROM read_parquet('{glob('login')}', hive_partitioning = false) "
    "WHERE outcome = 'failure' GROUP BY ALL ORDER BY n DESC, license, \"user\" LIMIT 5"
).fetchall()
out["findings_by_rule"] = con.execute(
    f"SELECT rule, count(*) FROM read_parquet('{glob('findings')}', hive_partitioning = false) GROUP BY rule ORDER BY rule"
).fetchall()
out["dates"] = con.execute(
    f"SELECT count(DISTINCT date) FROM read_parquet('{glob('api')}', hive_partitioning = false)"
).fetchone()[0]
findings = ds.dataset(os.path.join(root, "findings"), format="parquet", partitioning="hive")
out["time_type"] = str(findings.schema.field("window_start").type)
print(json.dumps(out, default=list))
