//! Findings routed through a real Alertmanager (Debian's `prometheus-alertmanager`):
//! `run --alertmanager` posts every finding version, Alertmanager groups them,
//! an escalation replaces the lower-severity alert, and `findings resolve
//! --alertmanager` resolves one. Read back from Alertmanager's own v2 API.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{free_port, try_get};
use common::{query_json, seedwatch, text};
use seedwatch::alertmanager::Alertmanager;
use seedwatch_schemas::{Family, Finding, Severity, Status};
use serde_json::Value;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Alertmanager on a free port, grouping by license and rule.
fn start_alertmanager(dir: &Path) -> (Running, String) {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: soc\n  group_by: [license, rule]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: soc\n",
    )
    .expect("config");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager must be installed (scripts/test.sh installs Debian's package)");
    let running = Running(child);
    let started = Instant::now();
    while try_get(&addr, "/-/ready").map(|(s, _)| s) != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "Alertmanager did not get ready on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (running, addr)
}

fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = try_get(addr, path).expect("Alertmanager answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// finding_id -> severity of the active alerts.
fn active(addr: &str) -> BTreeSet<(String, String)> {
    let alerts = get_json(addr, "/api/v2/alerts?active=true&silenced=false&inhibited=false");
    alerts
        .as_array()
        .expect("array")
        .iter()
        .filter(|a| a["status"]["state"] == "active")
        .map(|a| (a["labels"]["finding_id"].as_str().unwrap_or_default().to_string(), a["labels"]["severity"].as_str().unwrap_or_default().to_string()))
        .collect()
}


#[test]
fn alertmanager_receives_groups_and_resolves_findings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_alertmanager, addr) = start_alertmanager(dir.path());
    let data = dir.path().join("data");
    seedwatch::generate::generate(&data, &common::options(21, 6, 42)).expect("generate");
    let archive = dir.path().join("archive");
    let mut opts = common::run_options(&data, &archive, dir.path());
    opts.alertmanager = Some(Alertmanager::new(&format!("http://{addr}"), Duration::from_secs(3600)));
    seedwatch::pipeline::run(&opts).expect("run");

    // Every finding still open is an active alert, at its newest severity; those the detector
    // resolved (a sync that came back) are not.
    let open: BTreeSet<(String, String)> = query_json(&archive, "SELECT finding_id, severity FROM findings_latest WHERE status = 'open'")
        .iter()
        .map(|r| (r["finding_id"].as_str().unwrap_or_default().to_string(), r["severity"].as_str().unwrap_or_default().to_string()))
        .collect();
    assert!(open.len() >= 10, "the data set has incidents: {open:?}");
    assert_eq!(active(&addr), open);
    let alerts = get_json(&addr, "/api/v2/alerts");
    let one = alerts.as_array().and_then(|a| a.first()).cloned().unwrap_or_default();
    for label in ["rule", "severity", "state", "license", "location"] {
        assert!(one["labels"][label].as_str().is_some_and(|v| !v.is_empty()), "label {label}: {one}");
    }
    assert!(one["annotations"]["evidence_sql"].as_str().is_some_and(|s| s.contains("findings_latest")), "{one}");

    // Alertmanager groups them by license and rule.
    let wanted: BTreeSet<(String, String)> = query_json(&archive, "SELECT DISTINCT license, rule FROM findings_latest WHERE status = 'open'")
        .iter()
        .map(|r| (r["license"].as_str().unwrap_or_default().to_string(), r["rule"].as_str().unwrap_or_default().to_string()))
        .collect();
    let started = Instant::now();
    loop {
        let groups = get_json(&addr, "/api/v2/alerts/groups");
        let got: BTreeSet<(String, String)> = groups
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| (g["labels"]["license"].as_str().unwrap_or_default().to_string(), g["labels"]["rule"].as_str().unwrap_or_default().to_string()))
            .collect();
        if got == wanted {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "groups {got:?}, want {wanted:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A person resolves one: its alert ends.
    let (id, _) = open.iter().next().cloned().expect("an open finding");
    let out = seedwatch(&["findings", "resolve", &id, "--archive", &archive.display().to_string(), "--note", "handled", "--by", "dana", "--alertmanager", &format!("http://{addr}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let now: BTreeSet<String> = active(&addr).into_iter().map(|(f, _)| f).collect();
    assert!(!now.contains(&id), "{id} still firing");
    assert_eq!(now.len(), open.len() - 1);
}

#[test]
fn an_escalation_replaces_the_lower_severity_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_alertmanager, addr) = start_alertmanager(dir.path());
    // sync.lag climbing its ladder (tests/lifecycle.rs has the engine publish these versions).
    let now = chrono::Utc::now().timestamp_millis();
    let version = |v: i64, severity: Severity| Finding {
        finding_id: "2f53b9e71479823c".into(),
        version: v,
        rule: "sync.lag".into(),
        title: "No successful sync for longer than the state allows".into(),
        severity,
        status: Status::Open,
        family: Family::Sync,
        system: "metrc".into(),
        state: "CA".into(),
        license: "C10-0000123-LIC".into(),
        location: "oakland".into(),
        subject: "flowhub".into(),
        actor: None,
        window_start: now - 9 * 3_600_000,
        window_end: now,
        event_count: 1,
        evidence: vec!["e1".into()],
        detected_at: now,
        updated_at: now + v,
        note: None,
        changed_by: None,
        details: "{}".into(),
        raised: true,
    };
    let mut alertmanager = Alertmanager::new(&format!("http://{addr}"), Duration::from_secs(3600));
    alertmanager.post(&[version(1, Severity::Medium)]).expect("post");
    assert_eq!(active(&addr), BTreeSet::from([("2f53b9e71479823c".to_string(), "medium".to_string())]));
    alertmanager.post(&[version(2, Severity::High)]).expect("post");
    alertmanager.post(&[version(3, Severity::Critical)]).expect("post");
    assert_eq!(active(&addr), BTreeSet::from([("2f53b9e71479823c".to_string(), "critical".to_string())]), "one alert, at the finding's newest severity");
    // Unreachable: one clear error naming the URL, not a silent loss.
    let mut gone = Alertmanager::new(&format!("http://127.0.0.1:{}", free_port()), Duration::from_secs(3600));
    let err = gone.post(&[version(4, Severity::Critical)]).expect_err("nothing listens");
    assert!(err.to_string().contains("/api/v2/alerts"), "{err}");
}

#[test]
fn an_unreachable_alertmanager_does_not_stop_the_run_or_lose_a_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seedwatch::generate::generate(&data, &common::options(21, 6, 42)).expect("generate");
    let archive = dir.path().join("archive");
    let mut opts = common::run_options(&data, &archive, dir.path());
    opts.alertmanager = Some(Alertmanager::new(&format!("http://127.0.0.1:{}", free_port()), Duration::from_secs(3600)));
    let report = seedwatch::pipeline::run(&opts).expect("the run goes on without Alertmanager");
    let latest = seedwatch_schemas::finding::latest_versions(&report.findings);
    assert!(latest.len() >= 10, "{}", latest.len());
    let archived = query_json(&archive, "SELECT count(*) AS n FROM findings_latest");
    assert_eq!(archived, vec![serde_json::json!({"n": latest.len()})]);
}
