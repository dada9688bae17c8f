//! The Kafka deployment end to end, against a real broker (tansu) and an
//! independent client (kafka-python): collectors → Kafka → detectors in one
//! consumer group → one shared archive. What it archives and finds must equal
//! the embedded pipeline's run over the same file, with every event archived
//! exactly once, also when a detector is killed, the broker restarts and a
//! collector is killed mid-file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, Running, Storage};
use common::http::{free_port, sum_of, try_get};
use common::{seedwatch, text};
use seedwatch::generate::generate;
use seedwatch::pipeline::{block_on, run};
use seedwatch_schemas::arrow::array::{Array, AsArray};
use seedwatch_schemas::arrow::datatypes::Int64Type;
use serde_json::Value;

/// What an archive holds, as the tests compare it.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    /// (family, rows, distinct event ids).
    events: Vec<(String, i64, i64)>,
    dead_letters: i64,
    finding_ids: BTreeSet<String>,
    /// Rows of the findings table, and distinct (finding, version, status): one row per version.
    finding_rows: i64,
    finding_versions: i64,
}

impl Contents {
    /// No event and no finding version archived twice.
    fn assert_each_once(&self) {
        for (family, rows, distinct) in &self.events {
            assert_eq!(rows, distinct, "{family}: an event archived twice");
        }
        assert_eq!(self.finding_rows, self.finding_versions, "a finding version archived twice");
    }
}

fn contents(archive: &Path) -> Contents {
    block_on(async {
        let ctx = seedwatch_archive::open_session(archive).await?;
        let mut events = Vec::new();
        for family in ["login", "api", "sync", "audit"] {
            let batches = seedwatch_archive::query::run_query(&ctx, &format!("SELECT count(*), count(DISTINCT event_id) FROM {family}")).await?;
            let (rows, distinct) = batches.first().map_or((0, 0), |b| (b.column(0).as_primitive::<Int64Type>().value(0), b.column(1).as_primitive::<Int64Type>().value(0)));
            events.push((family.to_string(), rows, distinct));
        }
        let count = |batches: Vec<seedwatch_schemas::arrow::array::RecordBatch>| batches.first().map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
        let dead_letters = count(seedwatch_archive::query::run_query(&ctx, "SELECT count(*) FROM dead_letter").await?);
        let finding_rows = count(seedwatch_archive::query::run_query(&ctx, "SELECT count(*) FROM findings").await?);
        let finding_versions = count(seedwatch_archive::query::run_query(&ctx, "SELECT count(*) FROM (SELECT DISTINCT finding_id, version, status FROM findings)").await?);
        let mut finding_ids = BTreeSet::new();
        for b in seedwatch_archive::query::run_query(&ctx, "SELECT finding_id FROM findings").await? {
            let ids = seedwatch_schemas::arrow::compute::cast(b.column(0), &seedwatch_schemas::arrow::datatypes::DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            finding_ids.extend((0..ids.len()).map(|i| ids.value(i).to_string()));
        }
        Ok(Contents { events, dead_letters, finding_ids, finding_rows, finding_versions })
    })
    .expect("reading the archive")
}

/// The embedded pipeline's archive of the whole file: what the Kafka path must reproduce.
fn embedded(data: &Path, dir: &Path) -> Contents {
    let archive = dir.join("embedded-archive");
    run(&common::run_options(data, &archive, dir)).expect("embedded run");
    contents(&archive)
}

/// The embedded run's archive of one piece of the data.
fn embedded_part(part: &Path, data: &Path, dir: &Path) -> Contents {
    let archive = dir.join(format!("embedded-{}", part.file_stem().and_then(|s| s.to_str()).unwrap_or("part")));
    let mut opts = common::run_options(data, &archive, dir);
    opts.inputs = vec![part.to_path_buf()];
    run(&opts).expect("embedded run of a part");
    contents(&archive)
}

struct Deployment {
    dir: PathBuf,
    data: PathBuf,
    broker: String,
    archive: PathBuf,
}

impl Deployment {
    fn key(&self) -> String {
        // Collectors and detectors share the fingerprint secret, so fingerprints agree.
        self.dir.join("fingerprint.key").display().to_string()
    }

    fn signing_key(&self) -> String {
        self.dir.join("archive-signing.pem").display().to_string()
    }

    /// Every detector's commits are in the manifest, chained and signed, and every file is
    /// as recorded: concurrent writers, a killed one, restarts.
    fn assert_verifies(&self) {
        let out = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["archive", "verify", "--archive", &self.archive.display().to_string(), "--signing-key", &self.signing_key()])
            .output()
            .expect("seedwatch archive verify");
        assert!(out.status.success(), "archive verify: {}{}", text(&out.stdout), text(&out.stderr));
    }

    fn detector(&self, name: &str, extra: &[&str]) -> Running {
        self.detector_with_env(name, extra, &[])
    }

    /// A detector with extra environment variables (the test hooks).
    fn detector_with_env(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["detect", "--brokers", &self.broker, "--archive", &self.archive.display().to_string(), "--fingerprint-key", &self.key(), "--quiet", "--log-level", "info,seedwatch::kafka_source=debug"])
            // Settings in `extra` come later and win.
            .args(["--kafka-setting", "max.poll.interval.ms=20000", "--signing-key", &self.signing_key()])
            .args(if extra.contains(&"--commit-interval") { &[][..] } else { &["--commit-interval", "1s"][..] })
            .args(extra)
            .args(["--rules", &common::repo().join("rules").display().to_string()])
            .args(["--locations", &self.data.join("locations.csv").display().to_string(), "--roster", &self.data.join("roster.csv").display().to_string()])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .envs(env.iter().copied())
            .spawn()
            .expect("starting seedwatch detect");
        Running(child)
    }

    fn collect(&self, input: &Path, extra: &[&str]) {
        let input = input.display().to_string();
        let key = self.key();
        let mut args = vec!["collect", "file", "--input", &input, "--brokers", &self.broker, "--fingerprint-key", &key];
        args.extend_from_slice(extra);
        let out = seedwatch(&args);
        assert!(out.status.success(), "collect: {}", text(&out.stderr));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Wait until the archive holds what `expected` holds (or fail after `limit`).
    fn wait_for(&self, expected: &Contents, limit: Duration, logs: &[&str], detectors: &mut [&mut Running]) -> Contents {
        self.wait_until_archived(expected, true, limit, logs, detectors)
    }

    /// Messages the broker holds per family topic partition (`seedwatch.login/0`: n), read by
    /// kafka-python; else what it said.
    fn end_offsets(&self) -> Result<BTreeMap<String, i64>, String> {
        let out = Command::new(python()).args([common::repo().join("tests/kafka/end_offsets.py").display().to_string(), self.broker.clone(), "seedwatch".into()]).output().expect("python");
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out.stderr)))
    }

    /// Per topic partition, the messages the broker holds against the offsets archived (as
    /// events or dead letters), where they differ: tells rows that never reached the broker
    /// from rows no detector archived, and where the gap is.
    fn partition_report(&self) -> String {
        let ends = match self.end_offsets() {
            Ok(ends) => ends,
            Err(why) => return format!("(no end offsets: {why})"),
        };
        let mut archived: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for table in ["login", "api", "sync", "audit", "dead_letter"] {
            let sql = format!("SELECT source, count(DISTINCT line) AS offsets, max(line) AS last FROM {table} GROUP BY source");
            let rows: Value = serde_json::from_slice(&seedwatch(&["query", "--archive", &self.archive.display().to_string(), "--format", "json", &sql]).stdout).unwrap_or(Value::Null);
            for row in rows.as_array().into_iter().flatten() {
                let entry = archived.entry(row["source"].as_str().unwrap_or("?").to_string()).or_insert((0, -1));
                entry.0 += row["offsets"].as_i64().unwrap_or(0);
                entry.1 = entry.1.max(row["last"].as_i64().unwrap_or(-1));
            }
        }
        let differ: Vec<String> = ends
            .iter()
            .filter_map(|(source, end)| {
                let (offsets, last) = archived.get(source).copied().unwrap_or((0, -1));
                (offsets != *end).then(|| format!("{source}: broker {end}, archived {offsets} (last offset {last})"))
            })
            .collect();
        format!("partitions where the archive differs from the broker: {differ:?}")
    }

    /// Wait until the archive holds `expected`'s events (and, with `findings`, its findings and dead letters).
    fn wait_until_archived(&self, expected: &Contents, findings: bool, limit: Duration, logs: &[&str], detectors: &mut [&mut Running]) -> Contents {
        let deadline = Instant::now() + limit;
        loop {
            for (i, detector) in detectors.iter_mut().enumerate() {
                if let Ok(Some(status)) = detector.0.try_wait() {
                    let logs: Vec<String> = logs.iter().map(|l| format!("--- {l}\n{}", self.log(l))).collect();
                    panic!("detector {i} exited with {status}:\n{}", logs.join("\n"));
                }
            }
            let got = if self.archive.is_dir() { Some(contents(&self.archive)) } else { None };
            if got.as_ref().is_some_and(|g| g.events == expected.events && (!findings || (g.finding_ids == expected.finding_ids && g.dead_letters == expected.dead_letters))) {
                return got.expect("checked");
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = logs.iter().map(|l| format!("--- {l}\n{}", self.log(l))).collect();
                let got = got.map(|g| {
                    let missing: Vec<_> = expected.finding_ids.difference(&g.finding_ids).collect();
                    let extra: Vec<_> = g.finding_ids.difference(&expected.finding_ids).collect();
                    // The extra findings in full: which rule, key and window, to tell why.
                    let ids = extra.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
                    let rows = if ids.is_empty() {
                        String::new()
                    } else {
                        let sql = format!("SELECT finding_id, rule, severity, license, subject, window_start, window_end, event_count, details FROM findings WHERE finding_id IN ({ids})");
                        text(&seedwatch(&["query", "--archive", &self.archive.display().to_string(), "--format", "json", &sql]).stdout)
                    };
                    format!("events {:?} (want {:?}), dead letters {} (want {}), findings missing {missing:?}, extra {extra:?} {rows}", g.events, expected.events, g.dead_letters, expected.dead_letters)
                });
                panic!("the archive did not converge: {got:?}\n{}\n{}", self.partition_report(), logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn stop(mut detector: Running) {
    let pid = detector.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let exit = detector.0.wait().expect("wait");
    assert!(exit.success(), "detector exited with {exit}");
}

fn kill_9(mut process: Running) {
    let _ = process.0.kill();
    let _ = process.0.wait();
}

/// Split `file` into pieces at the given fractions of its lines.
fn split(file: &Path, fractions: &[f64], dir: &Path) -> Vec<PathBuf> {
    let all = std::fs::read_to_string(file).expect("read");
    let lines: Vec<&str> = all.lines().collect();
    let mut cuts: Vec<usize> = fractions.iter().map(|f| (lines.len() as f64 * f) as usize).collect();
    cuts.insert(0, 0);
    cuts.push(lines.len());
    cuts.windows(2)
        .enumerate()
        .map(|(i, w)| {
            let path = dir.join(format!("part{i}.ndjson"));
            let mut f = std::fs::File::create(&path).expect("create");
            for line in &lines[w[0]..w[1]] {
                writeln!(f, "{line}").expect("write");
            }
            path
        })
        .collect()
}

fn python() -> String {
    std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn setup(storage: Storage) -> (tempfile::TempDir, Broker, Deployment, Contents) {
    setup_with(storage, 4, 6)
}

/// The generator's 21 days at `locations` locations, their embedded run, a broker and topics of
/// `partitions` partitions.
fn setup_with(storage: Storage, partitions: u32, locations: usize) -> (tempfile::TempDir, Broker, Deployment, Contents) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    generate(&data, &common::options(21, locations, 42)).expect("generate");
    let expected = embedded(&data, dir.path());
    let broker = Broker::start(dir.path(), storage);
    let create = seedwatch(&["topics", "create", "--brokers", &broker.address, "--partitions", &partitions.to_string()]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let deployment = Deployment { dir: dir.path().to_path_buf(), data, broker: broker.address.clone(), archive: dir.path().join("archive") };
    common::keys_init(&dir.path().join("fingerprint.key"));
    (dir, broker, deployment, expected)
}

#[test]
fn two_detectors_in_one_group_archive_every_event_once_and_find_what_the_embedded_run_finds() {
    let (dir, _broker, d, expected) = setup(Storage::Memory);
    assert!(expected.finding_ids.len() >= 20, "the data set has incidents: {expected:?}");
    let parts = split(&d.data.join("events.ndjson"), &[0.5], dir.path());

    // The first half through seedwatch's collector, before any detector runs.
    d.collect(&parts[0], &[]);
    let a = d.detector("a", &[]);
    let b = d.detector("b", &[]);
    // The second half from kafka-python, keyed by license with its own (Java) partitioner:
    // a license must land where seedwatch's producer puts it, or its state would be split.
    let out = Command::new(python()).args([common::repo().join("tests/kafka/produce.py").display().to_string(), d.broker.clone(), "seedwatch".into(), parts[1].display().to_string()]).output().expect("python");
    assert!(out.status.success(), "kafka-python (./scripts/test.sh installs it): {}", text(&out.stderr));

    let (mut a, mut b) = (a, b);
    let got = d.wait_for(&expected, Duration::from_secs(180), &["a", "b"], &mut [&mut a, &mut b]);
    got.assert_each_once();
    // Both members did part of the work.
    for name in ["a", "b"] {
        assert!(d.log(name).contains("partition assigned"), "{name} never owned a partition: {}", d.log(name));
    }
    stop(a);
    stop(b);
    assert_nothing_more_after_the_stop(&d.archive, &got);
    d.assert_verifies();

    // kafka-python reads the findings topic: every finding, keyed by license.
    let out = Command::new(python()).args([common::repo().join("tests/kafka/findings.py").display().to_string(), d.broker.clone(), "seedwatch".into()]).output().expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let topic: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let ids: BTreeSet<String> = topic["ids"].as_array().expect("ids").iter().filter_map(|v| v.as_str().map(String::from)).collect();
    assert_eq!(ids, expected.finding_ids, "findings topic");
    assert_eq!(topic["bad_keys"], 0, "{topic}");
}

/// Scale-out on one machine (issue 21): 16 locations over topics of 8 partitions (every one
/// holding data), read by one detector, then four (three join while the second third of the
/// data is produced), then two (two leave while the last third is produced). Every member of
/// each phase owns partitions; the archive holds every event once and exactly the findings of
/// the embedded run of the whole file.
#[test]
fn one_then_four_then_two_detectors_over_eight_partitions_find_what_one_run_finds_and_archive_once() {
    let (dir, _broker, d, expected) = setup_with(Storage::Memory, 8, 16);
    let parts = split(&d.data.join("events.ndjson"), &[1.0 / 3.0, 2.0 / 3.0], dir.path());
    let first_two = dir.path().join("first-two-thirds.ndjson");
    append(&first_two, &parts[0]);
    append(&first_two, &parts[1]);
    let owns_partitions = |name: &str| d.log(name).contains("partition assigned");

    // One detector over all eight partitions.
    d.collect(&parts[0], &[]);
    let mut a = d.detector("a", &[]);
    let part0 = embedded_part(&parts[0], &d.data, dir.path());
    d.wait_until_archived(&part0, false, Duration::from_secs(120), &["a"], &mut [&mut a]);

    // Three join while the second third is produced: four members, two partitions each.
    let (mut b, mut c, mut e) = (d.detector("b", &[]), d.detector("c", &[]), d.detector("e", &[]));
    d.collect(&parts[1], &[]);
    wait_until("b, c and e to own partitions", Duration::from_secs(120), || ["b", "c", "e"].iter().all(|n| owns_partitions(n)));
    let first_two = embedded_part(&first_two, &d.data, dir.path());
    d.wait_until_archived(&first_two, false, Duration::from_secs(180), &["a", "b", "c", "e"], &mut [&mut a, &mut b, &mut c, &mut e]);
    let a_rebalances = d.log("a").matches("consumer group rebalanced").count();

    // Two leave while the last third is produced; a and b take their partitions over.
    std::thread::scope(|s| {
        let collecting = s.spawn(|| d.collect(&parts[2], &[]));
        stop(c);
        stop(e);
        collecting.join().expect("collect of the last third");
    });
    let got = d.wait_for(&expected, Duration::from_secs(240), &["a", "b", "c", "e"], &mut [&mut a, &mut b]);
    assert!(d.log("a").matches("consumer group rebalanced").count() > a_rebalances, "a saw the group shrink:\n{}", d.log("a"));
    got.assert_each_once();
    // Licenses spread over all eight partitions, so each member of four had work to do.
    let ends = d.end_offsets().unwrap_or_else(|why| panic!("{why}"));
    let login: Vec<i64> = (0..8).map(|p| ends.get(&format!("seedwatch.login/{p}")).copied().unwrap_or(0)).collect();
    assert!(login.iter().all(|&n| n > 0), "login messages per partition: {login:?}");
    stop(a);
    stop(b);
    assert_nothing_more_after_the_stop(&d.archive, &got);
    d.assert_verifies();
}

#[test]
fn partitions_taken_away_and_given_back_are_read_again_from_their_committed_offsets() {
    let (_dir, _broker, d, expected, second_half, metrics) = first_half_collected();
    // `a` reads the first half and commits nothing yet: what it read is only in its memory.
    let mut a = d.detector("a", &["--commit-interval", "1h", "--metrics-addr", &metrics]);
    let first = decoded_once_settled(&metrics, 0.0, &mut a);
    // `b` joins: `a` loses every partition and gets half of them back. Those it had read must be
    // read again from their committed offsets (a client left to itself resumes a paused partition
    // where it last read, past everything `a` dropped with the old assignment).
    let mut b = d.detector("b", &[]);
    wait_until("the new assignment", Duration::from_secs(60), || {
        d.log("a").contains("consumer group rebalanced partitions=2") && d.log("b").contains("consumer group rebalanced partitions=2")
    });
    d.collect(&second_half, &[]);
    decoded_once_settled(&metrics, first, &mut a);
    // `a` stops: it archives and commits what it read since it got its partitions back.
    stop(a);
    let got = d.wait_for(&expected, Duration::from_secs(120), &["a", "b"], &mut [&mut b]);
    for (family, rows, distinct) in &got.events {
        assert_eq!(rows, distinct, "{family}: an event archived twice");
    }
    stop(b);
}

#[test]
fn a_consumer_that_resumes_past_its_committed_offsets_is_sent_back() {
    let (_dir, _broker, d, expected, second_half, metrics) = first_half_collected();
    // `a` reads and commits the first half, and stops.
    let mut a = d.detector("a", &["--metrics-addr", &metrics]);
    decoded_once_settled(&metrics, 0.0, &mut a);
    stop(a);
    d.collect(&second_half, &[]);
    // `b` seeks 7 messages past every committed offset: into the middle of a producer's batch,
    // which tansu 0.6 answers with the batch after it (as it did for committed offsets that fell
    // inside a batch). Unless `b` notices and goes back, the rest of those batches is never archived.
    let mut b = d.detector_with_env("b", &[], &[("SEEDWATCH_FAULT_RESUME_PAST_START", "7")]);
    d.wait_until_archived(&expected, false, Duration::from_secs(120), &["a", "b"], &mut [&mut b]);
    assert!(d.log("b").contains("seeking back"), "{}", d.log("b"));
    stop(b);
}

#[test]
fn a_member_whose_partitions_moved_on_while_it_stalled_cannot_commit_what_it_held() {
    let (dir, _broker, d, expected, second_half, metrics) = first_half_collected();
    // `a` reads the first half, and its first commit with files stalls (a long storage or GC
    // pause) while the file `hold` exists.
    let hold = dir.path().join("hold-commit");
    std::fs::write(&hold, "").expect("hold");
    let held = dir.path().join("hold-commit.held");
    let mut a = d.detector_with_env("a", &["--metrics-addr", &metrics], &[("SEEDWATCH_TEST_HOLD_COMMIT", hold.to_str().expect("utf-8"))]);
    wait_until("a's first commit to stall", Duration::from_secs(120), || held.exists() || matches!(a.0.try_wait(), Ok(Some(_))));
    assert!(held.exists(), "a exited: {}", d.log("a"));
    // `b` joins; the group moves partitions to it, and it reads them again from the committed
    // offsets (a committed nothing) and commits.
    let mut b = d.detector("b", &[]);
    wait_until("b's first commit with files", Duration::from_secs(120), || {
        d.log("b").lines().any(|l| l.contains("archive committed") && !l.contains("files=0 "))
    });
    // `a` wakes up holding the first half of every partition it owned, b's among them: its
    // commit must be refused, not archive those events a second time.
    std::fs::remove_file(&hold).expect("release a");
    wait_until("a's commit to be refused", Duration::from_secs(60), || d.log("a").contains("archive commit refused"));
    assert!(d.log("a").contains("fenced: partition"), "{}", d.log("a"));
    let fenced = try_get(&metrics, "/metrics").map_or(0.0, |(_, body)| sum_of(&body, "seedwatch_archive_commits_fenced_total", &[]));
    assert!(fenced >= 1.0, "the refusal is counted: {fenced}");
    // Both go on: the second half, and every event once, every finding found.
    d.collect(&second_half, &[]);
    let got = d.wait_for(&expected, Duration::from_secs(180), &["a", "b"], &mut [&mut a, &mut b]);
    got.assert_each_once();
    stop(a);
    stop(b);
    // verify also checks that no write was made under a claim already taken over.
    d.assert_verifies();
}

/// The archive's disk fills up under a detector (issue 19): it pauses, saying so in one line
/// and in metrics, and stops reading; SIGTERM ends the pause at once; restarted on the
/// still-full disk it pauses again, this time past its poll interval (the group evicts it
/// while it waits); once the disk is larger it carries on, and the archive holds every event
/// once and what the embedded run finds.
#[test]
fn a_full_disk_pauses_a_detector_which_stops_on_sigterm_and_carries_on_once_there_is_space() {
    let (dir, _broker, mut d, expected) = setup(Storage::Memory);
    let disk = common::tmpfs::Tmpfs::mount(&dir.path().join("disk"), "1m");
    d.archive = disk.0.join("archive");
    d.collect(&d.data.join("events.ndjson"), &[]);
    let paused = "the archive's disk is full: paused";
    let poll = ["--kafka-setting", "max.poll.interval.ms=10000", "--kafka-setting", "session.timeout.ms=10000"];
    let scrape = |addr: &str, metric: &str, labels: &[&str]| try_get(addr, "/metrics").map_or(-1.0, |(_, body)| sum_of(&body, metric, labels));

    let metrics = format!("127.0.0.1:{}", free_port());
    let mut a = d.detector("a", &[&poll[..], &["--metrics-addr", &metrics]].concat());
    wait_until("a to pause", Duration::from_secs(120), || d.log("a").contains(paused) || matches!(a.0.try_wait(), Ok(Some(_))));
    assert_eq!(d.log("a").matches(paused).count(), 1, "{}", d.log("a"));
    assert_eq!(scrape(&metrics, "seedwatch_archive_paused", &[]), 1.0);
    assert_eq!(scrape(&metrics, "seedwatch_archive_write_failures_total", &["reason=\"disk_full\""]), 1.0);
    // Paused, it reads nothing more.
    let decoded = |addr: &str| scrape(addr, "seedwatch_events_in_total", &["source=\"kafka\"", "outcome=\"decoded\""]);
    let before = decoded(&metrics);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(decoded(&metrics), before, "it went on reading while paused");

    // SIGTERM ends the pause within seconds, with the one-line error of a full disk.
    let asked = Instant::now();
    Command::new("kill").args(["-TERM", &a.0.id().to_string()]).status().expect("kill");
    let exit = a.0.wait().expect("wait");
    assert!(asked.elapsed() < Duration::from_secs(10), "SIGTERM took {:?} to end a paused detector", asked.elapsed());
    assert_eq!(exit.code(), Some(2), "{}", d.log("a"));
    assert!(d.log("a").lines().any(|l| l.starts_with("error: the archive's disk is full")), "{}", d.log("a"));

    // Restarted on the still-full disk, it pauses again, and stays paused past its poll interval.
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut b = d.detector("b", &[&poll[..], &["--metrics-addr", &metrics]].concat());
    wait_until("b to pause", Duration::from_secs(120), || d.log("b").contains(paused) || matches!(b.0.try_wait(), Ok(Some(_))));
    std::thread::sleep(Duration::from_secs(15));
    disk.resize("300m");
    let got = d.wait_for(&expected, Duration::from_secs(240), &["b"], &mut [&mut b]);
    got.assert_each_once();
    assert!(d.log("b").contains("the archive has space again: resumed"), "{}", d.log("b"));
    assert_eq!(scrape(&metrics, "seedwatch_archive_paused", &[]), 0.0);
    stop(b);
    d.assert_verifies();
    let staged: Vec<PathBuf> = common::files_under(&d.archive.join("_tmp")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    assert!(staged.is_empty(), "{staged:?}");
}

/// `setup` with the first half of the data collected: returns the second half's file
/// and a free address for a detector's metrics.
fn first_half_collected() -> (tempfile::TempDir, Broker, Deployment, Contents, PathBuf, String) {
    let (dir, broker, d, expected) = setup(Storage::Memory);
    let mut parts = split(&d.data.join("events.ndjson"), &[0.5], dir.path());
    d.collect(&parts[0], &[]);
    let second_half = parts.remove(1);
    (dir, broker, d, expected, second_half, format!("127.0.0.1:{}", free_port()))
}

/// The events a detector serving metrics at `addr` has decoded, once that count is above `above`
/// and has not moved for 3 s (everything there is to read has been read).
fn decoded_once_settled(addr: &str, above: f64, detector: &mut Running) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (-1.0, Instant::now());
    loop {
        assert!(matches!(detector.0.try_wait(), Ok(None)), "the detector exited");
        let decoded = try_get(addr, "/metrics").map_or(-1.0, |(_, body)| sum_of(&body, "seedwatch_events_in_total", &["source=\"kafka\"", "outcome=\"decoded\""]));
        if decoded != last {
            (last, since) = (decoded, Instant::now());
        } else if decoded > above && since.elapsed() >= Duration::from_secs(3) {
            return decoded;
        }
        assert!(Instant::now() < deadline, "the detector at {addr} did not settle above {above} events (last {last})");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_warm_up_longer_than_the_poll_interval_keeps_the_member_in_its_group() {
    let (_dir, _broker, d, expected) = setup(Storage::Memory);
    d.collect(&d.data.join("events.ndjson"), &[]);
    // Every warm-up takes 14 s, past the 10 s poll interval: a member that stopped polling
    // while warming up would be evicted, rejoin, warm up again, and never get to read.
    let settings = ["--kafka-setting", "max.poll.interval.ms=10000", "--kafka-setting", "session.timeout.ms=10000"];
    let mut slow = d.detector_with_env("slow", &settings, &[("SEEDWATCH_FAULT_WARM_UP_DELAY_MS", "14000")]);
    d.wait_for(&expected, Duration::from_secs(120), &["slow"], &mut [&mut slow]);
    let text = d.log("slow");
    assert_eq!(text.matches("consumer group rebalanced").count(), 1, "one assignment, no eviction:\n{text}");
    assert!(!text.contains("maximum poll interval"), "{text}");
    stop(slow);
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The offset a collect checkpoint holds for its one file.
fn checkpoint_offset(path: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(path) else { return 0 };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    v["files"].as_object().and_then(|files| files.values().next()).and_then(|p| p["offset"].as_u64()).unwrap_or(0)
}

fn append(to: &Path, from: &Path) {
    let bytes = std::fs::read(from).expect("read");
    std::fs::OpenOptions::new().create(true).append(true).open(to).and_then(|mut f| f.write_all(&bytes)).expect("append");
}

#[test]
fn a_killed_detector_a_restarted_broker_and_a_killed_collector_lose_and_double_nothing() {
    let (dir, mut broker, d, expected) = setup(Storage::Sqlite);
    let parts = split(&d.data.join("events.ndjson"), &[0.3, 0.55, 0.8], dir.path());

    // 1. kill -9 the detector once it has archived something, and start it again under the
    //    same --instance-id (static membership, as a StatefulSet pod restarts): it takes its
    //    partitions back and rebuilds their state from the archive. (Without an instance id
    //    the restarted member waits for the dead one to be expired; tansu 0.6 was seen to
    //    leave it unassigned, see the issue notes.)
    d.collect(&parts[0], &[]);
    let static_member = ["--instance-id", "detector-0"];
    let a = d.detector("a", &static_member);
    let api = d.archive.join("api");
    wait_until("a first archive file", Duration::from_secs(60), || seedwatch_archive::writer::parquet_files(&api).is_ok_and(|f| !f.is_empty()));
    kill_9(a);
    let mut a = d.detector("a-restarted", &static_member);
    // The group must settle (every event of part 0 archived) before the broker goes down too.
    let part0 = embedded_part(&parts[0], &d.data, dir.path());
    d.wait_until_archived(&part0, false, Duration::from_secs(120), &["a", "a-restarted"], &mut [&mut a]);

    // 2. Restart the broker (SQLite storage keeps topics, messages and committed offsets).
    broker.restart();
    d.collect(&parts[1], &[]);

    // 3. A collector following a file is killed after some lines were acknowledged;
    //    more lines arrive while it is down; restarted, it continues at its checkpoint.
    let live = dir.path().join("live.ndjson");
    let checkpoint = dir.path().join("collect.checkpoint");
    let follow = |name: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["collect", "file", "--follow", "--input", &live.display().to_string(), "--checkpoint", &checkpoint.display().to_string()])
            .args(["--brokers", &d.broker, "--fingerprint-key", &d.key()])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("collect --follow");
        Running(child)
    };
    append(&live, &parts[2]);
    let collector = follow("collector");
    let size = || std::fs::metadata(&live).map(|m| m.len()).unwrap_or(0);
    wait_until("the collector's checkpoint", Duration::from_secs(60), || checkpoint_offset(&checkpoint) == size());
    kill_9(collector);
    append(&live, &parts[3]);
    let collector = follow("collector-restarted");
    wait_until("the restarted collector's checkpoint", Duration::from_secs(60), || checkpoint_offset(&checkpoint) == size());
    stop(collector);

    let got = d.wait_for(&expected, Duration::from_secs(240), &["a", "a-restarted"], &mut [&mut a]);
    got.assert_each_once();
    stop(a);
    assert_nothing_more_after_the_stop(&d.archive, &got);
    d.assert_verifies();
}

/// The final commits add no events, dead letters or findings, and archive nothing twice (an
/// idle member may still have published a finding's growth as a new version).
fn assert_nothing_more_after_the_stop(archive: &Path, got: &Contents) {
    let after = contents(archive);
    assert_eq!((&after.events, after.dead_letters, &after.finding_ids), (&got.events, got.dead_letters, &got.finding_ids));
    assert_eq!(after.finding_rows, after.finding_versions, "a finding version archived twice");
}

/// `file`'s lines in arrival order when one license's lines arrive `delay_ms` after their
/// time (the rest in the file's order), and that license: the one with the most findings.
fn delay_one_license(file: &Path, findings_by_license: &[String], delay_ms: i64, out: &Path) -> String {
    let all = std::fs::read_to_string(file).expect("read");
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for license in findings_by_license {
        *counts.entry(license.as_str()).or_default() += 1;
    }
    let license = counts.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l.to_string()).expect("a license with findings");
    // The generator mixes in bad lines: those keep their place after the line before them.
    let mut previous = i64::MIN;
    let mut lines: Vec<(i64, usize, &str)> = all
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let time = match &v["time"] {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()),
                _ => None,
            }
            .unwrap_or(previous);
            previous = time;
            (time + if v["license"] == license.as_str() { delay_ms } else { 0 }, i, line)
        })
        .collect();
    lines.sort();
    let mut f = std::fs::File::create(out).expect("create");
    for (_, _, line) in lines {
        writeln!(f, "{line}").expect("write");
    }
    license
}

#[test]
fn a_location_delivered_six_hours_late_through_kafka_finds_what_the_sorted_run_finds() {
    let (dir, _broker, d, expected) = setup(Storage::Memory);
    let licenses: Vec<String> = {
        let out = seedwatch(&["query", "--archive", &dir.path().join("embedded-archive").display().to_string(), "--format", "csv", "SELECT license FROM findings"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().skip(1).map(String::from).collect()
    };
    let delayed = dir.path().join("delayed.ndjson");
    let license = delay_one_license(&d.data.join("events.ndjson"), &licenses, 6 * 3_600_000, &delayed);
    d.collect(&delayed, &[]);
    let mut a = d.detector("a", &[]);
    let got = d.wait_for(&expected, Duration::from_secs(180), &["a"], &mut [&mut a]);
    assert!(licenses.contains(&license));
    assert_eq!(got.finding_rows, got.finding_versions, "a finding version archived twice");
    stop(a);
    assert_nothing_more_after_the_stop(&d.archive, &got);
}

/// Resident memory of a process, in bytes (`VmRSS`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Soak, bounded (loopback only, stops by itself): the generator's 21 days fed at a steady rate
/// into a file a collector follows, through the broker to two detectors in one group, for
/// `SEEDWATCH_SOAK_SECONDS` (default 90; `benches/soak.sh` runs it for longer). Nothing is lost
/// or doubled, the findings are the embedded run's, and each detector's memory is flat once it
/// is warm: the peak of the last third of the run is within a quarter (and 48 MiB) of the
/// peak of the middle third.
#[test]
fn soak_a_steady_stream_through_collector_broker_and_two_detectors() {
    let seconds: u64 = std::env::var("SEEDWATCH_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(90);
    let (dir, _broker, d, expected) = setup(Storage::Memory);
    let slices = 60usize;
    let fractions: Vec<f64> = (1..slices).map(|i| i as f64 / slices as f64).collect();
    let parts = split(&d.data.join("events.ndjson"), &fractions, dir.path());
    let live = dir.path().join("live.ndjson");
    std::fs::File::create(&live).expect("live file");
    let log = std::fs::File::create(dir.path().join("collector.log")).expect("log");
    let collector = Running(
        Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["collect", "file", "--follow", "--input", &live.display().to_string(), "--checkpoint", &dir.path().join("collect.checkpoint").display().to_string()])
            .args(["--brokers", &d.broker, "--fingerprint-key", &d.key()])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("collect --follow"),
    );
    let mut a = d.detector("a", &[]);
    let mut b = d.detector("b", &[]);
    let started = Instant::now();
    let pace = Duration::from_secs(seconds) / slices as u32;
    // (seconds since start, RSS of a, RSS of b).
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        append(&live, part);
        while started.elapsed() < pace * (i as u32 + 1) {
            std::thread::sleep(Duration::from_millis(250));
        }
        for (name, detector) in [("a", &mut a), ("b", &mut b)] {
            if let Ok(Some(status)) = detector.0.try_wait() {
                panic!("detector {name} exited with {status}: {}", d.log(name));
            }
        }
        samples.push((started.elapsed().as_secs_f64(), rss_bytes(a.0.id()).unwrap_or(0), rss_bytes(b.0.id()).unwrap_or(0)));
    }
    let got = d.wait_for(&expected, Duration::from_secs(180), &["a", "b"], &mut [&mut a, &mut b]);
    got.assert_each_once();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let third = samples.len() / 3;
    for (name, rss) in [("a", samples.iter().map(|s| s.1).collect::<Vec<_>>()), ("b", samples.iter().map(|s| s.2).collect::<Vec<_>>())] {
        let middle = rss[third..2 * third].iter().copied().max().unwrap_or(0);
        let last = rss[2 * third..].iter().copied().max().unwrap_or(0);
        eprintln!("soak: detector {name} peak RSS {:.0} MiB in the middle third, {:.0} MiB in the last", mib(middle), mib(last));
        assert!(middle > 0, "no RSS samples of detector {name}");
        assert!(mib(last) <= mib(middle) * 1.25 + 48.0, "detector {name}'s memory grew: {:.0} MiB then {:.0} MiB ({:?})", mib(middle), mib(last), rss.iter().map(|b| mib(*b) as u64).collect::<Vec<_>>());
    }
    stop(collector);
    stop(a);
    stop(b);
    assert_nothing_more_after_the_stop(&d.archive, &got);
}
