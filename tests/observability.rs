//! Observability checked with the real Prometheus tools (Debian's `prometheus`
//! package, installed by scripts/test.sh): promtool on the shipped alerts and
//! on a real scrape, and a real Prometheus server scraping a running
//! `seedwatch run`, asked for the findings series and for a firing alert.
//! Without the tools these tests fail rather than skip.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{sum_of, try_get};
use common::{repo, text};
use serde_json::Value;

const ALERTS: &str = "monitoring/prometheus/seedwatch-alerts.yml";
const ALERT_TESTS: &str = "monitoring/prometheus/seedwatch-alerts.test.yml";
const DASHBOARD: &str = "monitoring/grafana/seedwatch-dashboard.json";
/// Metrics the alerts use that only the Kafka daemon exports (issue 4).
const NOT_FROM_RUN: &[&str] = &["seedwatch_kafka_consumer_lag"];

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(found, "`{name}` is not on PATH: install Debian's prometheus package (./scripts/test.sh does)");
    Command::new(name)
}

/// Kills a child process when dropped, so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

fn encode(query: &str) -> String {
    query.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}


/// Metric names in a PromQL expression (histogram series mapped to their family).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("seedwatch_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        out.insert(family.to_string());
    }
    out
}


#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let check = tool("promtool").args(["check", "rules"]).arg(repo().join(ALERTS)).output().expect("promtool");
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    // promtool saw every rule the file holds (a rule it skipped would not be checked).
    let rules: Value = serde_yaml::from_str(&std::fs::read_to_string(repo().join(ALERTS)).expect("alerts")).expect("alerts YAML");
    let count: usize = rules["groups"].as_array().into_iter().flatten().map(|g| g["rules"].as_array().map_or(0, Vec::len)).sum();
    assert!(count >= 8, "the alert file lost rules: {count}");
    assert!(text(&check.stdout).contains(&format!("SUCCESS: {count} rules found")), "{}", text(&check.stdout));
    let tests = tool("promtool").args(["test", "rules"]).arg(repo().join(ALERT_TESTS)).output().expect("promtool");
    assert!(tests.status.success(), "{}{}", text(&tests.stdout), text(&tests.stderr));
    // Every alert has a unit test.
    let tested = std::fs::read_to_string(repo().join(ALERT_TESTS)).expect("alert tests");
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"].as_str().unwrap_or_default();
            assert!(tested.contains(&format!("alertname: {name}")), "alert {name} has no promtool test");
        }
    }
}

#[test]
fn prometheus_scrapes_a_running_seedwatch_and_fires_an_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seedwatch::generate::generate(&data, &common::options(21, 6, 42)).expect("generate");
    let archive = dir.path().join("archive");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["run", "--quiet", "--hold", "--metrics-addr", "127.0.0.1:0", "--input"])
        .arg(data.join("events.ndjson"))
        .arg("--archive")
        .arg(&archive)
        .arg("--locations")
        .arg(data.join("locations.csv"))
        .arg("--roster")
        .arg(data.join("roster.csv"))
        .arg("--fingerprint-key")
        .arg(dir.path().join("fp.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting seedwatch run");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let _seedwatch = Running(child);
    let mut first = String::new();
    BufReader::new(stderr).read_line(&mut first).expect("metrics line");
    let addr = first.trim().strip_prefix("metrics: http://").and_then(|s| s.strip_suffix("/metrics")).unwrap_or_else(|| panic!("unexpected: {first}")).to_string();
    // The summary, then "holding": the run is done and only serves metrics now.
    let mut summary = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout");
        if line.starts_with("holding:") {
            break;
        }
        summary.push_str(&line);
        summary.push('\n');
    }
    let findings: f64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("findings:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no findings line in:\n{summary}"));

    // A real scrape: what the run reported, and what promtool accepts.
    let (status, scrape) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    assert_eq!(sum_of(&scrape, "seedwatch_findings_total", &[]), findings, "{summary}");
    let failed = common::seedwatch(&["query", "--archive", &archive.display().to_string(), "--format", "csv", "SELECT count(*) AS n FROM login WHERE outcome = 'failure'"]);
    let failed: f64 = text(&failed.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(-1.0);
    assert_eq!(sum_of(&scrape, "seedwatch_failed_logins_total", &[]), failed);
    assert!(scrape.contains("seedwatch_absence_limit_seconds{rule=\"sync.lag\",state=\"CO\"} 87300"), "policy limit missing");
    for forbidden in ["src_ip", "user=", "raw_key"] {
        assert!(!scrape.contains(forbidden), "unbounded or secret label `{forbidden}` in the scrape");
    }
    let mut check = tool("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("promtool");
    check.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("feed promtool");
    let checked = check.wait_with_output().expect("promtool");
    assert!(checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(), "promtool check metrics: {}{}", text(&checked.stdout), text(&checked.stderr));
    let exported: BTreeSet<String> = scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_string)).collect();

    // A real Prometheus server scraping it with the shipped alerts.
    let prometheus = common::prometheus::Prometheus::start(
        dir.path(),
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: seedwatch\n    static_configs: [{{targets: [\"{addr}\"]}}]\n",
            repo().join(ALERTS).display()
        ),
    );
    let prom_addr = prometheus.address.clone();
    let log = || prometheus.log();
    let api = |path: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((_, body)) = try_get(&prom_addr, path) {
                return serde_json::from_str(&body).unwrap_or(Value::Null);
            }
            assert!(Instant::now() < deadline, "prometheus is not answering on {prom_addr}:\n{}", log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let wait_for = |what: &str, check: &dyn Fn() -> Option<Value>| -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(Instant::now() < deadline, "prometheus never showed {what}:\n{}", log());
            std::thread::sleep(Duration::from_millis(500));
        }
    };

    let series = wait_for("the critical findings series", &|| {
        let v = api(&format!("/api/v1/query?query={}", encode("seedwatch_findings_total{severity=\"critical\"}")));
        v["data"]["result"].as_array().filter(|r| !r.is_empty()).cloned().map(Value::Array)
    });
    let rules: BTreeSet<&str> = series.as_array().into_iter().flatten().filter_map(|s| s["metric"]["rule"].as_str()).collect();
    assert!(rules.contains("api.bulk_export") && rules.contains("login.terminated_user"), "{rules:?}");

    let alert = wait_for("SeedwatchCriticalFinding firing", &|| {
        let v = api("/api/v1/alerts");
        v["data"]["alerts"].as_array()?.iter().find(|a| a["labels"]["alertname"] == "SeedwatchCriticalFinding" && a["state"] == "firing").cloned()
    });
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");

    // The dashboard: parses, every query names metrics this run exports, and
    // every query is valid PromQL to the real server.
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).expect("dashboard")).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "seedwatch-overview");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels").iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {} must use the datasource variable", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in &names {
                assert!(exported.contains(name), "panel {} uses {name}, which seedwatch does not export", panel["title"]);
            }
            let concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$state", ".*").replace("$license", ".*");
            let v = api(&format!("/api/v1/query?query={}", encode(&concrete)));
            assert_eq!(v["status"], "success", "panel {}: {concrete}: {v}", panel["title"]);
            queries += 1;
        }
    }
    assert!(queries >= 14, "{queries}");
    let alerts_text = std::fs::read_to_string(repo().join(ALERTS)).expect("alerts");
    for name in metric_names(&alerts_text) {
        assert!(exported.contains(&name) || NOT_FROM_RUN.contains(&name.as_str()), "the alerts use {name}, which seedwatch does not export");
    }
}
