//! `seedwatch export ocsf`: every exported record validates against the published OCSF
//! 1.2.0 class schema (PyPI `ocsf-json-schema` with `jsonschema`, installed by
//! scripts/test.sh into SEEDWATCH_PYTHON; without them this test fails rather than skips),
//! and nothing in range is lost.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fixture, query_json, seedwatch, text};
use serde_json::Value;

/// `validate.py` over `files`: (records, invalid messages, by class).
fn validate(files: &[&Path]) -> (u64, Vec<String>, Value) {
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = common::repo().join("tests/ocsf/validate.py");
    let out = Command::new(&python).arg(&script).arg("1.2.0").args(files).output().unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(out.status.success(), "{python} could not validate (run ./scripts/test.sh, which installs ocsf-json-schema and jsonschema): {}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let invalid = report["invalid"].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()).unwrap_or_default();
    (report["records"].as_u64().unwrap_or(0), invalid, report["by_class"].clone())
}

fn export(archive: &Path, table: &str, range: &[&str], out: &Path) -> Vec<Value> {
    let mut args = vec!["export", "ocsf", "--archive"];
    let archive = archive.display().to_string();
    let out_path = out.display().to_string();
    args.extend([archive.as_str(), "--table", table, "--out", out_path.as_str()]);
    args.extend(range);
    let run = seedwatch(&args);
    assert!(run.status.success(), "export {table}: {}", text(&run.stderr));
    std::fs::read_to_string(out).expect("read export").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

fn count(archive: &Path, sql: &str) -> u64 {
    query_json(archive, sql)[0]["n"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn exports_validate_against_the_ocsf_schema_and_lose_nothing_in_range() {
    let f = fixture();
    let archive = f.archive();
    let dir = tempfile::tempdir().expect("tempdir");
    // Two days of logins and API calls (the whole set would only make the check slower);
    // every finding and account change (they are rare).
    let range = ["--from", "2026-10-26", "--to", "2026-10-28"];
    let in_range = "time >= TIMESTAMP '2026-10-26T00:00:00Z' AND time < TIMESTAMP '2026-10-28T00:00:00Z'";
    let account_changes = "action IN ('user_created', 'user_deactivated', 'role_changed', 'mfa_disabled', 'mfa_enabled', 'password_reset')";

    let files = [dir.path().join("findings.ndjson"), dir.path().join("login.ndjson"), dir.path().join("api.ndjson"), dir.path().join("audit.ndjson")];
    let findings = export(&archive, "findings", &[], &files[0]);
    let login = export(&archive, "login", &range, &files[1]);
    let api = export(&archive, "api", &range, &files[2]);
    let audit = export(&archive, "audit", &[], &files[3]);

    assert_eq!(findings.len() as u64, count(&archive, "SELECT count(*) AS n FROM findings"));
    assert_eq!(login.len() as u64, count(&archive, &format!("SELECT count(*) AS n FROM login WHERE {in_range}")));
    assert_eq!(api.len() as u64, count(&archive, &format!("SELECT count(*) AS n FROM api WHERE {in_range}")));
    assert_eq!(audit.len() as u64, count(&archive, &format!("SELECT count(*) AS n FROM audit WHERE {account_changes}")));
    assert!(login.len() > 50 && api.len() > 1000 && !audit.is_empty() && findings.len() > 10, "{} {} {} {}", login.len(), api.len(), audit.len(), findings.len());

    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let (records, invalid, by_class) = validate(&paths);
    assert!(invalid.is_empty(), "invalid OCSF:\n{}", invalid.join("\n"));
    assert_eq!(records as usize, findings.len() + login.len() + api.len() + audit.len());
    assert_eq!(by_class["2004"].as_u64(), Some(findings.len() as u64));
    assert_eq!(by_class["3002"].as_u64(), Some(login.len() as u64));
    assert_eq!(by_class["6003"].as_u64(), Some(api.len() as u64));
    assert_eq!(by_class["3001"].as_u64(), Some(audit.len() as u64));

    // The mapping, not only the shape: failures are failures, a finding's first version
    // creates it, the account changed is the one acted on.
    let failed = count(&archive, &format!("SELECT count(*) AS n FROM login WHERE {in_range} AND outcome = 'failure'"));
    assert_eq!(login.iter().filter(|r| r["status_id"] == 2).count() as u64, failed);
    for r in &findings {
        let closed = r["status"] == "Resolved" || r["status_detail"] == "false positive";
        let first = r["unmapped"]["version"] == 1 && r["unmapped"]["changed_by"].is_null();
        let expected = if closed { 3 } else if first { 1 } else { 2 };
        assert_eq!(r["activity_id"], expected, "{r}");
        assert_eq!(r["type_uid"].as_u64(), Some(200_400 + r["activity_id"].as_u64().unwrap_or(0)));
    }
    let created = query_json(&archive, "SELECT event_id, target FROM audit WHERE action = 'user_created' AND target IS NOT NULL AND target <> actor LIMIT 1");
    let row = created.first().expect("the generator creates accounts");
    let record = audit.iter().find(|r| r["metadata"]["uid"] == row["event_id"]).expect("exported");
    assert_eq!((&record["user"]["name"], &record["activity_id"]), (&row["target"], &Value::from(1)));

    // The validator itself rejects what OCSF forbids: an Authentication without its user.
    let mut broken = login[0].clone();
    broken.as_object_mut().expect("object").remove("user");
    let broken_path = dir.path().join("broken.ndjson");
    std::fs::write(&broken_path, format!("{broken}\n")).expect("write");
    let (_, invalid, _) = validate(&[&broken_path]);
    assert!(invalid.iter().any(|e| e.contains("'user' is a required property")), "{invalid:?}");
}

#[test]
fn export_errors_are_one_line() {
    let out = seedwatch(&["export", "ocsf", "--archive", "/nonexistent/archive", "--table", "login"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.lines().count() == 1 && stderr.contains("/nonexistent/archive"), "{stderr}");
    let out = seedwatch(&["export", "ocsf", "--archive", "/tmp", "--table", "sync"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
