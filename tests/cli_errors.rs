//! Unusable configuration stops a run with one line naming the file and line, and exit code 2.

mod common;

use std::path::Path;

use common::{seedwatch, text};

const RULE: &str = "id: login.failed_burst\ntitle: t\nseverity: high\nfamily: login\ntype: threshold\nfilter: \"outcome = 'failure'\"\ngroup_by: [user]\nthreshold: 3\nwindow: 1h\n";
const LINE: &str = r#"{"time":"2026-11-05T10:00:00Z","family":"login","system":"metrc","state":"CA","license":"L1","user":"a","outcome":"success","src_ip":"203.0.113.5"}"#;

fn run_with_rule(dir: &Path, rule: &str) -> (Option<i32>, String) {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(rules.join("r.yaml"), rule).expect("write rule");
    std::fs::write(dir.join("in.ndjson"), format!("{LINE}\n")).expect("write input");
    let out = seedwatch(&[
        "run", "--quiet",
        "--input", &dir.join("in.ndjson").display().to_string(),
        "--archive", &dir.join("archive").display().to_string(),
        "--rules", &rules.display().to_string(),
        "--fingerprint-key", &dir.join("fp.key").display().to_string(),
    ]);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_valid_rule_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = run_with_rule(dir.path(), RULE);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn rule_errors_name_file_line_and_field() {
    let cases = [
        (RULE.replace("window: 1h", "window: 1h\nwindwo: 2h"), ":10:", "windwo"),
        (RULE.replace("outcome = 'failure'", "outcome = = 'failure'"), ":6:", "filter"),
        (RULE.replace("outcome = 'failure'", "outcom = 'failure'"), ":6:", "outcom"),
        (RULE.replace("group_by: [user]", "group_by: [usr]"), ":7:", "usr"),
        ("id: [unclosed\n".to_string(), ":1:", "r.yaml"),
    ];
    for (rule, line, needle) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let (code, stderr) = run_with_rule(dir.path(), &rule);
        assert_eq!(code, Some(2), "{stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
        assert!(first.contains("r.yaml") && first.contains(line) && first.contains(needle), "{first}");
        assert!(!dir.path().join("archive").exists(), "nothing may be written on a config error");
    }
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let out = seedwatch(&["run", "--input", &format!("{d}/nope.ndjson"), "--archive", &format!("{d}/a"), "--fingerprint-key", &format!("{d}/k")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope.ndjson"), "{}", text(&out.stderr));
    let out = seedwatch(&["run", "--input", "-", "--archive", &format!("{d}/a"), "--rules", &format!("{d}/no-rules")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no-rules"), "{}", text(&out.stderr));
    let out = seedwatch(&["query", "--archive", &format!("{d}/missing-archive"), "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing-archive"), "{}", text(&out.stderr));
}

#[test]
fn bad_reference_files_are_named_with_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("in.ndjson"), format!("{LINE}\n")).expect("write");
    std::fs::write(d.join("locations.csv"), "location,license,state,system,timezone,open,close\nsf,L1,CA,metrc,America/Los_Angeles,9am,21:00\n").expect("write");
    let out = seedwatch(&[
        "run", "--input", &d.join("in.ndjson").display().to_string(),
        "--archive", &d.join("a").display().to_string(),
        "--locations", &d.join("locations.csv").display().to_string(),
        "--fingerprint-key", &d.join("k").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains("locations.csv:2:") && e.contains("open"), "{e}");
}

#[test]
fn stdin_is_a_source() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["run", "--quiet", "--input", "-", "--archive", &format!("{d}/a"), "--fingerprint-key", &format!("{d}/k")])
        .current_dir(common::repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{LINE}\nnot json").expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let summary = text(&out.stdout);
    assert!(summary.contains("login 1") && summary.contains("not_json 1"), "{summary}");
}

#[test]
fn kafka_secrets_are_refused_on_the_command_line() {
    let out = seedwatch(&["topics", "create", "--brokers", "127.0.0.1:1", "--kafka-setting", "sasl.password=hunter2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("SEEDWATCH_KAFKA_SASL_PASSWORD") && !err.contains("hunter2"), "{err}");
}
