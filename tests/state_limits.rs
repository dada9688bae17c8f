//! A detector's memory is bounded whatever a sender makes up (issue 19): keys per rule and
//! values per key have limits (`limits:` in policy.yaml) at which the entries idle longest
//! are forgotten, counted, and reported by a `seedwatch.state_limit` finding; keys that aged
//! out are swept. Each test feeds what used to grow without end.

use std::sync::Arc;

use seedwatch_detect::limits::StateLimits;
use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, Detector, RuleEngine};
use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::{Decoder, Fingerprinter, LineChunk, Redactor, Source};
use seedwatch_schemas::Finding;

const DAY_MS: i64 = 86_400_000;
/// 2026-11-02T00:00:00Z.
const T0: i64 = 1_793_577_600_000;

fn at(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
}

fn login(ms: i64, user: &str, outcome: &str, ip: &str) -> String {
    format!(r#"{{"time":"{}","family":"login","system":"metrc","state":"CA","license":"L1","user":"{user}","outcome":"{outcome}","src_ip":"{ip}"}}"#, at(ms))
}

fn sync_ok(ms: i64, integration: &str) -> String {
    format!(r#"{{"time":"{}","family":"sync","system":"metrc","state":"CO","license":"L1","integration":"{integration}","outcome":"success"}}"#, at(ms))
}

struct Run {
    engine: RuleEngine,
    decoder: Decoder,
    findings: Vec<Finding>,
    evicted: u64,
}

impl Run {
    fn new(rule: &str, limits: StateLimits) -> Self {
        let repo = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
        let rules: Vec<_> = load_rules(&repo.join("rules")).expect("rules").into_iter().filter(|r| r.id == rule).collect();
        assert_eq!(rules.len(), 1, "rule {rule}");
        let mut reference = Reference::load(&repo.join("rules"), None, None).expect("policy");
        reference.policy = reference.policy.with_limits(limits);
        let engine = RuleEngine::with_reference(rules, Arc::new(reference)).expect("engine");
        let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"state-limits-test-secret").expect("fp")));
        Self { engine, decoder, findings: Vec::new(), evicted: 0 }
    }

    /// One chunk of lines: one batch per family, then the watermark.
    fn feed(&mut self, lines: &[String]) {
        let text = lines.join("\n");
        let mut source = reader_source("chunk", text.as_bytes());
        let mut chunk = LineChunk::new();
        while source.next_chunk(&mut chunk).expect("read") {
            let decoded = self.decoder.decode_chunk(&chunk, 0).expect("decode");
            assert!(decoded.dead_letters.is_none(), "a test line did not decode");
            for batch in &decoded.events {
                let stats = self.engine.process(batch, &mut self.findings).expect("detect");
                self.evicted += stats.evicted.iter().map(|e| e.entries).sum::<u64>();
            }
            if let Some(w) = decoded.max_event_time() {
                self.engine.advance(w, &mut self.findings);
            }
        }
    }

    /// The newest version of each finding of `rule`.
    fn of_rule(&self, rule: &str) -> Vec<Finding> {
        seedwatch_schemas::finding::latest_versions(&self.findings).into_iter().filter(|f| f.rule == rule).collect()
    }
}

fn limits(max_keys: usize, max_values: usize) -> StateLimits {
    StateLimits { max_keys_per_rule: max_keys, max_values_per_key: max_values, ..StateLimits::default() }
}

#[test]
fn made_up_users_cannot_grow_a_rule_past_its_key_limit_and_the_limit_is_reported() {
    let mut run = Run::new("login.failed_burst", limits(100, 1_000));
    let mut n = 0;
    for chunk in 0..20 {
        let lines: Vec<String> = (0..500)
            .map(|i| {
                n += 1;
                login(T0 + n, &format!("made-up-{chunk}-{i}"), "failure", "203.0.113.5")
            })
            .collect();
        run.feed(&lines);
        assert!(run.engine.tracked_keys() <= 100, "chunk {chunk}: {} keys tracked", run.engine.tracked_keys());
    }
    // A real burst still fires after the flood.
    run.feed(&(1..=3).map(|i| login(T0 + 20_000 + i, "alice", "failure", "203.0.113.9")).collect::<Vec<_>>());
    assert_eq!(run.of_rule("login.failed_burst").iter().map(|f| f.subject.as_str()).collect::<Vec<_>>(), ["alice"]);
    assert!(run.evicted >= 9_900, "{} evicted", run.evicted);
    let reported = run.of_rule(seedwatch_detect::engine::STATE_LIMIT_RULE);
    assert_eq!(reported.len(), 1, "one finding per rule and day: {reported:?}");
    assert_eq!(reported[0].subject, "login.failed_burst");
    let details: serde_json::Value = serde_json::from_str(&reported[0].details).expect("details");
    assert_eq!(details["max_keys_per_rule"], 100);
    assert!(details["evicted"].as_u64().is_some_and(|n| n > 0), "{details}");
}

#[test]
fn a_key_sent_endless_distinct_values_holds_a_bounded_window_and_still_fires() {
    // 5,000 addresses for one account inside ten minutes: each event used to scan all the
    // values before it (12.5 M comparisons here, 10^12 for a million).
    let lines: Vec<String> = (0..5_000).map(|i| login(T0 + i * 100, "mallory", "success", &format!("10.0.{}.{}", i / 250, i % 250))).collect();
    let mut bounded = Run::new("login.shared_account", limits(1_000, 50));
    for chunk in lines.chunks(500) {
        bounded.feed(chunk);
    }
    assert_eq!(bounded.of_rule("login.shared_account").len(), 1, "{:?}", bounded.findings);
    assert!(bounded.evicted >= 4_900, "{} evicted", bounded.evicted);
    assert_eq!(bounded.of_rule(seedwatch_detect::engine::STATE_LIMIT_RULE).len(), 1);
    // Under the default limits nothing is forgotten, and nothing is reported.
    let mut unbounded = Run::new("login.shared_account", StateLimits::default());
    for chunk in lines.chunks(500) {
        unbounded.feed(chunk);
    }
    assert_eq!((unbounded.evicted, unbounded.of_rule(seedwatch_detect::engine::STATE_LIMIT_RULE).len()), (0, 0));
    assert_eq!(unbounded.of_rule("login.shared_account").len(), 1);
}

#[test]
fn seen_values_older_than_the_history_are_swept_with_their_keys() {
    let mut run = Run::new("login.new_ip", StateLimits::default());
    run.feed(&[login(T0, "gone", "success", "203.0.113.1")]);
    assert_eq!(run.engine.tracked_keys(), 1);
    // A hundred days later (past the rule's 90-day history), someone else logs in, batch after batch.
    for i in 0..70 {
        run.feed(&[login(T0 + 100 * DAY_MS + i * 60_000, "here", "success", "203.0.113.2")]);
    }
    assert_eq!(run.engine.tracked_keys(), 1, "the key whose sightings aged out is still tracked");
    assert_eq!(run.evicted, 0, "aging out is not a limit");
}

#[test]
fn a_made_up_integration_is_forgotten_once_idle_past_the_limit() {
    let mut run = Run::new("sync.lag", StateLimits { forget_idle_after_ms: 2 * DAY_MS, ..StateLimits::default() });
    run.feed(&[sync_ok(T0, "x-made-up-7f3a"), sync_ok(T0, "flowhub")]);
    assert_eq!(run.engine.tracked_keys(), 2);
    for i in 0..70 {
        run.feed(&[sync_ok(T0 + 3 * DAY_MS + i * 600_000, "flowhub")]);
    }
    assert_eq!(run.engine.tracked_keys(), 1, "a key silent for three days is still tracked with a two-day limit");
}

#[test]
fn made_up_licenses_are_retired_from_the_event_clock() {
    let mut run = Run::new("login.failed_burst", limits(100, 1_000));
    for batch in 0..40 {
        let lines: Vec<String> = (0..50)
            .map(|i| login(T0 + batch * 1_000 + i, "alice", "success", "203.0.113.5").replace("\"license\":\"L1\"", &format!("\"license\":\"made-up-{batch}-{i}\"")))
            .collect();
        run.feed(&lines);
        // No key refers to them (successes match no rule here): at most the cap and one batch.
        assert!(run.engine.tracked_licenses() <= 150, "batch {batch}: {} licenses tracked", run.engine.tracked_licenses());
    }
    // A real burst at a real license still fires.
    run.feed(&(1..=3).map(|i| login(T0 + 60_000 + i, "bob", "failure", "203.0.113.9")).collect::<Vec<_>>());
    assert_eq!(run.of_rule("login.failed_burst").len(), 1);
}
