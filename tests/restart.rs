//! A detector restarted mid-stream keeps what it learned: each run rebuilds
//! windows, hourly baselines, seen-sets and open absences from the archive
//! (`seedwatch_detect::resume`), so stopping anywhere changes no finding.

mod common;

use std::collections::{BTreeSet, HashSet};

use seedwatch::generate::generate;
use seedwatch::pipeline::run;
use seedwatch::truth::score;
use serde_json::Value;

fn event_time(line: &str) -> i64 {
    match serde_json::from_str::<Value>(line).ok().map(|v| v["time"].clone()) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(&s).map_or(0, |d| d.timestamp_millis()),
        _ => 0,
    }
}

#[test]
fn new_value_rules_remember_across_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let truth = generate(&data, &common::options(21, 6, 42)).expect("generate");
    let text = std::fs::read_to_string(data.join("events.ndjson")).expect("read");
    let split = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").map_or(0, |d| d.timestamp_millis());
    let (mut first, mut second) = (String::new(), String::new());
    for line in text.lines() {
        let part = if event_time(line) < split { &mut first } else { &mut second };
        part.push_str(line);
        part.push('\n');
    }
    assert!(!first.is_empty() && !second.is_empty());
    let opts = |name: &str, archive: &str| {
        let path = data.join(name);
        let mut o = common::run_options(&data, &dir.path().join(archive), dir.path());
        o.inputs = vec![path];
        o
    };
    std::fs::write(data.join("first.ndjson"), &first).expect("write");
    std::fs::write(data.join("second.ndjson"), &second).expect("write");

    let loaded: HashSet<String> = ["login.new_ip".to_string(), "api.new_ip".to_string()].into();
    let wanted: Vec<_> = truth.incidents.iter().filter(|e| loaded.contains(&e.rule)).map(|e| e.id.clone()).collect();
    assert!(wanted.len() >= 2, "{wanted:?}");

    // With the archive of the first half, the second half finds the new addresses.
    run(&opts("first.ndjson", "archive")).expect("first run");
    let resumed = run(&opts("second.ndjson", "archive")).expect("second run");
    let s = score(&truth, &resumed.findings, &loaded);
    let found: Vec<_> = s.found.iter().map(|(e, _)| e.id.clone()).collect();
    assert_eq!(found, wanted, "missed after restart: {:?}", s.missed.iter().map(|e| &e.id).collect::<Vec<_>>());
    assert!(s.unexpected.iter().all(|f| !loaded.contains(&f.rule)), "{:?}", s.unexpected);

    // Without it (a fresh archive), every key is new again and still learning: the same
    // incidents go unseen. This is what the restore prevents.
    let cold = run(&opts("second.ndjson", "cold-archive")).expect("cold run");
    let s = score(&truth, &cold.findings, &loaded);
    assert!(!s.missed.is_empty(), "a cold start should not know the history");
}

/// Cut the input at the middle of every labelled incident (a burst half seen,
/// an hour half counted, a sync gap half elapsed) and run each piece as its
/// own process-like run over one archive: the findings must be exactly those
/// of one uninterrupted run. Each piece in a fresh archive (no resume) must not be.
#[test]
fn stopping_mid_incident_changes_no_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let truth = generate(&data, &common::options(21, 6, 42)).expect("generate");
    let text = std::fs::read_to_string(data.join("events.ndjson")).expect("read");
    let ms = |s: &str| chrono::DateTime::parse_from_rfc3339(s).map_or(0, |d| d.timestamp_millis());
    let mut cuts: Vec<i64> = truth.incidents.iter().map(|e| (ms(&e.start) + ms(&e.end)) / 2).collect();
    cuts.sort_unstable();
    cuts.dedup();
    assert!(cuts.len() >= 10, "{cuts:?}");
    let mut pieces = vec![String::new(); cuts.len() + 1];
    for line in text.lines() {
        let piece = cuts.partition_point(|c| *c <= event_time(line));
        pieces[piece].push_str(line);
        pieces[piece].push('\n');
    }
    let paths: Vec<_> = pieces
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(i, p)| {
            let path = data.join(format!("piece-{i:02}.ndjson"));
            std::fs::write(&path, p).expect("write piece");
            path
        })
        .collect();
    let ids = |findings: &[seedwatch_schemas::Finding]| -> BTreeSet<(String, String)> { findings.iter().map(|f| (f.rule.clone(), f.finding_id.clone())).collect() };
    let options = |input: &std::path::Path, archive: &str| {
        let mut o = common::run_options(&data, &dir.path().join(archive), dir.path());
        o.inputs = vec![input.to_path_buf()];
        o
    };

    let whole = run(&options(&data.join("events.ndjson"), "whole")).expect("uninterrupted run");
    let expected = ids(&whole.findings);
    let rules: BTreeSet<&str> = expected.iter().map(|(r, _)| r.as_str()).collect();
    for rule in ["login.failed_burst", "login.shared_account", "api.failed_burst", "api.volume_spike", "sync.lag", "sync.backlog", "audit.bulk_changes"] {
        assert!(rules.contains(rule), "the data has no {rule} finding to split: {rules:?}");
    }

    let mut resumed = BTreeSet::new();
    for (i, path) in paths.iter().enumerate() {
        let report = run(&options(path, "resumed")).unwrap_or_else(|e| panic!("piece {i}: {e:#}"));
        assert_eq!(report.resumed.is_some(), i > 0, "piece {i} resumed: {:?}", report.resumed);
        resumed.extend(ids(&report.findings));
    }
    let missing: Vec<_> = expected.difference(&resumed).collect();
    let extra: Vec<_> = resumed.difference(&expected).collect();
    assert!(missing.is_empty() && extra.is_empty(), "after {} restarts: missing {missing:?}, extra {extra:?}", paths.len() - 1);

    let mut cold = BTreeSet::new();
    for (i, path) in paths.iter().enumerate() {
        cold.extend(ids(&run(&options(path, &format!("cold-{i}"))).expect("cold piece").findings));
    }
    assert_ne!(cold, expected, "pieces without a resume should miss or invent findings");
}
