//! A detector restarted mid-stream keeps what it learned: the second run's
//! new_value rules see the first run's values (rebuilt from the archive).

mod common;

use std::collections::HashSet;

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
