//! End to end: generator → `run` → archive → SQL, on real files.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{fixture, query_json, seedwatch, text};
use seedwatch::pipeline::run;
use seedwatch::truth::score;
use seedwatch_schemas::dead_letter::ReasonCode;


fn count(archive: &std::path::Path, table: &str) -> i64 {
    let rows = query_json(archive, &format!("SELECT count(*) AS n FROM {table}"));
    rows[0]["n"].as_i64().unwrap_or(-1)
}

#[test]
fn every_threshold_and_match_incident_is_found_and_no_lookalike_fires() {
    let f = fixture();
    let loaded: HashSet<String> = seedwatch_detect::load_rules(&common::repo().join("rules"))
        .expect("rules")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let s = score(&f.truth, &f.report.findings, &loaded);
    let missed: Vec<_> = s.missed.iter().map(|e| (&e.id, &e.rule)).collect();
    assert!(missed.is_empty(), "missed incidents: {missed:?}");
    assert!(s.found.len() >= 12, "only {} incidents scored", s.found.len());
    let hits: Vec<_> = s.lookalike_hits.iter().map(|(e, _)| &e.id).collect();
    assert!(hits.is_empty(), "look-alikes fired: {hits:?}");
    let unexpected: Vec<_> = s.unexpected.iter().map(|f| (&f.rule, &f.subject, f.window_start)).collect();
    assert!(unexpected.is_empty(), "findings explained by no label: {unexpected:?}");
}

#[test]
fn every_line_is_either_an_event_or_a_dead_letter() {
    let f = fixture();
    let d = &f.report.decode;
    assert_eq!(d.events_total(), f.truth.events);
    assert_eq!(d.dead_total(), f.truth.bad_lines);
    assert_eq!(d.lines, f.truth.events + f.truth.bad_lines);
    let archive = f.archive();
    let archived: i64 = ["login", "api", "sync", "audit"].iter().map(|t| count(&archive, t)).sum();
    assert_eq!(archived as u64, f.truth.events, "every event archived exactly once");
    assert_eq!(count(&archive, "dead_letter") as u64, f.truth.bad_lines);
    assert_eq!(count(&archive, "findings") as usize, f.report.findings.len());
}

#[test]
fn query_returns_rows_from_every_table_in_every_format() {
    let archive = fixture().archive();
    for table in ["login", "api", "sync", "audit", "findings", "dead_letter"] {
        let rows = query_json(&archive, &format!("SELECT * FROM {table} LIMIT 3"));
        assert!(!rows.is_empty(), "{table} is empty");
        assert!(rows[0].get("date").is_some(), "{table} rows lack the date partition column");
    }
    let a = archive.display().to_string();
    let csv = seedwatch(&["query", "--archive", &a, "--format", "csv", "SELECT rule, severity FROM findings ORDER BY rule LIMIT 2"]);
    assert!(text(&csv.stdout).starts_with("rule,severity\n"), "{}", text(&csv.stdout));
    let table = seedwatch(&["query", "--archive", &a, "SELECT count(*) AS n FROM login WHERE outcome = 'failure'"]);
    assert!(text(&table.stdout).contains("| n"), "{}", text(&table.stdout));
    let bad = seedwatch(&["query", "--archive", &a, "SELECT nope FROM login"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("nope"), "{}", text(&bad.stderr));
}

#[test]
fn findings_carry_evidence_that_points_at_archived_events() {
    let archive = fixture().archive();
    let rows = query_json(
        &archive,
        "SELECT f.rule, f.event_count, count(l.event_id) AS resolved \
         FROM (SELECT rule, event_count, unnest(evidence) AS id FROM findings_latest WHERE rule = 'login.lockout') f \
         JOIN login l ON l.event_id = f.id GROUP BY f.rule, f.event_count",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0]["resolved"].as_i64().unwrap_or(0) >= 5, "{rows:?}");
}

#[test]
fn a_rerun_of_the_same_input_adds_nothing() {
    let f = fixture();
    let before: BTreeMap<&str, i64> = ["login", "api", "sync", "audit", "findings", "dead_letter"].iter().map(|t| (*t, count(&f.archive(), t))).collect();
    let again = run(&f.options()).expect("second run");
    assert_eq!(again.commit.files, 0, "a re-run wrote files: {:?}", again.commit);
    // Every event and dead letter is a duplicate; no event is evaluated twice, so no finding is new
    // (the ones still open when the first run stopped come back from the resume and are dropped).
    assert_eq!(again.duplicates.get("login").copied().unwrap_or(0) + again.duplicates.get("api").copied().unwrap_or(0)
        + again.duplicates.get("sync").copied().unwrap_or(0) + again.duplicates.get("audit").copied().unwrap_or(0), f.truth.events);
    assert_eq!(again.duplicates.get("dead_letter").copied(), Some(f.truth.bad_lines));
    assert!(again.findings.is_empty(), "a re-run reported findings as new: {:?}", again.findings);
    assert!(again.resumed.is_some_and(|r| r.rows > 0), "{:?}", again.resumed);
    let after: BTreeMap<&str, i64> = before.keys().map(|t| (*t, count(&f.archive(), t))).collect();
    assert_eq!(before, after);
}

#[test]
fn no_raw_key_anywhere_in_the_archive() {
    let f = fixture();
    assert!(!f.truth.raw_keys.is_empty());
    assert!(f.report.decode.redacted > 0, "the generator's plaintext keys were never seen");
    // 1. Raw bytes of every file (compressed pages could hide a key, so also 2.).
    let mut files = 0;
    for entry in common::files_under(&f.archive()) {
        let bytes = std::fs::read(&entry).expect("read");
        files += 1;
        for key in &f.truth.raw_keys {
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "raw key in {}", entry.display());
        }
    }
    assert!(files > 5);
    // 2. Every string value of every table, decompressed, through SQL.
    for table in ["login", "api", "sync", "audit", "findings", "dead_letter"] {
        let rows = query_json(&f.archive(), &format!("SELECT * FROM {table}"));
        let all = serde_json::to_string(&rows).unwrap_or_default();
        for key in &f.truth.raw_keys {
            assert!(!all.contains(key.as_str()), "raw key in table {table}");
        }
    }
    // And the fingerprint stands in for it: API rows of the leaky POS have a key_id.
    let rows = query_json(&f.archive(), "SELECT count(*) AS n FROM api WHERE extra LIKE '%[redacted:%' AND key_id IS NOT NULL");
    assert!(rows[0]["n"].as_i64().unwrap_or(0) > 0, "{rows:?}");
}

#[test]
fn every_bad_input_class_lands_in_dead_letter_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = r#"{"time":"2026-11-05T10:00:00-08:00","family":"login","system":"metrc","state":"CA","license":"L1","user":"alice","outcome":"success","src_ip":"203.0.113.5"}"#;
    let with = |k: &str, v: &str| good.replacen(&format!("\"{k}\":"), &format!("\"{k}\":{v},\"_{k}\":"), 1);
    let mut lines: Vec<(Vec<u8>, &str)> = vec![
        (b"not json at all".to_vec(), "not_json"),
        (b"{\"family\":\"login\",\"user\":\"\xff\"}".to_vec(), "invalid_utf8"),
        (good.replace(r#""user":"alice","#, "").into_bytes(), "missing_field"),
        (with("time", "\"last tuesday\"").into_bytes(), "bad_time"),
        (good.replace("\"family\":\"login\"", "\"family\":\"kerberos\"").into_bytes(), "unknown_family"),
        (r#"{"time":"2026-11-05T10:00:00Z","family":"audit","system":"metrc","state":"CA","license":"L1","actor":"a","action":"beamed_up"}"#.as_bytes().to_vec(), "unknown_action"),
        (good.replace(r#""outcome":"success""#, r#""outcome":"success","mfa":"maybe""#).into_bytes(), "wrong_type"),
        (good.replace("203.0.113.5", "203.0.113.500").into_bytes(), "invalid_ip"),
        (format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 1)).into_bytes(), "line_too_long"),
        (Vec::new(), "empty_line"),
    ];
    lines.insert(3, (good.as_bytes().to_vec(), "decoded"));
    let mut input = Vec::new();
    for (line, _) in &lines {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("events.ndjson"), &input).expect("write");
    let mut opts = common::run_options(&data, &dir.path().join("archive"), dir.path());
    opts.locations = None;
    opts.roster = None;
    let report = run(&opts).expect("a run with bad lines must not fail");
    assert_eq!(report.decode.events_total(), 1);
    let rows = query_json(opts.archive.local().expect("a local archive"), "SELECT line, reason_code, reason, raw_bytes FROM dead_letter ORDER BY line");
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r["line"].as_i64().unwrap_or(0), r["reason_code"].as_str().unwrap_or("").to_string())).collect();
    let expected: Vec<(i64, String)> = lines.iter().enumerate().filter(|(_, (_, c))| *c != "decoded").map(|(i, (_, c))| (i as i64 + 1, c.to_string())).collect();
    assert_eq!(got, expected);
    for r in &rows {
        assert!(!r["reason"].as_str().unwrap_or("").is_empty());
    }
    let too_long = rows.iter().find(|r| r["reason_code"] == "line_too_long").expect("too long row");
    let long_len = lines.iter().find(|(_, c)| *c == "line_too_long").map(|(l, _)| l.len() as i64);
    assert_eq!(too_long["raw_bytes"].as_i64(), long_len);
    let codes: HashSet<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
    assert!(got.iter().all(|(_, c)| codes.contains(c.as_str())));
}
