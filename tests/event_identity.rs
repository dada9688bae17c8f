//! Events without an `event_id` are identified by their content and their position in
//! their source: identical lines (a burst of failed logins within one second, as nginx
//! and most exporters write them) are as many events, and reading the same file again
//! adds none.

mod common;

use std::path::Path;

use common::query_json;

const FAILURE: &str = r#"{"time":"2026-11-05T14:00:00-08:00","family":"login","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","user":"maria.lopez0","outcome":"failure","src_ip":"203.0.113.10"}"#;
const OTHER: &str = r#"{"time":"2026-11-05T14:00:01-08:00","family":"login","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","user":"sam.ortiz","outcome":"success","src_ip":"203.0.113.10"}"#;

fn run(dir: &Path, archive: &Path, inputs: &[&Path]) -> seedwatch::pipeline::RunReport {
    let mut opts = common::run_options(dir, archive, dir);
    opts.inputs = inputs.iter().map(|p| p.to_path_buf()).collect();
    opts.locations = None;
    opts.roster = None;
    seedwatch::pipeline::run(&opts).expect("run")
}

fn count(archive: &Path, sql: &str) -> u64 {
    query_json(archive, sql)[0]["n"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn identical_lines_are_separate_events_and_a_reread_file_adds_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let burst = dir.path().join("burst.ndjson");
    std::fs::write(&burst, format!("{FAILURE}\n{FAILURE}\n{FAILURE}\n{OTHER}\n")).expect("write");
    let archive = dir.path().join("archive");

    let report = run(dir.path(), &archive, &[&burst]);
    assert_eq!(count(&archive, "SELECT count(*) AS n FROM login"), 4);
    assert_eq!(count(&archive, "SELECT count(DISTINCT event_id) AS n FROM login"), 4);
    // Three failures for one user within the hour: the burst rule's threshold.
    let burst_findings: Vec<_> = report.findings.iter().filter(|f| f.rule == "login.failed_burst").collect();
    assert_eq!(burst_findings.len(), 1, "{:?}", report.findings.iter().map(|f| &f.rule).collect::<Vec<_>>());
    assert_eq!(burst_findings[0].event_count, 3);

    // The same file again: every line is one already archived.
    let again = run(dir.path(), &archive, &[&burst]);
    assert_eq!(count(&archive, "SELECT count(*) AS n FROM login"), 4);
    assert_eq!(again.duplicates.get("login").copied(), Some(4), "{:?}", again.duplicates);

    // A line that names its id keeps it: the same id twice is one event, wherever it is.
    let with_id = FAILURE.replacen('{', r#"{"event_id":"vendor-42","#, 1);
    let named = dir.path().join("named.ndjson");
    std::fs::write(&named, format!("{with_id}\n{with_id}\n")).expect("write");
    let archive = dir.path().join("named-archive");
    run(dir.path(), &archive, &[&named]);
    assert_eq!(count(&archive, "SELECT count(*) AS n FROM login WHERE event_id = 'vendor-42'"), 1);
}

#[test]
fn two_operators_numbering_their_events_alike_keep_all_their_events() {
    // Two integrations, each numbering its own events from 1: the ids collide, the
    // licenses do not. Dedup is per license, so neither hides the other's events.
    let dir = tempfile::tempdir().expect("tempdir");
    let line = |license: &str, n: u32| {
        format!(r#"{{"event_id":"evt-{n}","time":"2026-11-05T14:00:0{n}-08:00","family":"login","system":"metrc","state":"CA","license":"{license}","location":"oakland","user":"user{n}","outcome":"success","src_ip":"203.0.113.10"}}"#)
    };
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    std::fs::write(&a, (1..=3).map(|n| line("C10-0000123-LIC", n) + "\n").collect::<String>()).expect("write a");
    std::fs::write(&b, (1..=3).map(|n| line("C10-0000456-LIC", n) + "\n").collect::<String>()).expect("write b");
    let archive = dir.path().join("archive");
    let report = run(dir.path(), &archive, &[&a, &b]);
    assert_eq!(report.duplicates.values().sum::<u64>(), 0, "{:?}", report.duplicates);
    assert_eq!(count(&archive, "SELECT count(*) AS n FROM login"), 6);
    assert_eq!(count(&archive, "SELECT count(DISTINCT license) AS n FROM login WHERE event_id = 'evt-2'"), 2);
    // Each operator's own replay is still a duplicate.
    run(dir.path(), &archive, &[&b]);
    assert_eq!(count(&archive, "SELECT count(*) AS n FROM login"), 6);
}
