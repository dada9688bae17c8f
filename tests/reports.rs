//! `seedwatch report`: each review report over the generator's data, its rows checked
//! against the generator's labels (truth.json), which are written independently of the
//! reports' SQL; parameters, scoping, output files and the errors a user meets.

mod common;

use std::collections::BTreeSet;

use common::{fixture, query_json, seedwatch, text, Fixture};
use serde_json::Value;

/// Run a report as JSON rows; `args` after the name.
fn report(f: &Fixture, name: &str, args: &[&str]) -> Vec<Value> {
    let archive = f.archive().display().to_string();
    let (locations, roster) = (f.data().join("locations.csv").display().to_string(), f.data().join("roster.csv").display().to_string());
    let mut all = vec!["report", name, "--archive", &archive, "--format", "json", "--locations", &locations, "--roster", &roster];
    all.extend(args);
    let out = seedwatch(&all);
    assert!(out.status.success(), "report {name} {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

fn labelled<'a>(f: &'a Fixture, rule: &str) -> Vec<&'a seedwatch::generate::TruthEntry> {
    f.truth.incidents.iter().filter(|i| i.rule == rule).collect()
}

fn str_of<'a>(row: &'a Value, column: &str) -> &'a str {
    row[column].as_str().unwrap_or_default()
}

/// The whole data set: from before the first day to after the last.
const ALL: [&str; 4] = ["--from", "2026-01-01", "--to", "2027-01-01"];

#[test]
fn terminated_activity_lists_exactly_the_labelled_ex_employees_and_access_review_flags_them() {
    let f = fixture();
    let rows = report(f, "terminated-activity", &ALL);
    let got: BTreeSet<(&str, &str)> = rows.iter().map(|r| (str_of(r, "user"), str_of(r, "location"))).collect();
    let want: BTreeSet<(&str, &str)> = labelled(f, "login.terminated_user").iter().map(|i| (i.subject.as_str(), i.location.as_str())).collect();
    assert!(!want.is_empty(), "the data set has a terminated user");
    assert_eq!(got, want);
    // The same accounts are the access review's first concern; admins are marked for a look.
    let review = report(f, "access-review", &ALL);
    let flagged: BTreeSet<(&str, &str)> = review.iter().filter(|r| str_of(r, "review") == "TERMINATED BUT USED").map(|r| (str_of(r, "user"), str_of(r, "location"))).collect();
    assert_eq!(flagged, want);
    assert!(review.iter().any(|r| str_of(r, "review") == "ADMIN"), "{review:?}");
    // Scoped to another location, nothing.
    let elsewhere = f.truth.incidents.iter().map(|i| i.location.as_str()).find(|l| !want.iter().any(|(_, w)| w == l)).expect("another location");
    assert!(report(f, "terminated-activity", &[&ALL[..], &["--location", elsewhere]].concat()).is_empty());
}

#[test]
fn key_rotation_marks_due_exactly_the_keys_the_rotation_rule_finds() {
    let f = fixture();
    let end = f.truth.incidents.iter().map(|i| i.end.as_str()).max().expect("incidents").to_string();
    let rows = report(f, "key-rotation", &["--to", &end]);
    let due: BTreeSet<&str> = rows.iter().filter(|r| str_of(r, "status") == "DUE").map(|r| str_of(r, "key_id")).collect();
    let want: BTreeSet<&str> = labelled(f, "audit.key_rotation_overdue").iter().map(|i| i.subject.as_str()).collect();
    assert!(!want.is_empty());
    assert_eq!(due, want, "{rows:?}");
    for row in &rows {
        let (age, limit) = (row["age_days"].as_i64().unwrap_or(-1), row["rotation_days"].as_i64().unwrap_or(-1));
        assert_eq!(str_of(row, "status") == "DUE", age > limit, "{row}");
    }
}

#[test]
fn sync_status_is_late_inside_the_labelled_outage_and_ok_before_it() {
    let f = fixture();
    let outage = labelled(f, "sync.lag").into_iter().next().expect("a sync outage");
    let start = chrono::DateTime::parse_from_rfc3339(&outage.start).expect("start");
    let late_at = (start + chrono::Duration::hours(5)).to_rfc3339();
    let rows = report(f, "sync-status", &["--to", &late_at]);
    let late: Vec<(&str, &str)> = rows.iter().filter(|r| str_of(r, "status") != "OK").map(|r| (str_of(r, "location"), str_of(r, "integration"))).collect();
    assert_eq!(late, [(outage.location.as_str(), outage.subject.as_str())], "{rows:?}");
    // LATE rows come first, and the hours since success are past the limit.
    assert_eq!(str_of(&rows[0], "status"), "LATE");
    assert!(rows[0]["hours_since_success"].as_f64().unwrap_or(0.0) > rows[0]["limit_hours"].as_f64().unwrap_or(f64::MAX));
    let before = (start - chrono::Duration::minutes(1)).to_rfc3339();
    let rows = report(f, "sync-status", &["--to", &before, "--location", &outage.location]);
    assert!(!rows.is_empty() && rows.iter().all(|r| str_of(r, "status") == "OK"), "{rows:?}");
}

#[test]
fn daily_reports_put_the_labelled_incident_first_on_its_day() {
    let f = fixture();
    let day = |i: &seedwatch::generate::TruthEntry| i.start[..10].to_string();
    let next = |d: &str| (chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("day") + chrono::Days::new(1)).to_string();
    // Failed logins: the lockout's account leads its location's day, with every failure counted.
    let lockout = labelled(f, "login.lockout").into_iter().next().expect("a lockout");
    let d = day(lockout);
    let rows = report(f, "failed-logins", &["--from", &d, "--to", &next(&d), "--location", &lockout.location]);
    assert_eq!(str_of(&rows[0], "user"), lockout.subject, "{rows:?}");
    let n = query_json(&f.archive(), &format!("SELECT count(*) AS n FROM login WHERE outcome = 'failure' AND \"user\" = '{}' AND location = '{}' AND date = '{d}'", lockout.subject, lockout.location));
    assert_eq!(rows[0]["failures"], n[0]["n"]);
    assert!(rows.iter().all(|r| str_of(r, "location") == lockout.location));
    // API errors: the failing key leads its day.
    let burst = labelled(f, "api.failed_burst").into_iter().next().expect("an API failure burst");
    let d = day(burst);
    let rows = report(f, "api-errors", &["--from", &d, "--to", &next(&d)]);
    assert_eq!(str_of(&rows[0], "key_id"), burst.subject, "{rows:?}");
    // Bulk exports in the week: the labelled export and bulk read, nothing else.
    let rows = report(f, "bulk-exports", &ALL);
    let who: BTreeSet<&str> = rows.iter().map(|r| str_of(r, "who")).collect();
    let want: BTreeSet<&str> = labelled(f, "audit.data_export").into_iter().chain(labelled(f, "api.bulk_export")).map(|i| i.subject.as_str()).collect();
    assert_eq!(who, want, "{rows:?}");
    // Users: the account that logged in from a new address shows one in its week.
    let new_ip = labelled(f, "login.new_ip").into_iter().next().expect("a new IP login");
    let after = (chrono::DateTime::parse_from_rfc3339(&new_ip.end).expect("end") + chrono::Duration::minutes(1)).to_rfc3339();
    let rows = report(f, "user-activity", &["--to", &after, "--location", &new_ip.location]);
    let row = rows.iter().find(|r| str_of(r, "user") == new_ip.subject).unwrap_or_else(|| panic!("{} in {rows:?}", new_ip.subject));
    assert!(row["new_addresses"].as_i64().unwrap_or(0) >= 1, "{row}");
    // The period before it, ending just before that login: nothing new.
    let rows = report(f, "user-activity", &["--to", &new_ip.start, "--location", &new_ip.location]);
    assert!(rows.iter().filter(|r| str_of(r, "user") == new_ip.subject).all(|r| r["new_addresses"] == 0), "{rows:?}");
}

#[test]
fn open_findings_follow_triage_and_outputs_and_errors_are_what_a_user_expects() {
    let f = fixture();
    // Triage happens in a copy: the shared fixture's archive stays as generated.
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    common::copy_dir(&f.archive(), &archive);
    let run = |args: &[&str]| {
        let a = archive.display().to_string();
        let out = seedwatch(&[&["report", "open-findings", "--archive", &a, "--format", "json"], args].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("json")
    };
    let open = run(&ALL);
    let n = query_json(&archive, "SELECT count(*) AS n FROM findings_latest WHERE status IN ('open', 'acknowledged')");
    assert_eq!(open.len() as u64, n[0]["n"].as_u64().unwrap_or(0));
    assert!(!open.is_empty());
    assert_eq!(str_of(&open[0], "severity"), "critical", "most severe first");
    let id = str_of(&open[0], "finding_id").to_string();
    let a = archive.display().to_string();
    for (verb, stays) in [("ack", true), ("resolve", false)] {
        let out = seedwatch(&["findings", verb, &id, "--archive", &a, "--note", "checked", "--by", "soc"]);
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        assert_eq!(run(&ALL).iter().any(|r| str_of(r, "finding_id") == id), stays, "after {verb}");
    }

    // A CSV file with a header and one line per row.
    let csv = dir.path().join("open.csv");
    let out = seedwatch(&["report", "open-findings", "--archive", &a, "--from", "2026-01-01", "--to", "2027-01-01", "--out", &csv.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&csv).expect("csv").lines().count(), open.len());
    assert!(text(&out.stderr).contains(&format!("{} rows written", open.len() - 1)), "{}", text(&out.stderr));

    // A Parquet file pyarrow reads back, with the same rows.
    let parquet = dir.path().join("open.parquet");
    let out = seedwatch(&["report", "open-findings", "--archive", &a, "--from", "2026-01-01", "--to", "2027-01-01", "--out", &parquet.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let read = std::process::Command::new(&python)
        .args(["-c", "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, sorted(t.column('finding_id').to_pylist())[0] if t.num_rows else '')", &parquet.display().to_string()])
        .output()
        .expect("python");
    assert!(read.status.success(), "pyarrow (./scripts/test.sh installs it): {}", text(&read.stderr));
    let remaining: BTreeSet<&str> = open.iter().map(|r| str_of(r, "finding_id")).filter(|f| *f != id).collect();
    assert_eq!(text(&read.stdout).trim(), format!("{} {}", remaining.len(), remaining.iter().next().copied().unwrap_or_default()));

    // Errors: one line each, naming what to do.
    let error = |args: &[&str]| {
        let out = seedwatch(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        text(&out.stderr).trim().to_string()
    };
    assert_eq!(error(&["report", "terminated-activity", "--archive", &a]), "error: report `terminated-activity` needs roster.csv: pass --roster FILE");
    let unknown = error(&["report", "payroll", "--archive", &a]);
    assert!(unknown.starts_with("error: no report `payroll` in reports (known: access-review, api-errors,"), "{unknown}");
    assert_eq!(error(&["report", "open-findings", "--archive", &a, "--from", "2026-10-02", "--to", "2026-10-01"]), "error: --from must be before --to");
    assert!(error(&["report", "open-findings", "--archive", &a, "--out", "x.json"]).contains("--out must end in .parquet or .csv"));

    // `list` shows every file with its title and review.
    let out = seedwatch(&["report", "list"]);
    let listed = text(&out.stdout);
    let files = std::fs::read_dir(common::repo().join("reports")).expect("reports").filter_map(|e| e.ok()).count();
    assert_eq!(listed.lines().count(), files, "{listed}");
    assert!(listed.contains("sync-status") && listed.contains("(daily (000 §5.2"), "{listed}");
}

/// Off-hours audit actions, computed apart from the report: Python's zoneinfo over the
/// generator's own events file and locations.csv.
const OFF_HOURS_PY: &str = r#"
import csv, json, sys
from datetime import datetime
from zoneinfo import ZoneInfo
locations = {r["location"]: r for r in csv.DictReader(open(sys.argv[2]))}
out = []
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("family") != "audit" or e.get("location") not in locations:
        continue
    l = locations[e["location"]]
    try:
        local = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).astimezone(ZoneInfo(l["timezone"])).strftime("%H:%M")
    except (KeyError, ValueError):
        continue
    if l["open"] == "00:00" and l["close"] == "24:00":
        continue
    inside = l["open"] <= local < l["close"] if l["open"] <= l["close"] else (local >= l["open"] or local < l["close"])
    if not inside:
        out.append([e["location"], e.get("actor", ""), e.get("action", ""), local])
print(json.dumps(sorted(out)))
"#;

#[test]
fn off_hours_changes_are_the_audit_actions_outside_each_locations_own_hours() {
    let f = fixture();
    let rows = report(f, "off-hours-changes", &ALL);
    let mut got: Vec<[String; 4]> = rows.iter().map(|r| ["location", "actor", "action", "local_time"].map(|c| str_of(r, c).to_string())).collect();
    got.sort();
    let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args(["-c", OFF_HOURS_PY, &f.data().join("events.ndjson").display().to_string(), &f.data().join("locations.csv").display().to_string()])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: Vec<[String; 4]> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got, want);
    // The 2 am account takeover's changes are among them.
    let takeover = labelled(f, "audit.mfa_disabled").into_iter().next().expect("an MFA change");
    assert!(got.iter().any(|r| r[0] == takeover.location && r[1] == takeover.subject), "{got:?}");
    // Without locations.csv the report says what it needs.
    let a = f.archive().display().to_string();
    let out = seedwatch(&["report", "off-hours-changes", "--archive", &a]);
    assert_eq!(text(&out.stderr).trim(), "error: report `off-hours-changes` needs locations.csv: pass --locations FILE");
}
