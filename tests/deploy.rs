//! Deployment artefacts (issue 21), checked with real tools since no container runtime or
//! `helm` binary exists here: hadolint lints the Dockerfile; Helm's own Go SDK
//! (helm-python-sdk) lints and renders the chart; kubernetes-validate checks every rendered
//! manifest against the Kubernetes 1.30 schemas; check-jsonschema checks values files against
//! the chart's schema; and every container's arguments are parsed by the real binary.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo, text};
use serde_yaml::Value;

/// A tool installed beside the test virtualenv's Python (scripts/test.sh installs them).
fn venv_tool(name: &str) -> PathBuf {
    let python = PathBuf::from(std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into()));
    let beside = python.parent().map(|d| d.join(name)).filter(|p| p.is_file());
    beside.unwrap_or_else(|| panic!("`{name}` is not beside {} (./scripts/test.sh installs it)", python.display()))
}

fn python() -> String {
    std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn the_dockerfile_lints_clean_and_copies_only_what_exists_and_is_not_ignored() {
    let hadolint = venv_tool("hadolint");
    let out = Command::new(&hadolint).arg("Dockerfile").current_dir(repo()).output().expect("hadolint");
    assert!(out.status.success() && out.stdout.is_empty(), "hadolint: {}{}", text(&out.stdout), text(&out.stderr));
    // The linter is not a rubber stamp: the usual mistakes fail it.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian:latest\nRUN cd /tmp && apt-get install curl\n").expect("write");
    let out = Command::new(&hadolint).arg(&bad).current_dir(dir.path()).output().expect("hadolint");
    assert!(!out.status.success() && text(&out.stdout).contains("DL3007"), "{}", text(&out.stdout));

    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let ignored: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))
        .expect(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut copied = 0;
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(repo().join(source).exists(), "Dockerfile copies {source}, which does not exist");
            assert!(!ignored.iter().any(|i| i == source), "Dockerfile copies {source}, which .dockerignore leaves out");
            copied += 1;
        }
    }
    assert!(copied >= 10, "{copied} COPY sources");
    // Every workspace member is copied, or the build stage cannot build.
    for member in workspace_members(&std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml")) {
        assert!(dockerfile.contains(&format!("COPY {member} {member}")), "the Dockerfile does not copy workspace member {member}");
    }
    assert!(dockerfile.contains("USER 10001"), "the runtime image runs as root");
}

/// Workspace members from Cargo.toml's `members = [...]` line.
fn workspace_members(manifest: &str) -> Vec<String> {
    let line = manifest.lines().find(|l| l.trim_start().starts_with("members")).expect("members");
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

struct Rendered {
    docs: Vec<Value>,
    file: PathBuf,
}

fn render(values: Option<&Path>, dir: &Path, name: &str) -> Rendered {
    let file = dir.join(format!("{name}.yaml"));
    let values_arg = values.map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
    let out = Command::new(python())
        .arg(repo().join("tests/deploy/render.py"))
        .args([repo().join("helm/seedwatch").display().to_string(), values_arg, file.display().to_string()])
        .output()
        .expect("render.py");
    assert!(out.status.success(), "render {name}: {}{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("render report");
    let lint = &report["lint"];
    assert!(lint["errors"].as_array().is_some_and(Vec::is_empty), "helm lint {name}: {lint}");
    let serious: Vec<&serde_json::Value> = lint["messages"].as_array().into_iter().flatten().filter(|m| m["severity"].as_u64().unwrap_or(0) >= 2).collect();
    assert!(serious.is_empty(), "helm lint {name}: {serious:?}");
    let stream = std::fs::read_to_string(&file).expect("rendered");
    let docs = serde_yaml::Deserializer::from_str(&stream).map(|d| Value::deserialize(d).expect("yaml")).collect();
    Rendered { docs, file }
}

use serde::Deserialize;

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Every pod template of the rendered workloads (Deployments, StatefulSets, DaemonSets, CronJobs).
fn pod_specs(docs: &[Value]) -> Vec<(String, &Value)> {
    let mut specs = Vec::new();
    for d in docs {
        let name = format!("{}/{}", d["kind"].as_str().unwrap_or(""), d["metadata"]["name"].as_str().unwrap_or(""));
        match d["kind"].as_str() {
            Some("Deployment" | "StatefulSet" | "DaemonSet") => specs.push((name, &d["spec"]["template"]["spec"])),
            Some("CronJob") => specs.push((name, &d["spec"]["jobTemplate"]["spec"]["template"]["spec"])),
            _ => {}
        }
    }
    specs
}

fn kubernetes_validate(file: &Path) -> std::process::Output {
    Command::new(venv_tool("kubernetes-validate")).args(["--strict", "--quiet", "-k", "1.30.0"]).arg(file).output().expect("kubernetes-validate")
}

#[test]
fn the_chart_renders_with_helm_validates_against_kubernetes_and_its_schema_and_every_flag_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let multi = repo().join("helm/seedwatch/ci/multi-location-values.yaml");
    let default = render(None, dir.path(), "default");
    let multi_rendered = render(Some(&multi), dir.path(), "multi");
    for r in [&default, &multi_rendered] {
        let out = kubernetes_validate(&r.file);
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success(), "kubernetes-validate {}: {report}", r.file.display());
        // Only the Prometheus Operator's kinds lack a schema there; they are checked below.
        for line in report.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(line.contains("ServiceMonitor") || line.contains("PrometheusRule"), "{line}");
        }
    }
    // The validator fails a manifest Kubernetes would refuse.
    let broken = dir.path().join("broken.yaml");
    let stream = std::fs::read_to_string(&default.file).expect("rendered").replacen("replicas:", "replicaCount:", 1);
    std::fs::write(&broken, stream).expect("write");
    assert!(!kubernetes_validate(&broken).status.success(), "kubernetes-validate accepted an unknown field");

    let kinds = |r: &Rendered| -> BTreeSet<String> { r.docs.iter().map(|d| d["kind"].as_str().unwrap_or("").to_string()).collect() };
    assert!(["StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "CronJob", "PersistentVolumeClaim"].iter().all(|k| kinds(&default).contains(*k)), "{:?}", kinds(&default));
    assert!(
        ["DaemonSet", "ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"].iter().all(|k| kinds(&multi_rendered).contains(*k)) && !kinds(&multi_rendered).contains("PersistentVolumeClaim"),
        "{:?}",
        kinds(&multi_rendered)
    );

    // Hardened pods, with limits and probes on the health endpoints, for every workload.
    for r in [&default, &multi_rendered] {
        for (name, spec) in pod_specs(&r.docs) {
            let pod = &spec["securityContext"];
            assert!(pod["runAsNonRoot"] == true && pod["seccompProfile"]["type"] == "RuntimeDefault", "{name}: {pod:?}");
            assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
            for c in spec["containers"].as_sequence().expect("containers") {
                let sc = &c["securityContext"];
                assert!(sc["readOnlyRootFilesystem"] == true && sc["allowPrivilegeEscalation"] == false, "{name}: {sc:?}");
                assert!(sc["capabilities"]["drop"].as_sequence().is_some_and(|d| d.iter().any(|x| x == "ALL")), "{name}");
                assert!(c["resources"]["limits"]["memory"].is_string() && c["resources"]["requests"]["cpu"].is_string(), "{name}: resources");
                if !name.starts_with("CronJob") && c["ports"].as_sequence().is_some_and(|p| p.iter().any(|p| p["name"] == "metrics")) {
                    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
                    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
                }
            }
        }
    }

    // One configuration file, rendered into a ConfigMap, read by every container; the real
    // binary's `config check` accepts it and says where each setting comes from.
    let configs: Vec<PathBuf> = [(&default, "default"), (&multi_rendered, "multi")]
        .into_iter()
        .map(|(r, name)| {
            let map = kind(&r.docs, "ConfigMap").into_iter().find(|c| c["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-config"))).expect("the configuration ConfigMap");
            let file = dir.path().join(format!("{name}-seedwatch.yaml"));
            std::fs::write(&file, map["data"]["seedwatch.yaml"].as_str().expect("seedwatch.yaml")).expect("write");
            let out = Command::new(env!("CARGO_BIN_EXE_seedwatch")).args(["config", "check"]).arg(&file).output().expect("seedwatch config check");
            assert!(out.status.success(), "config check of the {name} chart's file: {}{}", text(&out.stdout), text(&out.stderr));
            file
        })
        .collect();
    let multi_config: Value = serde_yaml::from_str(&std::fs::read_to_string(&configs[1]).expect("config")).expect("yaml");
    assert_eq!(multi_config["archive"]["root"], "s3://acme-seedwatch/archive");
    assert_eq!(multi_config["kafka"]["settings"]["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(multi_config["alertmanager"]["url"], "http://alertmanager.monitoring:9093");
    assert!(multi_config["intake"]["tls_cert"].is_string() && multi_config["rules"]["locations"].is_string(), "{multi_config:?}");
    for r in [&default, &multi_rendered] {
        for (name, spec) in pod_specs(&r.docs) {
            for c in spec["containers"].as_sequence().expect("containers") {
                let env = c["env"].as_sequence().expect("env");
                assert!(env.iter().any(|e| e["name"] == "SEEDWATCH_CONFIG" && e["value"] == "/etc/seedwatch/config/seedwatch.yaml"), "{name}: no SEEDWATCH_CONFIG");
                assert!(c["volumeMounts"].as_sequence().is_some_and(|m| m.iter().any(|m| m["name"] == "config" && m["mountPath"] == "/etc/seedwatch/config")), "{name}: the file is not mounted");
            }
        }
    }

    // Detectors: a StatefulSet whose pod name is the static member id, no more replicas than
    // partitions, a disruption budget; secrets only as files named through the environment.
    let detector = kind(&multi_rendered.docs, "StatefulSet")[0];
    let replicas = detector["spec"]["replicas"].as_u64().expect("replicas");
    let partitions = multi_config["kafka"]["partitions"].as_u64().expect("kafka.partitions");
    assert!(replicas == 4 && replicas <= partitions, "{replicas} replicas over {partitions} partitions");
    let pod = &detector["spec"]["template"];
    let env = pod["spec"]["containers"][0]["env"].as_sequence().expect("env");
    assert!(env.iter().any(|e| e["name"] == "SEEDWATCH_DETECT_INSTANCE_ID" && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"), "{env:?}");
    assert!(pod["metadata"]["annotations"]["checksum/config"].as_str().is_some_and(|c| c.len() == 64), "a changed configuration does not roll the pods");
    let rendered_text = std::fs::read_to_string(&multi_rendered.file).expect("rendered");
    assert!(rendered_text.contains("SEEDWATCH_KAFKA_SASL_PASSWORD_FILE") && !rendered_text.contains("sasl.password="), "a Kafka secret on a command line");
    assert!(multi_config["kafka"]["settings"]["sasl.password"].is_null(), "a Kafka secret in the configuration");
    assert!(rendered_text.contains("--metrics-tls-cert=") && rendered_text.contains("scheme: HTTPS"), "TLS not wired");

    // One source for the alerts and the dashboard: the files in monitoring/, not copies.
    let rule = kind(&multi_rendered.docs, "PrometheusRule")[0];
    let alerts: Value = serde_yaml::from_str(&std::fs::read_to_string(repo().join("monitoring/prometheus/seedwatch-alerts.yml")).expect("alerts")).expect("yaml");
    assert_eq!(rule["spec"], alerts, "the PrometheusRule is not monitoring/prometheus/seedwatch-alerts.yml");
    let rules_file = dir.path().join("rule.yml");
    std::fs::write(&rules_file, serde_yaml::to_string(&rule["spec"]).expect("yaml")).expect("write");
    let check = Command::new("promtool").args(["check", "rules"]).arg(&rules_file).output().expect("promtool (Debian's prometheus)");
    assert!(check.status.success(), "promtool check rules: {}{}", text(&check.stdout), text(&check.stderr));
    let dashboard = kind(&multi_rendered.docs, "ConfigMap").into_iter().find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1").expect("dashboard ConfigMap");
    let shipped: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo().join("monitoring/grafana/seedwatch-dashboard.json")).expect("dashboard")).expect("json");
    let embedded: serde_json::Value = serde_json::from_str(dashboard["data"]["seedwatch-dashboard.json"].as_str().expect("json text")).expect("json");
    assert_eq!(embedded, shipped);
    let monitor = kind(&multi_rendered.docs, "ServiceMonitor")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");

    // Every container's arguments, with its configuration file and its pod's environment, are
    // accepted by the real binary (`--help` after them parses them all first, and the file's
    // settings are checked by their flags' parsers before that): the chart cannot drift from
    // the CLI.
    for (r, config) in [&default, &multi_rendered].into_iter().zip(&configs) {
        for (name, spec) in pod_specs(&r.docs) {
            for c in spec["containers"].as_sequence().expect("containers") {
                let args: Vec<&str> = c["args"].as_sequence().expect("args").iter().filter_map(Value::as_str).collect();
                let mut run = Command::new(env!("CARGO_BIN_EXE_seedwatch"));
                run.args(&args).arg("--help").env("SEEDWATCH_CONFIG", config);
                for e in c["env"].as_sequence().into_iter().flatten() {
                    let value = if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" { "seedwatch-detector-0" } else { e["value"].as_str().unwrap_or("") };
                    if let Some(n) = e["name"].as_str().filter(|n| *n != "SEEDWATCH_CONFIG") {
                        run.env(n, value);
                    }
                }
                let out = run.output().expect("seedwatch");
                assert!(out.status.success(), "{name}: seedwatch {} refused: {}", args.join(" "), text(&out.stderr));
            }
        }
    }
}

#[test]
fn values_files_are_checked_against_the_chart_schema_by_check_jsonschema_and_by_helm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = repo().join("helm/seedwatch/values.schema.json");
    let check = |file: &Path| Command::new(venv_tool("check-jsonschema")).arg("--schemafile").arg(&schema).arg(file).output().expect("check-jsonschema");
    for good in ["helm/seedwatch/values.yaml", "helm/seedwatch/ci/multi-location-values.yaml"] {
        let out = check(&repo().join(good));
        assert!(out.status.success(), "{good}: {}", text(&out.stdout));
    }
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "detector:\n  replicas: two\n  replicaz: 3\nkafka:\n  brokers: k:9092\n  settings:\n    sasl.password: hunter2\n").expect("write");
    let out = check(&bad);
    let report = text(&out.stdout);
    assert!(!out.status.success() && report.contains("replicaz") && report.contains("'two' is not of type 'integer'") && report.contains("sasl.password"), "{report}");
    // Helm enforces the same schema at install: the render fails naming the fields.
    let out = Command::new(python())
        .arg(repo().join("tests/deploy/render.py"))
        .args([repo().join("helm/seedwatch").display().to_string(), bad.display().to_string(), dir.path().join("out.yaml").display().to_string()])
        .output()
        .expect("render.py");
    let report = text(&out.stdout);
    assert!(!out.status.success() && report.contains("/detector/replicas") && report.contains("replicaz"), "{report}");
}

/// The probes the chart points at: `/healthz` answers as soon as the listener is up;
/// `/readyz` says what a detector still waits for (a broker to give it partitions, an archive)
/// and turns 200 once it has them; neither needs the metrics token.
#[test]
fn a_detector_is_live_at_once_and_ready_once_it_has_partitions_and_an_archive() {
    use common::broker::{Broker, Running, Storage};
    use common::http::{free_port, try_get, wait_for_status};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = common::keys_init(&dir.path().join("fp.key"));
    let token = dir.path().join("metrics.token");
    std::fs::write(&token, "t0ken\n").expect("token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let detector = |brokers: &str, metrics: &str| {
        Running(
            Command::new(env!("CARGO_BIN_EXE_seedwatch"))
                .args(["detect", "--quiet", "--brokers", brokers, "--archive", &dir.path().join("archive").display().to_string(), "--partitions", "1"])
                .args(["--fingerprint-key", &key.display().to_string(), "--signing-key", &dir.path().join("signing.pem").display().to_string()])
                .args(["--metrics-addr", metrics, "--metrics-token-file", &token.display().to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(std::fs::File::create(dir.path().join(format!("detect-{}.log", brokers.replace(':', "-")))).expect("log")))
                .spawn()
                .expect("detect"),
        )
    };

    // No broker: alive, not ready, and it says why.
    let metrics = format!("127.0.0.1:{}", free_port());
    let nowhere = format!("127.0.0.1:{}", free_port());
    let _lonely = detector(&nowhere, &metrics);
    assert_eq!(wait_for_status(&metrics, "/healthz", 200), "ok\n");
    let why = wait_for_status(&metrics, "/readyz", 503);
    assert!(why.contains("kafka: not yet") && !why.contains("rules"), "{why}");
    assert_eq!(try_get(&metrics, "/metrics").map(|(s, _)| s), Some(401), "/metrics still wants its token");

    // A broker: ready once the group gave it its partitions.
    let broker = Broker::start(dir.path(), Storage::Memory);
    let metrics = format!("127.0.0.1:{}", free_port());
    let _detector = detector(&broker.address, &metrics);
    assert_eq!(wait_for_status(&metrics, "/readyz", 200), "ready\n");
}
