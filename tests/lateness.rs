//! Event time, out of order and late: windows span batches in any order within
//! the allowed lateness; older events are archived but not evaluated by window
//! rules, while absence rules still take them as signs of life.

use std::sync::Arc;

use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, Detector, RuleEngine};
use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::{Decoder, Fingerprinter, LineChunk, Redactor, Source};
use seedwatch_schemas::Finding;

fn failure(time: &str, id: &str) -> String {
    format!(r#"{{"time":"{time}","family":"login","system":"metrc","state":"CA","license":"L1","user":"alice","outcome":"failure","src_ip":"203.0.113.5","event_id":"{id}"}}"#)
}

fn success(time: &str) -> String {
    format!(r#"{{"time":"{time}","family":"login","system":"metrc","state":"CA","license":"L1","user":"bob","outcome":"success","src_ip":"203.0.113.6"}}"#)
}

fn sync_ok(time: &str) -> String {
    format!(r#"{{"time":"{time}","family":"sync","system":"metrc","state":"CA","license":"L1","integration":"flowhub","outcome":"success"}}"#)
}

/// Feed each inner list as its own chunk (one batch, then `advance`), like a stream.
fn run(chunks: &[Vec<String>], lateness_ms: i64) -> (Vec<Finding>, u64) {
    run_rule("login.failed_burst", chunks, lateness_ms)
}

fn run_rule(rule: &str, chunks: &[Vec<String>], lateness_ms: i64) -> (Vec<Finding>, u64) {
    let repo = &std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    let rules: Vec<_> = load_rules(&repo.join("rules")).expect("rules").into_iter().filter(|r| r.id == rule).collect();
    assert_eq!(rules.len(), 1, "rule {rule}");
    let reference = Reference::load(&repo.join("rules"), None, None).expect("policy");
    let mut engine = RuleEngine::with_reference(rules, Arc::new(reference)).expect("engine").with_allowed_lateness(lateness_ms);
    let mut decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"lateness-test-secret").expect("fp")));
    let (mut out, mut late) = (Vec::new(), 0);
    for lines in chunks {
        let text = lines.join("\n");
        let mut source = reader_source("chunk", text.as_bytes());
        let mut chunk = LineChunk::new();
        while source.next_chunk(&mut chunk).expect("read") {
            let decoded = decoder.decode_chunk(&chunk, 0).expect("decode");
            for batch in &decoded.events {
                late += engine.process(batch, &mut out).expect("detect").late_events;
            }
            if let Some(w) = decoded.max_event_time() {
                engine.advance(w, &mut out);
            }
        }
    }
    engine.flush(&mut out);
    (out, late)
}

#[test]
fn a_window_spans_batches_that_arrive_out_of_order() {
    let chunks = vec![
        vec![failure("2026-11-05T12:50:00Z", "c"), success("2026-11-05T12:55:00Z")],
        vec![failure("2026-11-05T12:20:00Z", "a")],
        vec![failure("2026-11-05T12:35:00Z", "b")],
    ];
    let (findings, late) = run(&chunks, 3_600_000);
    assert_eq!(late, 0);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!((f.evidence.clone(), f.event_count), (vec!["a".to_string(), "b".to_string(), "c".to_string()], 3));
    assert_eq!(f.window_start, chrono::DateTime::parse_from_rfc3339("2026-11-05T12:20:00Z").map_or(0, |d| d.timestamp_millis()));
}

#[test]
fn events_beyond_the_allowed_lateness_are_counted_not_evaluated() {
    let chunks = vec![
        vec![success("2026-11-05T15:00:00Z")],
        vec![failure("2026-11-05T12:00:00Z", "a"), failure("2026-11-05T12:05:00Z", "b"), failure("2026-11-05T12:10:00Z", "c")],
    ];
    let (findings, late) = run(&chunks, 3_600_000);
    assert_eq!((findings.len(), late), (0, 3), "three hours late with one hour allowed");
    let (findings, late) = run(&chunks, 4 * 3_600_000);
    assert_eq!((findings.len(), late), (1, 0), "within four hours allowed");
}

#[test]
fn late_events_still_show_an_absence_rule_that_their_key_was_alive() {
    // A location's syncs read behind its logins (one topic further behind than another): the
    // login at 16:00 moves the license's time, and the syncs from 10:05 on arrive late.
    let every_five_minutes = |from: u32, to: u32| (from * 12 + 1..to * 12).map(|i| sync_ok(&format!("2026-11-05T{:02}:{:02}:00Z", i / 12, i % 12 * 5))).collect::<Vec<_>>();
    let chunks = vec![vec![sync_ok("2026-11-05T10:00:00Z"), success("2026-11-05T16:00:00Z")], every_five_minutes(10, 16), vec![sync_ok("2026-11-05T16:00:00Z")]];
    let (findings, late) = run_rule("sync.lag", &chunks, 3_600_000);
    assert!(late > 0, "the syncs before 15:00 are late");
    assert_eq!(findings, vec![], "no sync was ever more than five minutes apart");

    // A real gap among late events is still one.
    let chunks = vec![vec![sync_ok("2026-11-05T10:00:00Z"), success("2026-11-05T16:00:00Z")], vec![sync_ok("2026-11-05T14:30:00Z")], vec![sync_ok("2026-11-05T15:00:00Z")]];
    let (findings, _) = run_rule("sync.lag", &chunks, 3_600_000);
    let windows: Vec<(i64, i64)> = findings.iter().map(|f| (f.window_start, f.window_end)).collect();
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp_millis());
    assert_eq!(windows, vec![(at("2026-11-05T10:00:00Z"), at("2026-11-05T14:30:00Z"))], "{findings:?}");
}
