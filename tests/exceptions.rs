//! Exceptions (`rules/exceptions.yaml`): known-good activity dropped after a rule's
//! filter, counted per rule and exception, queryable as the `suppressed` view, and no
//! longer applied after its expiry day; `rules check` says which have expired.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{query_json, seedwatch, text};

const EXCEPTIONS: &str = "\
exceptions:
  - id: provisioning-robot
    reason: the HR sync creates accounts every night
    owner: it-ops@example.com
    expires: 2026-11-10
    rules: [audit.user_created]
    users: [svc-provisioner]
  - id: hq-office
    reason: HQ egress range, fixed addresses
    owner: secops@example.com
    expires: 2099-12-31
    rules: [login.failed_burst]
    ips: [198.51.100.0/24]
  - id: migration-day
    reason: accounts moved to the new POS during the planned migration
    owner: ops@example.com
    expires: 2026-12-31
    rules: ['audit.*']
    licenses: [C10-0000123-LIC]
    window: {from: '2026-11-20T02:00:00-08:00', to: '2026-11-20T06:00:00-08:00'}
";

fn audit(time: &str, actor: &str, target: &str) -> String {
    format!(r#"{{"time":"{time}","family":"audit","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","actor":"{actor}","action":"user_created","target":"{target}"}}"#)
}

fn failed_login(time: &str, user: &str, ip: &str) -> String {
    format!(r#"{{"time":"{time}","family":"login","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","user":"{user}","outcome":"failure","src_ip":"{ip}"}}"#)
}

/// Subjects of the newest finding versions of `rule`.
fn subjects(archive: &Path, rule: &str) -> Vec<String> {
    let rows = query_json(archive, &format!("SELECT subject FROM findings_latest WHERE rule = '{rule}' ORDER BY subject"));
    rows.iter().map(|r| r["subject"].as_str().unwrap_or_default().to_string()).collect()
}

fn run(dir: &Path, rules: &Path, name: &str, lines: &[String]) -> (std::path::PathBuf, seedwatch::pipeline::RunReport) {
    let input = dir.join(format!("{name}.ndjson"));
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    let archive = dir.join(format!("{name}-archive"));
    let mut opts = common::run_options(dir, &archive, dir);
    opts.inputs = vec![input];
    opts.rules = rules.to_path_buf();
    opts.locations = None;
    opts.roster = None;
    let report = seedwatch::pipeline::run(&opts).expect("run");
    (archive, report)
}

fn suppressed_metric(rule: &str, exception: &str) -> f64 {
    seedwatch_runtime::internal_events::REGISTRY
        .gather()
        .iter()
        .filter(|f| f.name() == "seedwatch_suppressed_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            let label = |n: &str| m.get_label().iter().find(|l| l.name() == n).map(|l| l.value().to_string());
            label("rule").as_deref() == Some(rule) && label("exception").as_deref() == Some(exception)
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[test]
fn exceptions_drop_count_show_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    common::copy_dir(&common::repo().join("rules"), &rules);
    std::fs::write(rules.join("exceptions.yaml"), EXCEPTIONS).expect("write exceptions");

    let mut lines = vec![
        // The robot before its exception's last day: excepted; after it: a finding again.
        audit("2026-11-05T10:00:00Z", "svc-provisioner", "new.one"),
        audit("2026-11-12T10:00:00Z", "svc-provisioner", "new.two"),
        // A person creating an account: always a finding.
        audit("2026-11-05T11:00:00Z", "alice.admin", "new.three"),
        // Inside the maintenance window (UTC 10:00-14:00) and just after it.
        audit("2026-11-20T12:00:00Z", "alice.admin", "moved.one"),
        audit("2026-11-20T14:00:00Z", "alice.admin", "moved.two"),
    ];
    for minute in 0..4 {
        // Office typos (excepted) and a burst from elsewhere (a finding).
        lines.push(failed_login(&format!("2026-11-06T15:{minute:02}:00Z"), "bob.office", "198.51.100.23"));
        lines.push(failed_login(&format!("2026-11-06T16:{minute:02}:00Z"), "carol.remote", "192.0.2.77"));
    }

    let (archive, report) = run(dir.path(), &rules, "with", &lines);
    assert_eq!(subjects(&archive, "audit.user_created"), ["moved.two", "new.three", "new.two"]);
    assert_eq!(subjects(&archive, "login.failed_burst"), ["carol.remote"]);
    let expected: BTreeMap<(String, String), u64> =
        [
            // `audit.*`: the bulk-changes rule counts every audit event, so it saw it too.
            (("audit.bulk_changes".into(), "migration-day".into()), 1),
            (("audit.user_created".into(), "migration-day".into()), 1),
            (("audit.user_created".into(), "provisioning-robot".into()), 1),
            (("login.failed_burst".into(), "hq-office".into()), 4),
        ]
        .into();
    assert_eq!(report.suppressed, expected);
    for ((rule, exception), n) in &expected {
        assert_eq!(suppressed_metric(rule, exception), *n as f64, "{rule} {exception}");
    }

    // The same matches, from the archive, for an analyst.
    let out = seedwatch(&[
        "query",
        "--archive",
        &archive.display().to_string(),
        "--rules",
        &rules.display().to_string(),
        "--format",
        "json",
        "SELECT rule_id, exception_id, count(*) AS n FROM suppressed GROUP BY rule_id, exception_id",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let seen: BTreeMap<(String, String), u64> = rows
        .iter()
        .map(|r| ((r["rule_id"].as_str().unwrap_or_default().into(), r["exception_id"].as_str().unwrap_or_default().into()), r["n"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(seen, expected);

    // Without the exceptions, the same input fires on what they dropped.
    std::fs::remove_file(rules.join("exceptions.yaml")).expect("remove");
    let (archive, report) = run(dir.path(), &rules, "without", &lines);
    assert_eq!(subjects(&archive, "audit.user_created"), ["moved.one", "moved.two", "new.one", "new.three", "new.two"]);
    assert_eq!(subjects(&archive, "login.failed_burst"), ["bob.office", "carol.remote"]);
    assert!(report.suppressed.is_empty());
}

#[test]
fn rules_check_reports_expired_exceptions_and_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    common::copy_dir(&common::repo().join("rules"), &rules);
    std::fs::write(rules.join("exceptions.yaml"), EXCEPTIONS).expect("write exceptions");
    let out = seedwatch(&["rules", "check", "--rules", &rules.display().to_string()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line_of = |id: &str| stdout.lines().find(|l| l.contains(&format!("exception {id} "))).unwrap_or_default().to_string();
    assert!(line_of("provisioning-robot").starts_with("expired") && line_of("provisioning-robot").contains("2026-11-10"), "{stdout}");
    assert!(line_of("hq-office").starts_with("ok") && line_of("hq-office").contains("secops@example.com"), "{stdout}");

    let cases = [
        (EXCEPTIONS.replace("rules: [login.failed_burst]", "rules: [login.no_such_rule]"), ":8:", "matches no rule"),
        (EXCEPTIONS.replace("198.51.100.0/24", "198.51.100.0/99"), ":8:", "field `ips`"),
        (EXCEPTIONS.replace("    owner: secops@example.com\n", ""), ":8:", "owner"),
        (EXCEPTIONS.replace("rules: [audit.user_created]", "rules: [sync.lag]"), ":2:", "absence rule"),
        (EXCEPTIONS.replace("users: [svc-provisioner]", "keys: [k1]"), ":2:", "lacks a column"),
        (EXCEPTIONS.replace("    rules: [audit.user_created]\n", ""), ":2:", "field `rules`"),
        (EXCEPTIONS.replace("expires: 2026-11-10", "expires: next year"), ":2:", "field `expires`"),
    ];
    for (yaml, line, word) in cases {
        std::fs::write(rules.join("exceptions.yaml"), &yaml).expect("write exceptions");
        let out = seedwatch(&["rules", "check", "--rules", &rules.display().to_string()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "accepted:\n{yaml}");
        assert!(stderr.lines().count() == 1 && stderr.contains(&format!("exceptions.yaml{line}")) && stderr.contains(word), "{word}: {stderr}");
    }
}
