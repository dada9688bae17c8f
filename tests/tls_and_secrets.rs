//! TLS on every listener and secrets only from files (issue 20), with real clients: Python's
//! `ssl` module, a real Prometheus scraping over mutual TLS with a bearer token, and librdkafka
//! reaching a broker through a TLS front with a client certificate whose key is encrypted.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, Running, Storage};
use common::http::{free_port, sum_of, try_get};
use common::pki::Pki;
use common::{seedwatch, text};
use serde_json::Value;
use sha2::Digest;

fn python() -> String {
    std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One HTTPS request with Python's `ssl` (tests/tls/client.py): `{"status", "body", "peer_cn"}`
/// or `{"error"}`.
fn https(url: &str, ca: &Path, client: Option<&common::pki::Issued>, token: Option<&str>, body: Option<&Path>) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(common::repo().join("tests/tls/client.py")).arg(url).arg("--ca").arg(ca);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    if let Some(b) = body {
        cmd.arg("--body").arg(b);
    }
    let out = cmd.output().expect("python");
    assert!(out.status.success(), "client.py: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("client.py printed {}: {e}", text(&out.stdout)))
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// Replace a file the way a renewal does: write beside it, rename over it.
fn replace(path: &Path, from: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).expect("copy");
    private(&tmp);
    std::fs::rename(&tmp, path).expect("rename");
}

/// Wait until `log` holds a line starting with `prefix`; returns the rest of it.
fn wait_for_line(log: &Path, prefix: &str, child: &mut Running) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = content.lines().find_map(|l| l.strip_prefix(prefix)) {
            return rest.trim().to_string();
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("exited with {status} before `{prefix}`: {content}");
        }
        assert!(Instant::now() < deadline, "no `{prefix}` line: {content}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Intake {
    process: Running,
    url: String,
    metrics: String,
    log: PathBuf,
}

fn start_intake(dir: &Path, name: &str, broker: &str, tokens: &Path, tls: &[&str]) -> Intake {
    let log = dir.join(format!("{name}.log"));
    let key = common::keys_init(&dir.join("fp.key"));
    let child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["collect", "http", "--listen", "127.0.0.1:0", "--tokens", &tokens.display().to_string(), "--metrics-addr", "127.0.0.1:0"])
        .args(["--brokers", broker, "--fingerprint-key", &key.display().to_string()])
        .args(tls)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("collect http");
    let mut process = Running(child);
    let url = wait_for_line(&log, "intake: listening on ", &mut process);
    let metrics = wait_for_line(&log, "metrics: http://", &mut process).trim_end_matches("/metrics").to_string();
    Intake { process, url, metrics, log }
}

fn scrape(addr: &str) -> String {
    try_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

/// The intake over HTTPS: a real client gets 202 after Kafka's acknowledgement; plain HTTP on
/// the TLS port gets nothing and is counted; a renewed certificate is served without a
/// restart, a broken renewal keeps the old one (counted); with a client CA, a client without
/// a certificate from it cannot complete the handshake.
#[test]
fn the_intake_serves_tls_picks_up_a_renewed_certificate_and_can_require_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), Storage::Memory);
    let create = seedwatch(&["topics", "create", "--brokers", &broker.address, "--partitions", "1"]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let pki = Pki::new(&dir.path().join("pki"), "seedwatch-test-ca");
    let (first, renewed, client) = (pki.issue("intake-1", true), pki.issue("intake-2", true), pki.issue("soc-laptop", false));
    let (cert, key) = (dir.path().join("intake.crt"), dir.path().join("intake.key"));
    replace(&cert, &first.cert);
    replace(&key, &first.key);
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, format!("tokens:\n  - name: pos\n    sha256: {}\n    licenses: [\"*\"]\n", hex::encode(sha2::Sha256::digest(b"tok")))).expect("tokens");
    let body = dir.path().join("body.ndjson");
    std::fs::write(&body, "{\"family\":\"login\",\"time\":\"2026-11-01T10:00:00Z\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"L1\",\"user\":\"ana\",\"outcome\":\"success\",\"src_ip\":\"10.0.0.1\"}\n").expect("body");

    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut intake = start_intake(dir.path(), "intake", &broker.address, &tokens, &["--tls-cert", &c, "--tls-key", &k]);
    assert!(intake.url.starts_with("https://127.0.0.1:"), "{}", intake.url);
    let answer = https(&intake.url, &pki.ca, None, Some("tok"), Some(&body));
    assert_eq!((answer["status"].as_u64(), answer["peer_cn"].as_str()), (Some(202), Some("intake-1")), "{answer}");
    assert!(answer["body"].as_str().is_some_and(|b| b.contains("\"accepted\":1")), "{answer}");

    // Plain HTTP to the TLS port: no answer, and counted.
    let addr = intake.url.trim_start_matches("https://").trim_end_matches("/v1/events").to_string();
    assert!(try_get(&addr, "/v1/events").is_none(), "plain HTTP must get no HTTP answer");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sum_of(&scrape(&intake.metrics), "seedwatch_http_requests_refused_total", &["listener=\"intake\"", "reason=\"tls_handshake\""]) < 1.0 {
        assert!(Instant::now() < deadline, "the refused handshake was not counted: {}", scrape(&intake.metrics));
        std::thread::sleep(Duration::from_millis(100));
    }

    // A renewal, as cert-manager or certbot writes it: served from the next handshake on.
    std::thread::sleep(Duration::from_millis(1100));
    replace(&key, &renewed.key);
    replace(&cert, &renewed.cert);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = https(&intake.url, &pki.ca, None, Some("tok"), Some(&body));
        if answer["peer_cn"] == "intake-2" {
            assert_eq!(answer["status"], 202, "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was never served: {answer}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // A broken renewal: the previous pair stays, and the failure is counted and logged.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n").expect("break");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = https(&intake.url, &pki.ca, None, Some("tok"), Some(&body));
        assert_eq!((answer["status"].as_u64(), answer["peer_cn"].as_str()), (Some(202), Some("intake-2")), "{answer}");
        if sum_of(&scrape(&intake.metrics), "seedwatch_tls_certificate_reloads_total", &["outcome=\"failed\""]) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the broken renewal was not counted: {}", scrape(&intake.metrics));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(sum_of(&scrape(&intake.metrics), "seedwatch_tls_certificate_reloads_total", &["outcome=\"ok\""]) >= 1.0);
    let log = std::fs::read_to_string(&intake.log).unwrap_or_default();
    assert!(log.contains("still serving the previous one"), "{log}");
    assert!(Command::new("kill").args(["-TERM", &intake.process.0.id().to_string()]).status().expect("kill").success());
    assert!(intake.process.0.wait().expect("wait").success());

    // Mutual TLS: only a client with a certificate from the client CA gets through.
    replace(&cert, &first.cert);
    replace(&key, &first.key);
    let ca = pki.ca.display().to_string();
    let mutual = start_intake(dir.path(), "intake-mtls", &broker.address, &tokens, &["--tls-cert", &c, "--tls-key", &k, "--tls-client-ca", &ca]);
    let refused = https(&mutual.url, &pki.ca, None, Some("tok"), Some(&body));
    assert!(refused["error"].is_string(), "no client certificate must fail the handshake: {refused}");
    let answer = https(&mutual.url, &pki.ca, Some(&client), Some("tok"), Some(&body));
    assert_eq!(answer["status"], 202, "{answer}");
    let other_ca = Pki::new(&dir.path().join("other-pki"), "someone-else");
    let stranger = other_ca.issue("stranger", false);
    let refused = https(&mutual.url, &pki.ca, Some(&stranger), Some("tok"), Some(&body));
    assert!(refused["error"].is_string(), "a certificate from another CA must fail the handshake: {refused}");

    // A private key others can read is refused at start, in one line.
    let loose = dir.path().join("loose.key");
    std::fs::copy(&first.key, &loose).expect("copy");
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let out = seedwatch(&["collect", "http", "--tokens", &tokens.display().to_string(), "--brokers", &broker.address, "--tls-cert", &c, "--tls-key", &loose.display().to_string(), "--fingerprint-key", &dir.path().join("fp.key").display().to_string()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("loose.key: permissions 644 let others read the TLS private key; chmod 600 it"), "{err}");
}

/// `/metrics` over mutual TLS behind a bearer token, scraped by a real Prometheus: the job with
/// a client certificate and the token is up; the job without the certificate and the job
/// without the token are down.
#[test]
fn prometheus_scrapes_metrics_over_mutual_tls_with_a_bearer_token_and_nothing_less_gets_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seedwatch::generate::generate(&data, &common::options(2, 1, 7)).expect("generate");
    let pki = Pki::new(&dir.path().join("pki"), "seedwatch-test-ca");
    let (server, scraper) = (pki.issue("seedwatch-metrics", true), pki.issue("prometheus", false));
    let token = dir.path().join("metrics.token");
    std::fs::write(&token, "scrape-token-1\n").expect("token");
    private(&token);
    let log = dir.path().join("run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["run", "--quiet", "--hold", "--metrics-addr", "127.0.0.1:0"])
        .arg("--metrics-tls-cert")
        .arg(&server.cert)
        .arg("--metrics-tls-key")
        .arg(&server.key)
        .arg("--metrics-client-ca")
        .arg(&pki.ca)
        .arg("--metrics-token-file")
        .arg(&token)
        .arg("--input")
        .arg(data.join("events.ndjson"))
        .arg("--archive")
        .arg(dir.path().join("archive"))
        .arg("--fingerprint-key")
        .arg(dir.path().join("fp.key"))
        .arg("--signing-key")
        .arg(dir.path().join("signing.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("seedwatch run");
    let mut run = Running(child);
    let url = format!("https://{}", wait_for_line(&log, "metrics: https://", &mut run));

    let full = https(&url, &pki.ca, Some(&scraper), Some("scrape-token-1"), None);
    assert_eq!(full["status"], 200, "{full}");
    assert!(full["body"].as_str().is_some_and(|b| b.contains("seedwatch_events_in_total")), "{full}");
    let no_token = https(&url, &pki.ca, Some(&scraper), None, None);
    assert_eq!(no_token["status"], 401, "{no_token}");
    let wrong = https(&url, &pki.ca, Some(&scraper), Some("scrape-token-2"), None);
    assert_eq!(wrong["status"], 401, "{wrong}");
    let no_cert = https(&url, &pki.ca, None, Some("scrape-token-1"), None);
    assert!(no_cert["error"].is_string(), "{no_cert}");

    let target = url.trim_start_matches("https://").trim_end_matches("/metrics").to_string();
    let (ca, cert, key, tok) = (pki.ca.display(), scraper.cert.display(), scraper.key.display(), token.display());
    let prometheus = common::prometheus::Prometheus::start(
        dir.path(),
        &format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n\
             - job_name: full\n  scheme: https\n  tls_config: {{ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\"}}\n  authorization: {{credentials_file: \"{tok}\"}}\n  static_configs: [{{targets: [\"{target}\"]}}]\n\
             - job_name: no-token\n  scheme: https\n  tls_config: {{ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\"}}\n  static_configs: [{{targets: [\"{target}\"]}}]\n\
             - job_name: no-cert\n  scheme: https\n  tls_config: {{ca_file: \"{ca}\"}}\n  authorization: {{credentials_file: \"{tok}\"}}\n  static_configs: [{{targets: [\"{target}\"]}}]\n"
        ),
    );
    let prom_addr = prometheus.address.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = loop {
        let up: Option<Vec<(String, String)>> = try_get(&prom_addr, "/api/v1/query?query=up").and_then(|(_, body)| {
            let v: Value = serde_json::from_str(&body).ok()?;
            let rows: Vec<(String, String)> = v["data"]["result"].as_array()?.iter().map(|r| (r["metric"]["job"].as_str().unwrap_or("").to_string(), r["value"][1].as_str().unwrap_or("").to_string())).collect();
            Some(rows)
        });
        if let Some(mut rows) = up.filter(|r| r.len() == 3) {
            rows.sort();
            break rows;
        }
        assert!(Instant::now() < deadline, "prometheus never scraped all three jobs: {}", prometheus.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    let expected: Vec<(String, String)> = [("full", "1"), ("no-cert", "0"), ("no-token", "0")].iter().map(|(j, v)| (j.to_string(), v.to_string())).collect();
    assert_eq!(up, expected);
    // What the scrape brought in is seedwatch's own series.
    let (_, series) = try_get(&prom_addr, "/api/v1/query?query=seedwatch_events_in_total").expect("query");
    assert!(series.contains("\"job\":\"full\""), "{series}");
    let scrape = https(&url, &pki.ca, Some(&scraper), Some("scrape-token-1"), None);
    let body = scrape["body"].as_str().unwrap_or("");
    assert!(sum_of(body, "seedwatch_http_requests_refused_total", &["listener=\"metrics\"", "reason=\"unauthorized\""]) >= 2.0, "{body}");
    assert!(sum_of(body, "seedwatch_http_requests_refused_total", &["listener=\"metrics\"", "reason=\"tls_handshake\""]) >= 1.0, "{body}");
}

/// librdkafka over TLS with a client certificate whose key is encrypted, its passphrase read
/// from a 0600 file named in the environment: topics are created and a collector's lines arrive
/// through the TLS front (tansu has no TLS listener of its own). The same passphrase on the
/// command line, in a file others can read, or a client key others can read is refused in one line.
#[test]
fn kafka_over_tls_with_a_client_certificate_and_secrets_only_from_private_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"), "kafka-ca");
    let (front, client) = (pki.issue("kafka-front", true), pki.issue("seedwatch-collector", false));
    let encrypted = dir.path().join("collector.key.enc");
    let out = Command::new("openssl")
        .args(["pkey", "-in", &client.key.display().to_string(), "-out", &encrypted.display().to_string(), "-aes256", "-passout", "pass:kafka-key-pass"])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    private(&encrypted);
    let passphrase = dir.path().join("kafka-key.pass");
    std::fs::write(&passphrase, "kafka-key-pass\n").expect("pass");
    private(&passphrase);

    let tls_port = free_port();
    let tls_address = format!("127.0.0.1:{tls_port}");
    let broker = Broker::start_advertising(dir.path(), Storage::Memory, &tls_address);
    let mut proxy = Command::new(python())
        .arg(common::repo().join("tests/tls/proxy.py"))
        .args([tls_port.to_string(), broker.address.clone(), front.cert.display().to_string(), front.key.display().to_string(), pki.ca.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("proxy.py");
    let mut proxy_out = BufReader::new(proxy.stdout.take().expect("stdout"));
    let _proxy = Running(proxy);
    let mut ready = String::new();
    proxy_out.read_line(&mut ready).expect("ready");
    assert_eq!(ready.trim(), "ready");

    let settings = [
        "security.protocol=SSL".to_string(),
        format!("ssl.ca.location={}", pki.ca.display()),
        format!("ssl.certificate.location={}", client.cert.display()),
        format!("ssl.key.location={}", encrypted.display()),
    ];
    let with_tls = |args: &[&str], env: &[(&str, &Path)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seedwatch"));
        cmd.args(args).args(["--brokers", &tls_address]);
        for s in &settings {
            cmd.args(["--kafka-setting", s]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(common::repo()).output().expect("seedwatch")
    };
    let pass_env = [("SEEDWATCH_KAFKA_SSL_KEY_PASSWORD_FILE", passphrase.as_path())];
    let create = with_tls(&["topics", "create", "--partitions", "1"], &pass_env);
    assert!(create.status.success(), "topics create over TLS: {}{}", text(&create.stdout), text(&create.stderr));
    assert_eq!(text(&create.stdout).lines().filter(|l| l.starts_with("created")).count(), 6, "{}", text(&create.stdout));

    let input = dir.path().join("events.ndjson");
    let line = |i: u32| format!("{{\"family\":\"login\",\"time\":\"2026-11-01T10:00:{i:02}Z\",\"event_id\":\"tls-{i}\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"L1\",\"user\":\"ana\",\"outcome\":\"success\",\"src_ip\":\"10.0.0.1\"}}\n");
    std::fs::write(&input, (0..5).map(line).collect::<String>()).expect("input");
    let key = common::keys_init(&dir.path().join("fp.key"));
    let collect = with_tls(&["collect", "file", "--input", &input.display().to_string(), "--fingerprint-key", &key.display().to_string()], &pass_env);
    assert!(collect.status.success(), "collect over TLS: {}", text(&collect.stderr));

    // What arrived, read through the same TLS front by another client (kafka-python).
    let consumed = dir.path().join("consumed.ndjson");
    let reader = pki.issue("auditor", false);
    let out = Command::new(python())
        .args([common::repo().join("tests/kafka/consume.py").display().to_string(), tls_address.clone(), "seedwatch".into(), consumed.display().to_string(), "no-such-secret".into()])
        .env("SEEDWATCH_TEST_KAFKA_CA", &pki.ca)
        .env("SEEDWATCH_TEST_KAFKA_CERT", &reader.cert)
        .env("SEEDWATCH_TEST_KAFKA_KEY", &reader.key)
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["counts"]["seedwatch.login"], 5, "{summary}");
    // Every connection went through the TLS front with the collector's certificate.
    drop(_proxy);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut proxy_out, &mut rest);
    assert!(rest.lines().any(|l| l.starts_with("tls connection: client seedwatch-collector")), "{rest}");

    // The passphrase on the command line, in a file others can read, or a readable client key: one line each.
    let out = seedwatch(&["topics", "create", "--brokers", &tls_address, "--kafka-setting", "ssl.key.password=kafka-key-pass"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("SEEDWATCH_KAFKA_SSL_KEY_PASSWORD_FILE") && !err.contains("kafka-key-pass"), "{err}");
    std::fs::set_permissions(&passphrase, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let out = with_tls(&["topics", "create"], &pass_env);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("kafka-key.pass: permissions 644 let others read the Kafka ssl.key.password"), "{err}");
    private(&passphrase);
    std::fs::set_permissions(&encrypted, std::os::unix::fs::PermissionsExt::from_mode(0o604)).expect("chmod");
    let out = with_tls(&["topics", "create"], &pass_env);
    let err = text(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("collector.key.enc: permissions 604 let others read the Kafka client's private key"), "{err}");
}

/// The fingerprint secret: a collector or detector without one stops with one line naming
/// `seedwatch keys init` (it used to make its own, giving one API key a different key id on
/// each host); `keys init` creates both keys 0600 once and keeps them after.
#[test]
fn daemons_refuse_a_missing_fingerprint_key_and_keys_init_creates_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("keys/fingerprint.key");
    let signing = dir.path().join("keys/signing.pem");
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, "tokens: []\n").expect("tokens");
    let k = key.display().to_string();
    let archive = dir.path().join("archive").display().to_string();
    for args in [
        vec!["collect", "file", "--input", "/dev/null", "--brokers", "127.0.0.1:1", "--fingerprint-key", &k],
        vec!["detect", "--brokers", "127.0.0.1:1", "--archive", &archive, "--fingerprint-key", &k],
    ] {
        let out = seedwatch(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.trim().lines().count() == 1 && err.contains(&k) && err.contains("seedwatch keys init"), "{args:?}: {err}");
        assert!(!key.exists(), "{args:?} created the key");
    }

    let init = seedwatch(&["keys", "init", "--fingerprint-key", &k, "--signing-key", &signing.display().to_string()]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(text(&init.stdout).contains("created"), "{}", text(&init.stdout));
    use std::os::unix::fs::PermissionsExt;
    for file in [&key, &signing] {
        assert_eq!(std::fs::metadata(file).expect("created").permissions().mode() & 0o777, 0o600, "{}", file.display());
    }
    let before = (std::fs::read(&key).expect("key"), std::fs::read(&signing).expect("signing"));
    let again = seedwatch(&["keys", "init", "--fingerprint-key", &k, "--signing-key", &signing.display().to_string()]);
    assert!(again.status.success() && text(&again.stdout).matches("exists, kept").count() == 2, "{}", text(&again.stdout));
    assert_eq!(before, (std::fs::read(&key).expect("key"), std::fs::read(&signing).expect("signing")));

    // A fingerprint secret others can read is refused too.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = seedwatch(&["collect", "file", "--input", "/dev/null", "--brokers", "127.0.0.1:1", "--fingerprint-key", &k]);
    let err = text(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("permissions 644 let others read the secret; chmod 600 it"), "{err}");
}
