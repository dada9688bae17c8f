//! Collectors against a real Kafka-protocol broker: tansu (from crates.io,
//! installed by scripts/test.sh) started on loopback, seedwatch producing, and
//! kafka-python (an independent client, from PyPI) reading the topics back.
//! Without tansu or kafka-python this test fails rather than skips.

mod common;

use std::process::Command;

use common::broker::{Broker, Storage};
use common::http::free_port;

use common::{seedwatch, text};
use seedwatch::generate::generate;
use seedwatch::pipeline::run;
use seedwatch::truth::score;
use serde_json::Value;

#[test]
fn collected_lines_reach_kafka_validated_redacted_keyed_and_detectable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let truth = generate(&data, &common::options(21, 6, 42)).expect("generate");
    let tansu = Broker::start(dir.path(), Storage::Memory);
    let broker = tansu.address.clone();

    let create = seedwatch(&["topics", "create", "--brokers", &broker, "--partitions", "2"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    assert_eq!(text(&create.stdout).lines().filter(|l| l.starts_with("created")).count(), 6, "{}", text(&create.stdout));
    let again = seedwatch(&["topics", "create", "--brokers", &broker]);
    assert_eq!(text(&again.stdout).lines().filter(|l| l.starts_with("exists")).count(), 6, "{}", text(&again.stdout));

    let key = dir.path().join("fp.key");
    let events = data.join("events.ndjson");
    let collect = seedwatch(&["collect", "file", "--input", &events.display().to_string(), "--brokers", &broker, "--fingerprint-key", &key.display().to_string()]);
    assert!(collect.status.success(), "{}", text(&collect.stderr));
    let produced = truth.events + truth.bad_lines;
    let said = text(&collect.stdout);
    let acknowledged: Option<u64> = said.split("(acknowledged: ").nth(1).and_then(|r| r.split(')').next()).and_then(|n| n.replace(',', "").parse().ok());
    assert_eq!(acknowledged, Some(produced), "{said}");

    // An independent client reads it all back.
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let consumed = dir.path().join("consumed.ndjson");
    let mut args = vec![common::repo().join("tests/kafka/consume.py").display().to_string(), broker.clone(), "seedwatch".into(), consumed.display().to_string()];
    args.extend(truth.raw_keys.iter().cloned());
    let out = Command::new(&python).args(&args).output().unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(out.status.success(), "kafka-python (./scripts/test.sh installs it): {}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let counts = &summary["counts"];
    let event_messages: u64 = ["login", "api", "sync", "audit"].iter().map(|f| counts[format!("seedwatch.{f}")].as_u64().unwrap_or(0)).sum();
    assert_eq!(event_messages, truth.events, "{summary}");
    assert_eq!(counts["seedwatch.dead_letter"].as_u64(), Some(truth.bad_lines), "{summary}");
    assert_eq!(summary["bad_keys"], 0, "messages not keyed by their license: {summary}");
    assert_eq!(summary["raw_key_hits"], 0, "a raw credential reached Kafka: {summary}");
    assert!(!truth.raw_keys.is_empty());

    // The collector stamped each event with the id the file position gives it (the
    // generator's lines carry none): a resent chunk is the same events downstream.
    let stamped = std::fs::read_to_string(&consumed).expect("consumed").lines().filter(|l| l.contains("\"family\"")).filter(|l| l.starts_with("{\"event_id\":\"")).count();
    assert_eq!(stamped as u64, truth.events, "events without a stamped id");

    // What went through Kafka detects like the file itself: every incident, no look-alike.
    let mut opts = common::run_options(&data, &dir.path().join("archive"), dir.path());
    opts.inputs = vec![consumed];
    let report = run(&opts).expect("run over the consumed lines");
    // ... and archives the same events, by id, as reading the file directly.
    let direct = run(&common::run_options(&data, &dir.path().join("direct"), dir.path())).expect("run over the file");
    let ids = |archive: &std::path::Path| {
        ["login", "api", "sync", "audit"]
            .map(|t| common::query_json(archive, &format!("SELECT count(*) AS n, count(DISTINCT event_id) AS d, min(event_id) AS lo, max(event_id) AS hi FROM {t}")))
    };
    assert_eq!(ids(&dir.path().join("archive")), ids(&dir.path().join("direct")));
    assert_eq!(direct.findings.len(), report.findings.len());
    let loaded: std::collections::HashSet<String> =
        seedwatch_detect::load_rules(&common::repo().join("rules")).expect("rules").into_iter().map(|r| r.id).collect();
    let s = score(&truth, &report.findings, &loaded);
    assert!(s.missed.is_empty(), "missed after Kafka: {:?}", s.missed.iter().map(|e| &e.id).collect::<Vec<_>>());
    assert!(s.lookalike_hits.is_empty(), "{:?}", s.lookalike_hits);
    assert!(s.unexpected.is_empty(), "{:?}", s.unexpected.iter().map(|f| &f.rule).collect::<Vec<_>>());
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let file = dir.path().join("one.ndjson");
    std::fs::write(&file, "{\"family\":\"login\",\"time\":\"2026-11-01T10:00:00Z\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"L\",\"user\":\"u\",\"outcome\":\"success\"}\n").expect("write");
    let out = seedwatch(&[
        "collect", "file", "--input", &file.display().to_string(), "--brokers", &format!("127.0.0.1:{port}"),
        "--fingerprint-key", &dir.path().join("k").display().to_string(), "--kafka-setting", "message.timeout.ms=3000",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    // librdkafka's own connection errors are logged on the way; the run ends with one clear line.
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: producing to seedwatch.") && last.contains("timed out"), "{err}");
}
