//! Another engine (pyarrow, DuckDB and the Python `deltalake` package, from PyPI) reads
//! the same tables and agrees with DataFusion. scripts/test.sh installs them and sets
//! SEEDWATCH_PYTHON; without them this test fails rather than skips.

mod common;

use std::process::Command;

use common::{fixture, seedwatch, text};
use serde_json::Value;

#[test]
fn pyarrow_and_duckdb_read_the_archive_and_agree_with_datafusion() {
    let f = fixture();
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = common::repo().join("tests/interop/read_archive.py");
    let out = Command::new(&python).arg(&script).arg(f.archive()).output().unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        out.status.success(),
        "{python} could not read the archive (run ./scripts/test.sh, which installs pyarrow and duckdb): {}",
        text(&out.stderr)
    );
    let other: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let a = f.archive().display().to_string();
    for table in ["login", "api", "sync", "audit", "findings", "dead_letter"] {
        let q = seedwatch(&["query", "--archive", &a, "--format", "json", &format!("SELECT count(*) AS n FROM {table}")]);
        let ours: Value = serde_json::from_slice(&q.stdout).unwrap_or_default();
        let n = ours[0]["n"].as_i64().unwrap_or(-1);
        assert!(n > 0, "{table}: {}", text(&q.stderr));
        assert_eq!(other[table]["pyarrow"].as_i64(), Some(n), "pyarrow count of {table}");
        assert_eq!(other[table]["duckdb"].as_i64(), Some(n), "duckdb count of {table}");
        assert_eq!(other[table]["delta"].as_i64(), Some(n), "count of {table} by Python's deltalake through the Delta log");
        assert_eq!(other[table]["duckdb_delta_files"].as_i64(), Some(n), "duckdb count of {table} over the files the Delta log lists");
    }
    let q = seedwatch(&[
        "query", "--archive", &a, "--format", "json",
        "SELECT license, \"user\", count(*) AS n FROM login WHERE outcome = 'failure' GROUP BY license, \"user\" ORDER BY n DESC, license, \"user\" LIMIT 5",
    ]);
    let ours: Vec<Value> = serde_json::from_slice(&q.stdout).unwrap_or_default();
    let ours: Vec<Value> = ours.iter().map(|r| serde_json::json!([r["license"], r["user"], r["n"]])).collect();
    assert_eq!(Value::Array(ours), other["failed_logins_by_user"]);
    assert_eq!(other["time_type"], "timestamp[ms, tz=UTC]");
    assert!(other["dates"].as_i64().unwrap_or(0) >= i64::from(f.truth.days), "{}", other["dates"]);
}
