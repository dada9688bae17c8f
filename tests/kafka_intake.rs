//! The HTTP intake endpoint against a real broker: tokens, scopes, limits,
//! gzip, and the per-line report; kafka-python reads back what was produced.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, Running, Storage};
use common::{seedwatch, text};
use serde_json::Value;
use sha2::Digest;

const LOGIN_L1: &str = r#"{"family":"login","time":"2026-11-01T10:00:00Z","system":"metrc","state":"CA","license":"L1","user":"ana","outcome":"success","src_ip":"10.0.0.1"}"#;
const LOGIN_L2: &str = r#"{"family":"login","time":"2026-11-01T10:00:05Z","system":"metrc","state":"CA","license":"L2","user":"bo","outcome":"success","src_ip":"10.0.0.2"}"#;

const NGINX_AUTH: &str = "dmVuZG9yLWtleTp1c2VyLWtleQ";
const NGINX_LINE: &str = r#"{"time_iso8601":"2026-11-02T14:03:11-07:00","remote_addr":"10.20.0.7","request_method":"GET","request_uri":"/packages/v2/active?licenseNumber=402R-01063","status":"200","body_bytes_sent":"48211","request_time":"0.184","host":"api-co.metrc.com","http_user_agent":"Dutchie/5.2","http_authorization":"Basic dmVuZG9yLWtleTp1c2VyLWtleQ=="}"#;

/// Send one request; returns (status code, body).
fn post(addr: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut head = format!("POST /v1/events HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("head");
    // A refused request may be answered before its body is read; that is fine.
    let _ = s.write_all(body);
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let body = rest.split("\r\n\r\n").nth(1).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn the_intake_checks_tokens_scopes_and_limits_and_reports_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), Storage::Memory);
    let create = seedwatch(&["topics", "create", "--brokers", &broker.address, "--partitions", "2"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let tokens = dir.path().join("tokens.yaml");
    let hash = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    std::fs::write(&tokens, format!("tokens:\n  - name: flowhub-l1\n    sha256: {}\n    licenses: [L1]\n  - name: soc\n    sha256: {}\n    licenses: [\"*\"]\n", hash("tok-l1"), hash("tok-any"))).expect("tokens");
    assert!(!std::fs::read_to_string(&tokens).expect("read").contains("tok-l1"), "the token file holds hashes only");

    let (mut intake, addr, log) = start_intake(dir.path(), &tokens, &broker.address, &["--max-body-bytes", "4096"]);

    let body = format!("{LOGIN_L1}\n");
    assert_eq!(post(&addr, &[], body.as_bytes()).0, 401, "no token");
    assert_eq!(post(&addr, &[("Authorization", "Bearer wrong")], body.as_bytes()).0, 401, "unknown token");
    let (code, refused) = post(&addr, &[("Authorization", "Bearer tok-l1")], format!("{LOGIN_L1}\n{LOGIN_L2}\n").as_bytes());
    assert_eq!(code, 403, "{refused}");
    assert_eq!(refused["lines"][0]["line"], 2, "{refused}");
    assert_eq!(refused["lines"][0]["license"], "L2", "{refused}");
    let big = format!("{LOGIN_L1}\n").repeat(40);
    assert_eq!(post(&addr, &[("Authorization", "Bearer tok-l1")], big.as_bytes()).0, 413, "body over the limit");
    // A gzip body that inflates past the limit is refused too.
    assert_eq!(post(&addr, &[("Authorization", "Bearer tok-l1"), ("Content-Encoding", "gzip")], &gzip(big.as_bytes())).0, 413);

    // Good lines and bad ones, gzipped: 202 once Kafka has them, with a report per bad line.
    let mixed = format!("{LOGIN_L1}\nnot json\n{}\n{LOGIN_L1}\n", LOGIN_L1.replace("10.0.0.1", "999.1.1.1"));
    let (code, report) = post(&addr, &[("Authorization", "Bearer tok-l1"), ("Content-Encoding", "gzip")], &gzip(mixed.as_bytes()));
    assert_eq!(code, 202, "{report}");
    assert_eq!((report["lines"].as_u64(), report["accepted"].as_u64(), report["dead_lettered"].as_u64()), (Some(4), Some(2), Some(2)), "{report}");
    let bad: Vec<(u64, String)> = report["errors"].as_array().expect("errors").iter().map(|e| (e["line"].as_u64().unwrap_or(0), e["reason_code"].as_str().unwrap_or("").to_string())).collect();
    assert_eq!(bad, vec![(2, "not_json".to_string()), (3, "invalid_ip".to_string())], "{report}");
    // The any-license token may send L2.
    let (code, report) = post(&addr, &[("Authorization", "Bearer tok-any")], format!("{LOGIN_L2}\n").as_bytes());
    assert_eq!((code, report["accepted"].as_u64()), (202, Some(1)), "{report}");

    // An nginx JSON access log of a proxy in front of Metrc goes through the same collector path.
    let nginx = dir.path().join("access.json.log");
    std::fs::write(&nginx, format!("{NGINX_LINE}\nnot json\n")).expect("nginx log");
    common::keys_init(&dir.path().join("fp.key"));
    let collect = seedwatch(&["collect", "file", "--format", "nginx-json", "--input", &nginx.display().to_string(), "--brokers", &broker.address, "--fingerprint-key", &dir.path().join("fp.key").display().to_string()]);
    assert!(collect.status.success(), "{}", text(&collect.stderr));

    // What reached Kafka: exactly the accepted events and the dead letters, nothing from refused requests.
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let consumed = dir.path().join("consumed.ndjson");
    let out = Command::new(&python)
        .args([common::repo().join("tests/kafka/consume.py").display().to_string(), broker.address.clone(), "seedwatch".into(), consumed.display().to_string(), NGINX_AUTH.into()])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["counts"]["seedwatch.login"], 3, "{summary}");
    assert_eq!(summary["counts"]["seedwatch.api"], 1, "{summary}");
    assert_eq!(summary["counts"]["seedwatch.dead_letter"], 3, "{summary}");
    assert_eq!(summary["raw_key_hits"], 0, "the proxy's Authorization header reached Kafka: {summary}");
    assert_eq!(summary["bad_keys"], 0, "{summary}");

    let pid = intake.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = intake.0.wait().expect("wait");
    assert!(status.success(), "collect http exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// A client that sends a request head one byte at a time and never finishes it; returns the
/// status it was answered with (0 when the connection closed without an answer).
fn trickle(addr: String) -> std::thread::JoinHandle<u16> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(&addr) else { return 0 };
        let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
        let head = b"POST /v1/events HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let started = Instant::now();
        for byte in head.iter().cycle() {
            if s.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            let mut answer = [0u8; 64];
            match s.read(&mut answer) {
                Ok(0) => return 0,
                Ok(n) => return String::from_utf8_lossy(&answer[..n]).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
        0
    })
}

/// Start `collect http` with the token file `tokens`; returns it, its address and its log.
fn start_intake(dir: &std::path::Path, tokens: &std::path::Path, broker: &str, extra: &[&str]) -> (Running, String, std::path::PathBuf) {
    let log = dir.join("intake.log");
    common::keys_init(&dir.join("fp.key"));
    let child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["collect", "http", "--listen", "127.0.0.1:0", "--tokens", &tokens.display().to_string()])
        .args(["--brokers", broker, "--fingerprint-key", &dir.join("fp.key").display().to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("collect http");
    let mut intake = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(a) = said.split("listening on http://").nth(1).and_then(|r| r.split('/').next()) {
            break a.to_string();
        }
        assert!(intake.0.try_wait().expect("wait").is_none(), "collect http exited: {said}");
        assert!(Instant::now() < deadline, "collect http did not listen: {said}");
        std::thread::sleep(Duration::from_millis(50));
    };
    (intake, addr, log)
}

#[test]
fn a_hostile_client_can_neither_exhaust_nor_stall_the_intake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), Storage::Memory);
    let create = seedwatch(&["topics", "create", "--brokers", &broker.address, "--partitions", "1"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, format!("tokens:\n  - name: soc\n    sha256: {}\n    licenses: [\"*\"]\n", hex::encode(sha2::Sha256::digest(b"tok-any")))).expect("tokens");
    let (mut intake, addr, log) = start_intake(dir.path(), &tokens, &broker.address, &["--request-timeout", "3s", "--max-lines-per-request", "1000", "--max-dead-letters-per-request", "5"]);
    let auth = ("Authorization", "Bearer tok-any");
    let gz = ("Content-Encoding", "gzip");

    // A 2 KB gzip body of two million newlines: refused by its ratio, not inflated into two
    // million dead letters and a reply listing them.
    let bomb = gzip(&vec![b'\n'; 2_000_000]);
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let (code, reply) = post(&addr, &[auth, gz], &bomb);
    assert_eq!(code, 413, "{reply}");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("100-fold")), "{reply}");
    // Too many lines, too many bad lines: 413, nothing produced.
    let (code, reply) = post(&addr, &[auth], format!("{LOGIN_L1}\n").repeat(1001).as_bytes());
    assert_eq!(code, 413, "{reply}");
    let (code, reply) = post(&addr, &[auth], format!("{LOGIN_L1}\n{}", "not json\n".repeat(6)).as_bytes());
    assert_eq!(code, 413, "{reply}");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("6 of the lines are bad")), "{reply}");
    // Five bad lines are within the limit: 202 and every one reported.
    let (code, reply) = post(&addr, &[auth], "not json\n".repeat(5).as_bytes());
    assert_eq!((code, reply["dead_lettered"].as_u64(), reply["errors"].as_array().map(Vec::len)), (202, Some(5), Some(5)), "{reply}");

    // Several gzip members one after another are all read (only the first used to be, and
    // the client got 202 for lines that were dropped); bytes after the last are refused.
    let two = [gzip(format!("{LOGIN_L1}\n").as_bytes()), gzip(format!("{LOGIN_L2}\n").as_bytes())].concat();
    let (code, reply) = post(&addr, &[auth, gz], &two);
    assert_eq!((code, reply["lines"].as_u64(), reply["accepted"].as_u64()), (202, Some(2), Some(2)), "{reply}");
    let trailing = [gzip(format!("{LOGIN_L1}\n").as_bytes()), b"trailing garbage".to_vec()].concat();
    assert_eq!(post(&addr, &[auth, gz], &trailing).0, 400);

    // Six clients trickling their heads hold every worker for at most the request deadline:
    // a real request behind them is answered within seconds, and they get 408.
    let tricklers: Vec<_> = (0..6).map(|_| trickle(addr.clone())).collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (code, reply) = post(&addr, &[auth], format!("{LOGIN_L1}\n").as_bytes());
    assert_eq!((code, reply["accepted"].as_u64()), (202, Some(1)), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(15), "a request waited {:?} behind trickling clients", started.elapsed());
    let answered: Vec<u16> = tricklers.into_iter().map(|t| t.join().unwrap_or(0)).collect();
    assert!(answered.iter().all(|c| *c == 408 || *c == 503), "{answered:?}");

    // SIGTERM with trickling clients connected stops the intake within seconds.
    let _held: Vec<_> = (0..6).map(|_| trickle(addr.clone())).collect();
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &intake.0.id().to_string()]).status().expect("kill").success());
    let status = intake.0.wait().expect("wait");
    assert!(status.success(), "collect http exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(stopping.elapsed() < Duration::from_secs(5), "the intake took {:?} to stop", stopping.elapsed());

    // Kafka holds what was accepted and nothing of the refused requests.
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([common::repo().join("tests/kafka/consume.py").display().to_string(), broker.address.clone(), "seedwatch".into(), dir.path().join("consumed.ndjson").display().to_string()])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!((summary["counts"]["seedwatch.login"].as_u64(), summary["counts"]["seedwatch.dead_letter"].as_u64()), (Some(3), Some(5)), "{summary}");
}

/// Tenancy on the way in (issue 20): one operator's lines under another's token are refused;
/// a token scoped to a location refuses another location of its own license; with the
/// operator's locations.csv, a line naming another license's location, or another state, is a
/// dead letter (it could borrow that location's hours or that state's policy); and one event
/// id sent by two operators is two events.
#[test]
fn one_operators_ids_and_locations_under_anothers_token_are_refused_or_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), Storage::Memory);
    let create = seedwatch(&["topics", "create", "--brokers", &broker.address, "--partitions", "1"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let locations = dir.path().join("locations.csv");
    std::fs::write(
        &locations,
        "location,license,state,system,timezone,open,close\noakland,L1,CA,metrc,America/Los_Angeles,09:00,21:00\nberkeley,L1,CA,metrc,America/Los_Angeles,09:00,21:00\ndenver,L2,CO,metrc,America/Denver,08:00,22:00\n",
    )
    .expect("locations");
    let tokens = dir.path().join("tokens.yaml");
    let hash = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    std::fs::write(&tokens, format!("tokens:\n  - name: operator-a-oakland\n    sha256: {}\n    licenses: [L1]\n    locations: [oakland]\n  - name: operator-b\n    sha256: {}\n    licenses: [L2]\n", hash("tok-a"), hash("tok-b"))).expect("tokens");
    let (mut intake, addr, log) = start_intake(dir.path(), &tokens, &broker.address, &["--locations", &locations.display().to_string()]);
    let line = |license: &str, location: &str, state: &str, id: &str| {
        format!(r#"{{"family":"login","time":"2026-11-01T10:00:00Z","event_id":"{id}","system":"metrc","state":"{state}","license":"{license}","location":"{location}","user":"ana","outcome":"success","src_ip":"10.0.0.1"}}"#) + "\n"
    };
    let send = |token: &str, body: String| post(&addr, &[("Authorization", &format!("Bearer {token}"))], body.as_bytes());

    // Operator B's token cannot send operator A's license; A's Oakland token cannot send Berkeley.
    let (code, refused) = send("tok-b", line("L1", "oakland", "CA", "ev-9"));
    assert_eq!((code, refused["lines"][0]["license"].as_str()), (403, Some("L1")), "{refused}");
    let (code, refused) = send("tok-a", line("L1", "berkeley", "CA", "ev-9"));
    assert_eq!((code, refused["lines"][0]["location"].as_str()), (403, Some("berkeley")), "{refused}");
    // Inside its scope, a line must still name its own state, and a license only its own locations.
    let (code, report) = send("tok-a", line("L1", "oakland", "CO", "ev-8"));
    assert_eq!((code, report["errors"][0]["reason_code"].as_str()), (202, Some("location_mismatch")), "{report}");
    let (code, report) = send("tok-b", line("L2", "oakland", "CA", "ev-7"));
    assert_eq!((code, report["errors"][0]["reason_code"].as_str()), (202, Some("location_mismatch")), "{report}");
    assert!(report["errors"][0]["reason"].as_str().is_some_and(|r| r.contains("another license")), "{report}");
    // The same event id from both operators: two events.
    let (code, report) = send("tok-a", line("L1", "oakland", "CA", "ev-1"));
    assert_eq!((code, report["accepted"].as_u64()), (202, Some(1)), "{report}");
    let (code, report) = send("tok-b", line("L2", "denver", "CO", "ev-1"));
    assert_eq!((code, report["accepted"].as_u64()), (202, Some(1)), "{report}");

    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let consumed = dir.path().join("consumed.ndjson");
    let out = Command::new(&python)
        .args([common::repo().join("tests/kafka/consume.py").display().to_string(), broker.address.clone(), "seedwatch".into(), consumed.display().to_string(), "no-such-secret".into()])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["counts"]["seedwatch.login"], 2, "only the two ev-1 lines: {summary}");
    assert_eq!(summary["counts"]["seedwatch.dead_letter"], 2, "{summary}");

    let pid = intake.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = intake.0.wait().expect("wait");
    assert!(status.success(), "collect http exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// A 202 means Kafka acknowledged, so the intake is ready (`/readyz` 200, what a Kubernetes
/// Service routes on) only while a broker answers: it turns 503 naming Kafka when the broker
/// goes away, and ready again when it is back. A following file collector, the other daemon
/// that produces, does the same.
#[test]
fn the_intake_and_a_following_collector_are_ready_only_while_a_broker_answers() {
    use common::http::{free_port, try_get, wait_for_status};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), Storage::Memory);
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, format!("tokens:\n  - name: soc\n    sha256: {}\n    licenses: [\"*\"]\n", hex::encode(sha2::Sha256::digest(b"tok")))).expect("tokens");
    let wait = |addr: &str, status: u16| wait_for_status(addr, "/readyz", status);

    // Listening, but no broker anywhere: alive, not ready, and it says why.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let lonely_metrics = format!("127.0.0.1:{}", free_port());
    let lonely = dir.path().join("lonely");
    std::fs::create_dir(&lonely).expect("dir");
    let _lonely = start_intake(&lonely, &tokens, &nowhere, &["--metrics-addr", &lonely_metrics]);
    assert_eq!(try_get(&lonely_metrics, "/healthz").map(|(s, _)| s), Some(200));
    let why = wait(&lonely_metrics, 503);
    assert!(why.contains("kafka") && !why.contains("listening"), "{why}");

    // A broker: ready; the broker gone: not ready; back: ready again.
    let metrics = format!("127.0.0.1:{}", free_port());
    let (_intake, _addr, log) = start_intake(dir.path(), &tokens, &broker.address, &["--metrics-addr", &metrics]);
    let collector_metrics = format!("127.0.0.1:{}", free_port());
    let followed = dir.path().join("followed.ndjson");
    std::fs::write(&followed, format!("{LOGIN_L1}\n")).expect("followed file");
    let _collector = Running(
        Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["collect", "file", "--follow", "--input", &followed.display().to_string(), "--brokers", &broker.address])
            .args(["--fingerprint-key", &dir.path().join("fp.key").display().to_string(), "--metrics-addr", &collector_metrics])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("collector.log")).expect("log")))
            .spawn()
            .expect("collect file --follow"),
    );
    for addr in [&metrics, &collector_metrics] {
        assert_eq!(wait(addr, 200), "ready\n", "{addr}");
    }
    broker.stop();
    for addr in [&metrics, &collector_metrics] {
        assert!(wait(addr, 503).contains("kafka"), "{addr}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    broker.restart();
    for addr in [&metrics, &collector_metrics] {
        assert_eq!(wait(addr, 200), "ready\n", "{addr}");
    }
}
