//! The archive's disk fills up mid-run (issue 19). On a 1 MiB tmpfs the test mounts, `run`
//! pauses: it says so in one line and in metrics, stops reading, keeps what it holds, leaves
//! no half file where queries look, and carries on by itself once the disk is larger,
//! archiving every line exactly once and finding what a run on a roomy disk finds.
//!
//! The input is an operator's export, one file per log family, not the generator's one
//! sorted file. Mounting needs root, as the test script's apt installs do; the test fails,
//! not skips, without it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{free_port, sum_of, try_get};
use common::tmpfs::Tmpfs;
use common::{seedwatch, text};

fn finding_ids(archive: &Path) -> BTreeSet<String> {
    common::query_json(archive, "SELECT DISTINCT finding_id FROM findings").iter().filter_map(|r| r["finding_id"].as_str().map(str::to_string)).collect()
}

/// Rows a query over each table sees.
fn rows_archived(archive: &Path) -> u64 {
    ["login", "api", "sync", "audit", "dead_letter"].iter().map(|t| common::query_json(archive, &format!("SELECT count(*) AS n FROM {t}"))[0]["n"].as_u64().unwrap_or(u64::MAX)).sum()
}

/// `events.ndjson` split into one file per family (lines of no known family with the logins).
fn per_family(events: &Path, dir: &Path) -> Vec<PathBuf> {
    let lines: Vec<String> = std::fs::read_to_string(events).expect("input").lines().map(str::to_string).collect();
    let family = |line: &str| {
        let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
        let f = value.as_ref().and_then(|v| v.get("family")).and_then(|f| f.as_str()).unwrap_or("login").to_string();
        if ["api", "sync", "audit"].contains(&f.as_str()) { f } else { "login".to_string() }
    };
    ["login", "api", "sync", "audit"]
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.ndjson"));
            let body: String = lines.iter().filter(|l| family(l) == *name).map(|l| format!("{l}\n")).collect();
            std::fs::write(&path, body).expect("write");
            path
        })
        .collect()
}

/// The metrics of a running command, once they answer.
fn scrape(addr: &str) -> String {
    try_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

/// Wait until `done` holds of the text a child wrote to `log` so far.
fn wait_for_log(child: &mut Child, log: &Path, limit: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let seen = std::fs::read_to_string(log).unwrap_or_default();
        if done(&seen) {
            return seen;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before {what}:\n{seen}");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("no {what} within {limit:?}:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_pauses_the_run_and_it_carries_on_once_there_is_space_archiving_everything_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = seedwatch(&["generate", "--out", &data.display().to_string(), "--days", "21", "--locations", "6"]);
    assert!(out.status.success(), "generate: {}", text(&out.stderr));
    let events = data.join("events.ndjson");
    let lines = std::fs::read_to_string(&events).expect("input").lines().count() as u64;
    let inputs = per_family(&events, dir.path());
    let key = dir.path().join("fp.key").display().to_string();
    let signing = dir.path().join("signing.pem").display().to_string();
    let args = |archive: &Path| -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        for input in &inputs {
            args.extend(["--input".into(), input.display().to_string()]);
        }
        let rest = [
            "--archive", &archive.display().to_string(), "--locations", &data.join("locations.csv").display().to_string(),
            "--roster", &data.join("roster.csv").display().to_string(), "--fingerprint-key", &key, "--signing-key", &signing, "--quiet",
        ]
        .map(str::to_string);
        args.extend(rest);
        args
    };

    // The archive of a roomy disk, to compare with.
    let roomy = dir.path().join("roomy");
    let out = Command::new(env!("CARGO_BIN_EXE_seedwatch")).args(args(&roomy)).output().expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // 1 MiB: the archive of this input needs about 3.
    let disk = Tmpfs::mount(&dir.path().join("disk"), "1m");
    let archive = disk.0.join("archive");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("run.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(args(&archive))
        .args(["--metrics-addr", &addr, "--hold"])
        .stdout(Stdio::from(log_file.try_clone().expect("log")))
        .stderr(log_file)
        .spawn()
        .expect("spawn run");
    let paused_line = "the archive's disk is full: paused";
    let seen = wait_for_log(&mut child, &log, Duration::from_secs(180), "pause", |log| log.contains(paused_line));
    // One line says so, and the metrics.
    assert_eq!(seen.lines().filter(|l| l.contains(paused_line)).count(), 1, "{seen}");
    let metrics = scrape(&addr);
    assert_eq!(sum_of(&metrics, "seedwatch_archive_paused", &[]), 1.0, "{metrics}");
    assert_eq!(sum_of(&metrics, "seedwatch_archive_write_failures_total", &["reason=\"disk_full\""]), 1.0, "{metrics}");
    // Paused, not stopped: it reads no further while it waits (its counts stand still).
    let read = |m: &str| sum_of(m, "seedwatch_bytes_in_total", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let (before, after) = (read(&metrics), read(&scrape(&addr)));
    assert!(child.try_wait().expect("try_wait").is_none(), "the run stopped: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(before, after, "it went on reading while paused");
    // What queries see is whole: every table reads, and holds less than the input.
    let partial = rows_archived(&archive);
    assert!(partial < lines, "{partial} rows archived of {lines} on a full disk");

    // Space returns: the run carries on by itself, nothing lost or doubled.
    disk.resize("300m");
    let seen = wait_for_log(&mut child, &log, Duration::from_secs(300), "the end of the input", |log| log.contains("holding: serving"));
    let metrics = scrape(&addr);
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("the archive has space again: resumed"), "{seen}");
    assert_eq!(sum_of(&metrics, "seedwatch_archive_paused", &[]), 0.0, "{metrics}");
    assert_eq!(sum_of(&metrics, "seedwatch_archive_write_failures_total", &["reason=\"disk_full\""]), 1.0, "one pause, counted once: {metrics}");
    assert!(!seen.lines().any(|l| l.starts_with("error:")), "{seen}");
    let mut archived = 0;
    for table in ["login", "api", "sync", "audit"] {
        let row = &common::query_json(&archive, &format!("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM {table}"))[0];
        assert_eq!(row["n"], row["ids"], "{table}: an event archived twice");
        archived += row["n"].as_u64().unwrap_or(0);
    }
    archived += common::query_json(&archive, "SELECT count(*) AS n FROM dead_letter")[0]["n"].as_u64().unwrap_or(0);
    assert_eq!(archived, lines, "every line once, as an event or a dead letter");
    assert_eq!(finding_ids(&archive), finding_ids(&roomy), "the findings differ from a run with room");
    // No file of its own left behind: nothing staged, and verify finds every file as recorded.
    let staged: Vec<PathBuf> = common::files_under(&archive.join("_tmp")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    assert!(staged.is_empty(), "{staged:?}");
    let out = seedwatch(&["archive", "verify", "--archive", &archive.display().to_string(), "--signing-key", &signing]);
    assert!(out.status.success(), "verify: {}{}", text(&out.stdout), text(&out.stderr));
}
