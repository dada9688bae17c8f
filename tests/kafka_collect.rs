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

    let key = common::keys_init(&dir.path().join("fp.key"));
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
    common::keys_init(&dir.path().join("k"));
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

/// Login lines numbered `from..to`, each with its own user (so each is one event).
fn numbered_lines(from: usize, to: usize) -> String {
    (from..to)
        .map(|n| format!("{{\"family\":\"login\",\"time\":\"2026-11-01T10:{:02}:{:02}Z\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"L1\",\"user\":\"u{n:04}\",\"outcome\":\"success\",\"src_ip\":\"10.0.0.1\"}}\n", n / 60, n % 60))
        .collect()
}

fn append_text(path: &std::path::Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(text.as_bytes())).expect("append");
}

/// (inode, offset) the checkpoint holds for its one file.
fn checkpoint_at(path: &std::path::Path) -> (u64, u64) {
    let v: Value = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    let p = v["files"].as_object().and_then(|f| f.values().next()).cloned().unwrap_or(Value::Null);
    (p["inode"].as_u64().unwrap_or(0), p["offset"].as_u64().unwrap_or(0))
}

/// Wait until the collector has acknowledged all of `live` as it is now.
fn wait_caught_up(checkpoint: &std::path::Path, live: &std::path::Path, log: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let meta = std::fs::metadata(live).expect("live file");
        if checkpoint_at(checkpoint) == (meta.ino(), meta.len()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector did not catch up with {}: {:?} vs {:?}\n{}",
            live.display(),
            checkpoint_at(checkpoint),
            (meta.ino(), meta.len()),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_following_collector_loses_and_repeats_nothing_across_rotation_while_stopped_and_while_kafka_is_stalled() {
    use common::broker::Running;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Broker::start(dir.path(), Storage::Memory);
    let create = seedwatch(&["topics", "create", "--brokers", &tansu.address, "--partitions", "1"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let live = dir.path().join("live.log");
    let checkpoint = dir.path().join("collect.checkpoint");
    let log = dir.path().join("collect.log");
    common::keys_init(&dir.path().join("fp.key"));
    let start = || {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        Running(
            Command::new(env!("CARGO_BIN_EXE_seedwatch"))
                .args(["collect", "file", "--follow", "--input", &live.display().to_string(), "--checkpoint", &checkpoint.display().to_string()])
                .args(["--brokers", &tansu.address, "--fingerprint-key", &dir.path().join("fp.key").display().to_string()])
                .env("RUST_LOG", "info")
                .stdout(Stdio::from(out.try_clone().expect("log")))
                .stderr(Stdio::from(out))
                .spawn()
                .expect("collect --follow"),
        )
    };
    let stop = |mut c: Running| {
        assert!(Command::new("kill").args(["-TERM", &c.0.id().to_string()]).status().expect("kill").success());
        let status = c.0.wait().expect("wait");
        assert!(status.success(), "collect exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    };

    append_text(&live, &numbered_lines(0, 50));
    let collector = start();
    wait_caught_up(&checkpoint, &live, &log);
    stop(collector);

    // 1. While it is stopped: lines are added, the file is renamed away (logrotate's default)
    //    and the new file grows past the old offset. The old file's tail was lost before.
    append_text(&live, &numbered_lines(50, 70));
    std::fs::rename(&live, dir.path().join("live.log.1")).expect("rotate");
    append_text(&live, &numbered_lines(70, 170));
    let collector = start();
    wait_caught_up(&checkpoint, &live, &log);
    stop(collector);

    // 2. While it is stopped: copytruncate, and the file grows past the old offset again
    //    (it was resumed mid-file before).
    append_text(&live, &numbered_lines(170, 190));
    std::fs::copy(&live, dir.path().join("live.log.2")).expect("copy");
    std::fs::write(&live, numbered_lines(190, 400)).expect("truncate");
    let collector = start();
    wait_caught_up(&checkpoint, &live, &log);

    // 3. While Kafka is stalled (the collector waits for its acknowledgement, reading
    //    nothing): lines are added, then copytruncate and more than before.
    tansu.pause();
    append_text(&live, &numbered_lines(400, 420));
    std::thread::sleep(std::time::Duration::from_millis(800));
    std::fs::copy(&live, dir.path().join("live.log.3")).expect("copy");
    std::fs::write(&live, numbered_lines(420, 700)).expect("truncate");
    std::thread::sleep(std::time::Duration::from_secs(2));
    tansu.resume();
    wait_caught_up(&checkpoint, &live, &log);
    stop(collector);

    // Every line reached Kafka once, none was read mid-line.
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let consumed = dir.path().join("consumed.ndjson");
    let out = Command::new(&python)
        .args([common::repo().join("tests/kafka/consume.py").display().to_string(), tansu.address.clone(), "seedwatch".into(), consumed.display().to_string()])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["counts"]["seedwatch.dead_letter"].as_u64(), Some(0), "lines read from the middle: {summary}");
    let mut users: Vec<String> = std::fs::read_to_string(&consumed)
        .expect("consumed")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event")["user"].as_str().unwrap_or_default().to_string())
        .collect();
    users.sort();
    let expected: Vec<String> = (0..700).map(|n| format!("u{n:04}")).collect();
    let doubled = users.windows(2).filter(|w| w[0] == w[1]).count();
    users.dedup();
    let missing: Vec<_> = expected.iter().filter(|u| users.binary_search(u).is_err()).collect();
    assert_eq!((missing.len(), doubled), (0, 0), "missing {missing:?}; {doubled} doubled");
    assert_eq!(users.len(), 700);
}
