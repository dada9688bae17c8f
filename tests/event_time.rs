//! Event time across inputs and locations, through the one driver: logs given
//! as one file per family, or cut anywhere and given in any order; one location
//! delivered hours after the others; a line dated years ahead; any number of
//! partitions. Each must give exactly the findings of the single sorted file.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{run_options, seedwatch, text};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use seedwatch::generate::generate;
use seedwatch::pipeline::{run, RunReport};

const HOUR_MS: i64 = 3_600_000;

/// One generated data set (its lines, as sorted by the generator) and the
/// findings of running it as one file in one partition.
struct Sorted {
    dir: tempfile::TempDir,
    lines: Vec<String>,
    findings: BTreeSet<String>,
    report: RunReport,
}

fn sorted() -> &'static Sorted {
    static SORTED: OnceLock<Sorted> = OnceLock::new();
    SORTED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(&dir.path().join("data"), &common::options(21, 6, 7)).expect("generate");
        let text = std::fs::read_to_string(dir.path().join("data/events.ndjson")).expect("events");
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let report = run_files(dir.path(), "sorted", &[dir.path().join("data/events.ndjson")], 1);
        let findings = ids(&report);
        assert!(findings.len() > 20, "the data set must have incidents: {}", findings.len());
        assert_eq!(report.late_events, 0, "the sorted file has no late events");
        Sorted { dir, lines, findings, report }
    })
}

fn ids(report: &RunReport) -> BTreeSet<String> {
    report.findings.iter().map(|f| format!("{} {} {}", f.rule, f.license, f.finding_id)).collect()
}

/// Run `inputs` into a fresh archive `<dir>/<name>` with `partitions` tasks.
fn run_files(dir: &Path, name: &str, inputs: &[PathBuf], partitions: usize) -> RunReport {
    let data = dir.join("data");
    let mut opts = run_options(&data, &dir.join(name), &dir.join(name));
    std::fs::create_dir_all(dir.join(name)).expect("dir");
    opts.fingerprint_key = dir.join("fingerprint.key");
    opts.inputs = inputs.to_vec();
    opts.partitions = partitions;
    run(&opts).expect("run")
}

fn write_lines(path: &Path, lines: &[&String]) -> PathBuf {
    let mut body = lines.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n");
    body.push('\n');
    std::fs::write(path, body).expect("write");
    path.to_path_buf()
}

/// A string field of a line, `None` for lines that are not JSON objects (the generator
/// mixes in bad lines on purpose) or lack it.
fn field(line: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get(name).and_then(|f| f.as_str()).map(str::to_string)
}

/// A line's event time (RFC 3339 or epoch ms), `None` when it has none.
fn time_ms(line: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v.get("time")? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()),
        _ => None,
    }
}

fn missing_and_extra(expected: &BTreeSet<String>, got: &BTreeSet<String>) -> String {
    let missing: Vec<_> = expected.difference(got).collect();
    let extra: Vec<_> = got.difference(expected).collect();
    format!("{} missing: {missing:?}\n{} extra: {extra:?}", missing.len(), extra.len())
}

#[test]
fn one_file_per_family_finds_what_the_sorted_file_finds() {
    let s = sorted();
    let dir = s.dir.path().join("per-family");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut inputs = Vec::new();
    for family in ["login", "api", "sync", "audit"] {
        // Lines without a known family (bad lines) go with the logins.
        let of = |l: &String| field(l, "family").filter(|f| ["api", "sync", "audit"].contains(&f.as_str())).unwrap_or_else(|| "login".into());
        let lines: Vec<&String> = s.lines.iter().filter(|l| of(l) == family).collect();
        assert!(!lines.is_empty(), "{family}");
        inputs.push(write_lines(&dir.join(format!("{family}.ndjson")), &lines));
    }
    let report = run_files(s.dir.path(), "per-family-archive", &inputs, 2);
    assert_eq!(report.late_events, 0, "no event of a per-family export is late");
    assert_eq!(report.decode.events_total(), s.report.decode.events_total());
    let got = ids(&report);
    assert!(got == s.findings, "{}", missing_and_extra(&s.findings, &got));
}

#[test]
fn pieces_cut_anywhere_in_any_order_find_what_the_sorted_file_finds() {
    let s = sorted();
    let dir = s.dir.path().join("pieces");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut cuts: Vec<usize> = (0..6).map(|_| rng.random_range(1..s.lines.len())).collect();
    cuts.extend([0, s.lines.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces: Vec<PathBuf> = cuts
        .windows(2)
        .enumerate()
        .map(|(i, w)| write_lines(&dir.join(format!("piece-{i}.ndjson")), &s.lines[w[0]..w[1]].iter().collect::<Vec<_>>()))
        .collect();
    pieces.shuffle(&mut rng);
    let report = run_files(s.dir.path(), "pieces-archive", &pieces, 2);
    assert_eq!(report.late_events, 0);
    let got = ids(&report);
    assert!(got == s.findings, "{}", missing_and_extra(&s.findings, &got));
}

#[test]
fn a_location_delivered_six_hours_late_still_gets_its_incidents_and_nothing_more() {
    let s = sorted();
    // The location with the most findings, its lines arriving 6 hours after their time.
    let license = s
        .report
        .findings
        .iter()
        .fold(std::collections::BTreeMap::<&str, usize>::new(), |mut m, f| {
            *m.entry(f.license.as_str()).or_default() += 1;
            m
        })
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(l, _)| l.to_string())
        .expect("a license with findings");
    // Lines without a time (bad lines) keep their place after the line before them.
    let mut previous = i64::MIN;
    let mut lines: Vec<(i64, usize, &String)> = s
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let t = time_ms(l).unwrap_or(previous);
            previous = t;
            (t + if field(l, "license").as_deref() == Some(license.as_str()) { 6 * HOUR_MS } else { 0 }, i, l)
        })
        .collect();
    lines.sort();
    let delayed = write_lines(&s.dir.path().join("delayed.ndjson"), &lines.iter().map(|(_, _, l)| *l).collect::<Vec<_>>());
    let report = run_files(s.dir.path(), "delayed-archive", &[delayed], 2);
    assert_eq!(report.late_events, 0, "a location's backlog is judged in its own event time");
    assert!(s.report.findings.iter().any(|f| f.license == license));
    let got = ids(&report);
    assert!(got == s.findings, "{}", missing_and_extra(&s.findings, &got));
}

#[test]
fn one_line_dated_years_ahead_changes_no_finding() {
    let s = sorted();
    let first = s.lines.iter().find(|l| field(l, "family").is_some()).expect("a valid line");
    let mut v: serde_json::Value = serde_json::from_str(first).expect("json");
    v["time"] = serde_json::json!("2031-06-01T00:00:00Z");
    v["event_id"] = serde_json::json!("from-the-future");
    let ahead = v.to_string();
    let mut lines = vec![&ahead];
    lines.extend(s.lines.iter());
    let input = write_lines(&s.dir.path().join("future.ndjson"), &lines);
    let report = run_files(s.dir.path(), "future-archive", &[input], 2);
    let got = ids(&report);
    assert!(got == s.findings, "{}", missing_and_extra(&s.findings, &got));
    assert_eq!(report.decode.dead_total(), s.report.decode.dead_total() + 1, "the line is dead-lettered, not dropped");
    let out = seedwatch(&["query", "--archive", &s.dir.path().join("future-archive").display().to_string(), "--format", "csv", "SELECT line, reason_code FROM dead_letter WHERE reason_code = 'future_time'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "line,reason_code\n1,future_time");
}

/// Every table's content, minus what differs between any two runs (wall-clock stamps).
fn archive_contents(archive: &Path) -> String {
    let a = archive.display().to_string();
    let mut all = String::new();
    for sql in [
        "SELECT * FROM login ORDER BY event_id",
        "SELECT * FROM api ORDER BY event_id",
        "SELECT * FROM sync ORDER BY event_id",
        "SELECT * FROM audit ORDER BY event_id",
        "SELECT finding_id, version, status, rule, severity, license, location, subject, window_start, window_end, event_count, evidence, details FROM findings ORDER BY finding_id, version, status",
        "SELECT source, line, reason_code, reason FROM dead_letter ORDER BY source, line",
    ] {
        let out = seedwatch(&["query", "--archive", &a, "--format", "json", sql]);
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        all.push_str(&text(&out.stdout));
    }
    all
}

#[test]
fn one_two_and_four_partitions_give_identical_findings_and_archives() {
    let s = sorted();
    let input = s.dir.path().join("data/events.ndjson");
    let one = archive_contents(&s.dir.path().join("sorted"));
    assert!(one.matches("\"event_id\"").count() > s.lines.len() / 2, "the comparison must see the rows");
    for partitions in [2, 4] {
        let report = run_files(s.dir.path(), &format!("partitions-{partitions}"), std::slice::from_ref(&input), partitions);
        assert_eq!(report.partitions, partitions);
        let got = ids(&report);
        assert!(got == s.findings, "{partitions} partitions: {}", missing_and_extra(&s.findings, &got));
        let contents = archive_contents(&s.dir.path().join(format!("partitions-{partitions}")));
        assert!(contents == one, "{partitions} partitions: the archive differs from one partition's");
    }
}
