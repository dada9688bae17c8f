//! Findings as versions: published when they open, again as they escalate or grow,
//! resolved by the detector when they end by themselves, and worked by people
//! (`seedwatch findings ack|resolve|false-positive`), all as rows of one history.

mod common;

use std::sync::Arc;

use common::{query_json, seedwatch, text};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, Detector, RuleEngine};
use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::{Decoder, Fingerprinter, LineChunk, Source};
use seedwatch_schemas::{Finding, Severity, Status};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// 2026-11-05 08:00 UTC.
const T0: i64 = 1_762_329_600_000;

fn engine(rule: &str) -> RuleEngine {
    let rules: Vec<_> = load_rules(&common::repo().join("rules")).expect("rules").into_iter().filter(|r| r.id == rule).collect();
    assert_eq!(rules.len(), 1, "{rule}");
    let policy = seedwatch_detect::policy::load_policy(&common::repo().join("rules/policy.yaml")).expect("policy");
    RuleEngine::with_reference(rules, Arc::new(Reference { policy, ..Default::default() })).expect("engine").with_clock(|| 1_800_000_000_000)
}

fn decoder() -> Decoder {
    Decoder::new(seedwatch_ingest::Redactor::new(Fingerprinter::new(b"lifecycle-test-secret").expect("fp")))
}

/// Feed `lines` as one chunk, then advance to its newest event; what came out.
fn step(engine: &mut RuleEngine, decoder: &mut Decoder, lines: &[String]) -> Vec<Finding> {
    let text = lines.join("\n");
    let mut source = reader_source("step", text.as_bytes());
    let mut chunk = LineChunk::new();
    let mut out = Vec::new();
    while source.next_chunk(&mut chunk).expect("read") {
        let decoded = decoder.decode_chunk(&chunk, 0).expect("decode");
        assert!(decoded.dead_letters.is_none(), "valid lines");
        for batch in &decoded.events {
            engine.process(batch, &mut out).expect("detect");
        }
        if let Some(w) = decoded.max_event_time() {
            engine.advance(w, &mut out);
        }
    }
    out
}

fn api(t: i64, key: &str, endpoint: &str, records: u64) -> String {
    format!(
        r#"{{"time":{t},"family":"api","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","key_id":"{key}","integration":"flowhub","method":"GET","endpoint":"{endpoint}","status":200,"records":{records},"src_ip":"192.0.2.20"}}"#
    )
}

fn sync(t: i64, outcome: &str) -> String {
    let error = if outcome == "failure" { r#","error":"timeout""# } else { "" };
    format!(r#"{{"time":{t},"family":"sync","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","integration":"flowhub","outcome":"{outcome}"{error}}}"#)
}

/// (version, severity, status, events, raised) of each version.
fn versions(findings: &[Finding]) -> Vec<(i64, Severity, Status, i64, bool)> {
    findings.iter().map(|f| (f.version, f.severity, f.status, f.event_count, f.raised)).collect()
}

#[test]
fn a_critical_export_is_published_in_the_batch_that_opened_it_and_again_as_it_doubles() {
    let (mut engine, mut decoder) = (engine("api.bulk_export"), decoder());
    // A busy partition: the export sits among ordinary calls, and its suppression window
    // (an hour) is far from over when the batch ends.
    let mut busy: Vec<String> = (0..500).map(|i| api(T0 + i * 1000, &format!("pos-{}", i % 7), "/packages/v2/active", 3)).collect();
    busy.push(api(T0 + 250_000, "stolen-key", "/packages/v2/export", 48_000));
    let out = step(&mut engine, &mut decoder, &busy);
    assert_eq!(versions(&out), vec![(1, Severity::Critical, Status::Open, 1, true)]);
    let id = out[0].finding_id.clone();
    // Its second export doubles it: version 2. A third is not news yet; the fourth doubles again.
    let exports = |n: i64| vec![api(T0 + 10 * MINUTE + n * MINUTE, "stolen-key", "/packages/v2/export", 48_000)];
    assert_eq!(versions(&step(&mut engine, &mut decoder, &exports(1))), vec![(2, Severity::Critical, Status::Open, 2, false)]);
    assert_eq!(versions(&step(&mut engine, &mut decoder, &exports(2))), vec![]);
    assert_eq!(versions(&step(&mut engine, &mut decoder, &exports(3))), vec![(3, Severity::Critical, Status::Open, 4, false)]);
    assert_eq!(versions(&step(&mut engine, &mut decoder, &exports(4))), vec![]);
    // At the end of input, its last change is its last version; every version is the same finding.
    let mut last = Vec::new();
    engine.flush(&mut last);
    assert_eq!(versions(&last), vec![(4, Severity::Critical, Status::Open, 5, false)]);
    assert_eq!(last[0].finding_id, id);
}

#[test]
fn a_sync_outage_is_one_finding_that_escalates_up_the_ladder_and_resolves_when_syncs_return() {
    let (mut engine, mut decoder) = (engine("sync.lag"), decoder());
    assert_eq!(step(&mut engine, &mut decoder, &[sync(T0, "success")]), vec![]);
    // The integration keeps trying every half hour and every sync fails.
    let mut published = Vec::new();
    for half_hour in 1..=19 {
        let out = step(&mut engine, &mut decoder, &[sync(T0 + half_hour * 30 * MINUTE, "failure")]);
        published.extend(out.into_iter().map(|f| (half_hour, f)));
    }
    let seen: Vec<(i64, i64, Severity, bool)> = published.iter().map(|(h, f)| (*h, f.version, f.severity, f.raised)).collect();
    // CA syncs in real time: past an hour of silence medium, from 4 h high, from 8 h critical.
    assert_eq!(seen, vec![(3, 1, Severity::Medium, true), (8, 2, Severity::High, true), (16, 3, Severity::Critical, true)], "published as it happens, not when it ends");
    assert!(published.iter().all(|(_, f)| f.finding_id == published[0].1.finding_id && f.status == Status::Open));
    let out = step(&mut engine, &mut decoder, &[sync(T0 + 10 * HOUR, "success")]);
    assert_eq!(versions(&out), vec![(4, Severity::Critical, Status::Resolved, 1, false)]);
    assert_eq!(out[0].finding_id, published[0].1.finding_id);
    let mut rest = Vec::new();
    engine.flush(&mut rest);
    assert_eq!(rest, vec![], "a resolved finding is closed");
}


#[test]
fn a_finding_that_grows_after_a_restart_gets_a_new_version_and_people_work_it_in_the_same_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    let exports = |from: i64, n: i64| -> String { (from..from + n).map(|i| api(T0 + i * MINUTE, "stolen-key", "/packages/v2/export", 48_000) + "\n").collect() };
    let run = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        let mut opts = common::run_options(dir.path(), &archive, dir.path());
        (opts.inputs, opts.locations, opts.roster) = (vec![path], None, None);
        seedwatch::pipeline::run(&opts).expect("run")
    };
    // Three exports, then the run ends (the finding is open: its window has 57 minutes left).
    run("first.ndjson", exports(0, 3));
    // After the restart, a fourth inside the same window.
    run("second.ndjson", exports(3, 1));
    let history = query_json(&archive, "SELECT version, event_count, status FROM findings WHERE rule = 'api.bulk_export' ORDER BY version");
    let history: Vec<(i64, i64)> = history.iter().map(|r| (r["version"].as_i64().unwrap_or(-1), r["event_count"].as_i64().unwrap_or(-1))).collect();
    assert_eq!(history, vec![(1, 1), (2, 2), (3, 3), (4, 4)], "the fourth event is version 4, not lost as a duplicate of the first run's last version");

    let id = query_json(&archive, "SELECT finding_id FROM findings_latest WHERE rule = 'api.bulk_export'")[0]["finding_id"].as_str().unwrap_or_default().to_string();
    let a = archive.display().to_string();
    let out = seedwatch(&["findings", "ack", &id, "--archive", &a, "--note", "calling the store manager", "--by", "dana"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("open -> acknowledged by dana"), "{}", text(&out.stdout));
    let out = seedwatch(&["findings", "resolve", &id, "--archive", &a, "--note", "key revoked, Metrc notified", "--by", "dana"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let latest = query_json(&archive, &format!("SELECT version, status, note, changed_by FROM findings_latest WHERE finding_id = '{id}'"));
    assert_eq!(latest, vec![serde_json::json!({"version": 4, "status": "resolved", "note": "key revoked, Metrc notified", "changed_by": "dana"})]);
    let rows = query_json(&archive, &format!("SELECT status FROM findings WHERE finding_id = '{id}' ORDER BY version, updated_at"));
    let statuses: Vec<&str> = rows.iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, vec!["open", "open", "open", "open", "acknowledged", "resolved"], "nothing rewritten: the history is the audit trail");

    // Mistyped or unknown ids are one clear line, and nothing is written.
    let out = seedwatch(&["findings", "ack", "not-an-id", "--archive", &a, "--note", "x", "--by", "dana"]);
    assert!(!out.status.success() && text(&out.stderr).contains("is not a finding id"), "{}", text(&out.stderr));
    let out = seedwatch(&["findings", "ack", "0123456789abcdef", "--archive", &a, "--note", "x", "--by", "dana"]);
    assert!(!out.status.success() && text(&out.stderr).contains("no finding 0123456789abcdef"), "{}", text(&out.stderr));
    assert_eq!(query_json(&archive, &format!("SELECT count(*) AS n FROM findings WHERE finding_id = '{id}'")), vec![serde_json::json!({"n": 6})]);
}
