//! `seedwatch archive prune`: whole days past their table's retention go; the first day
//! still within it stays; days holding evidence of a kept finding stay; an unresolved
//! finding keeps its days whatever the findings' period; a period below the manual's
//! minimum is refused with one line naming the file, line and field; a dry run changes
//! nothing; the prune is recorded in the manifest, so the archive still verifies.
//!
//! Each test works on its own copy of the shared fixture's archive (21 days from
//! 2026-10-19, six locations) and prunes "as of" a date years later.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{copy_dir, copy_of_archive, fixture, query_json, repo, seedwatch, text, ArchiveCopy};

/// `archive prune` with `extra` flags: (exit code, stdout, stderr).
fn prune(copy: &ArchiveCopy, extra: &[&str]) -> (i32, String, String) {
    let (archive, key) = (copy.archive.display().to_string(), copy.key.display().to_string());
    let mut args = vec!["archive", "prune", "--archive", &archive, "--signing-key", &key];
    args.extend(extra);
    let out = seedwatch(&args);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Rows per date of `table`.
fn rows_by_date(archive: &Path, table: &str) -> BTreeMap<String, i64> {
    query_json(archive, &format!("SELECT date, count(*) AS n FROM {table} GROUP BY date"))
        .iter()
        .map(|r| (r["date"].as_str().unwrap_or_default().to_string(), r["n"].as_i64().unwrap_or(0)))
        .collect()
}

/// Evidence ids of the findings matching `filter` that no event table holds.
fn missing_evidence(archive: &Path, filter: &str) -> (i64, i64) {
    let all = "SELECT event_id FROM login UNION ALL SELECT event_id FROM api UNION ALL SELECT event_id FROM sync UNION ALL SELECT event_id FROM audit";
    let rows = query_json(
        archive,
        &format!("WITH ev AS (SELECT DISTINCT unnest(evidence) AS id FROM findings_latest WHERE {filter}), events AS ({all}) SELECT count(*) AS total, count(*) - count(e.event_id) AS missing FROM ev LEFT JOIN events e ON ev.id = e.event_id"),
    );
    (rows[0]["total"].as_i64().unwrap_or(-1), rows[0]["missing"].as_i64().unwrap_or(-1))
}

fn verify_clean(copy: &ArchiveCopy) {
    let out = seedwatch(&["archive", "verify", "--archive", &copy.archive.display().to_string(), "--signing-key", &copy.key.display().to_string()]);
    assert!(out.status.success(), "verify after prune: {}{}", text(&out.stdout), text(&out.stderr));
}

/// Dates (YYYY-MM-DD) of the lines starting with `prefix table`.
fn listed(stdout: &str, prefix: &str, table: &str) -> BTreeSet<String> {
    stdout.lines().filter_map(|l| l.strip_prefix(&format!("{prefix} {table} "))).map(|rest| rest[..10].to_string()).collect()
}

const TABLES: [&str; 6] = ["login", "api", "sync", "audit", "findings", "dead_letter"];

/// Rows per date of every table.
fn snapshot(archive: &Path) -> BTreeMap<&'static str, BTreeMap<String, i64>> {
    TABLES.iter().map(|t| (*t, rows_by_date(archive, t))).collect()
}

/// Prune as of `as_of` and check every day of every table against `cutoffs` (first day
/// kept per table; tables not named keep everything): a day from the cutoff on is
/// untouched and not listed; a day before it is either listed as kept (and untouched) or
/// listed as removed (and gone). Returns the output.
fn prune_and_check(copy: &ArchiveCopy, as_of: &str, cutoffs: &[(&str, &str)]) -> String {
    let before = snapshot(&copy.archive);
    let (code, stdout, stderr) = prune(copy, &["--as-of", as_of]);
    assert_eq!(code, 0, "{stderr}");
    for table in TABLES {
        let after = rows_by_date(&copy.archive, table);
        let cutoff = cutoffs.iter().find(|(t, _)| *t == table).map_or("0000-00-00", |(_, c)| *c);
        let (removed, kept) = (listed(&stdout, "removed", table), listed(&stdout, "kept", table));
        for (date, rows) in &before[table] {
            if date.as_str() >= cutoff {
                assert_eq!(after.get(date), Some(rows), "{table} {date} is within retention on {as_of}");
                assert!(!removed.contains(date) && !kept.contains(date), "{table} {date}: {stdout}");
            } else if kept.contains(date) {
                assert_eq!(after.get(date), Some(rows), "{table} {date} is kept for a finding");
            } else {
                assert!(removed.contains(date), "{table} {date} is past retention on {as_of} and neither removed nor kept: {stdout}");
                assert_eq!(after.get(date), None, "{table} {date} was removed");
            }
        }
    }
    stdout
}

#[test]
fn days_before_the_cutoff_go_the_cutoff_day_stays_and_evidence_days_are_kept() {
    let copy = copy_of_archive();
    let before = snapshot(&copy.archive);
    assert!(before["dead_letter"].values().sum::<i64>() > 0, "the fixture has dead letters");
    let evidence_before = missing_evidence(&copy.archive, "TRUE");
    assert!(evidence_before.0 > 0 && evidence_before.1 == 0, "{evidence_before:?}");

    // Three years after 2026-10-22: login and API keep 2026-10-22 on, the three days before
    // it are past retention; dead letters (1 year) all go; sync (5), audit (7) and findings
    // (indefinite) keep everything.
    let (code, dry, stderr) = prune(&copy, &["--as-of", "2029-10-22", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(snapshot(&copy.archive), before, "a dry run removes nothing");
    let stdout = prune_and_check(&copy, "2029-10-22", &[("login", "2026-10-22"), ("api", "2026-10-22"), ("dead_letter", "2028-10-22")]);
    assert_eq!(stdout.replace("removed", "would remove"), dry.replace("removed", "would remove"), "the dry run lists what the run does");
    assert_eq!(listed(&stdout, "removed", "dead_letter").len(), before["dead_letter"].len(), "{stdout}");
    let expired: BTreeSet<String> = ["2026-10-19", "2026-10-20", "2026-10-21"].map(String::from).into();
    let login_listed: BTreeSet<String> = listed(&stdout, "removed", "login").union(&listed(&stdout, "kept", "login")).cloned().collect();
    assert_eq!(login_listed, expired, "{stdout}");

    // Later, every login and API day is past retention: those holding evidence stay.
    let stdout = prune_and_check(&copy, "2029-12-01", &[("login", "2026-12-01"), ("api", "2026-12-01"), ("dead_letter", "2028-12-01")]);
    assert!(!listed(&stdout, "removed", "login").is_empty() && !listed(&stdout, "kept", "login").is_empty(), "login days with and without evidence: {stdout}");
    assert_eq!(missing_evidence(&copy.archive, "TRUE"), evidence_before, "every finding's evidence is still in the archive");
    verify_clean(&copy);
    // Pruning again on the same date finds nothing more to remove.
    let (_, again, _) = prune(&copy, &["--as-of", "2029-12-01"]);
    assert!(again.contains("prune: removed 0 day(s)"), "{again}");
}

#[test]
fn an_unresolved_finding_keeps_its_days_after_the_findings_period_and_a_resolved_one_does_not() {
    let copy = copy_of_archive();
    let rules = copy.dir.path().join("rules");
    copy_dir(&repo().join("rules"), &rules);
    let policy = std::fs::read_to_string(rules.join("policy.yaml")).expect("policy");
    std::fs::write(rules.join("policy.yaml"), policy.replace("findings: indefinite", "findings: 7 years")).expect("write policy");
    let rules = rules.display().to_string();

    // Resolve every finding of the oldest findings day; the others stay open.
    let day = query_json(&copy.archive, "SELECT min(date) AS d FROM findings")[0]["d"].as_str().expect("a findings day").to_string();
    let ids: Vec<String> = query_json(&copy.archive, &format!("SELECT finding_id FROM findings_latest WHERE date = '{day}'")).iter().map(|r| r["finding_id"].as_str().unwrap_or_default().to_string()).collect();
    assert!(!ids.is_empty());
    let (archive, key) = (copy.archive.display().to_string(), copy.key.display().to_string());
    for id in &ids {
        let out = seedwatch(&["findings", "resolve", id, "--archive", &archive, "--note", "handled", "--by", "dana", "--signing-key", &key]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let open_before = query_json(&copy.archive, "SELECT count(*) AS n FROM findings_latest WHERE status <> 'resolved'")[0]["n"].as_i64().unwrap_or(-1);
    let open_evidence = missing_evidence(&copy.archive, "status <> 'resolved'");

    // Twenty years on, everything is past every period but the unresolved findings' days.
    let (code, stdout, stderr) = prune(&copy, &["--as-of", "2046-12-01", "--rules", &rules]);
    assert_eq!(code, 0, "{stderr}");
    assert!(listed(&stdout, "removed", "findings").contains(&day), "the resolved findings' day goes: {stdout}");
    assert_eq!(query_json(&copy.archive, &format!("SELECT count(*) AS n FROM findings WHERE date = '{day}'"))[0]["n"].as_i64(), Some(0));
    assert_eq!(query_json(&copy.archive, "SELECT count(*) AS n FROM findings_latest WHERE status <> 'resolved'")[0]["n"].as_i64(), Some(open_before));
    assert_eq!(missing_evidence(&copy.archive, "status <> 'resolved'"), open_evidence, "every unresolved finding's evidence is kept");
    verify_clean(&copy);
}

#[test]
fn a_period_below_the_manuals_minimum_is_one_line_naming_file_line_and_field() {
    let copy = copy_of_archive();
    let rules = copy.dir.path().join("rules");
    copy_dir(&repo().join("rules"), &rules);
    let policy = std::fs::read_to_string(rules.join("policy.yaml")).expect("policy");
    std::fs::write(rules.join("policy.yaml"), policy.replace("audit: 7 years", "audit: 2 years")).expect("write policy");
    let line = std::fs::read_to_string(rules.join("policy.yaml")).expect("policy").lines().position(|l| l.trim_start().starts_with("audit: 2 years")).expect("the line") + 1;
    let (code, stdout, stderr) = prune(&copy, &["--rules", &rules.display().to_string()]);
    assert_eq!(code, 2, "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].ends_with(&format!("policy.yaml:{line}: retention: field `audit`: 2 years is below the minimum of 3 years (000 §5.4)")),
        "{stderr}"
    );
    assert_eq!(rows_by_date(&copy.archive, "audit"), rows_by_date(&fixture().archive(), "audit"), "nothing removed");
}

#[test]
fn a_compacted_month_goes_whole_once_its_last_day_is_past_retention() {
    let copy = copy_of_archive();
    let (archive, key) = (copy.archive.display().to_string(), copy.key.display().to_string());
    let out = seedwatch(&["archive", "compact", "--archive", &archive, "--signing-key", &key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = snapshot(&copy.archive);
    assert!(before["login"].keys().any(|d| d.as_str() < "2026-11-01") && before["login"].keys().any(|d| d.as_str() >= "2026-11-05"), "{:?}", before["login"]);
    // Login's cutoff is 2026-11-05: October's file goes (none of its days holds a finding's
    // evidence); November's stays whole, its first four days past retention included.
    let (code, stdout, stderr) = prune(&copy, &["--as-of", "2029-11-05"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("removed login 2026-10-19..2026-10-31: 1 file(s)")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("kept login 2026-11-01..") && l.contains("a compacted month's file")), "{stdout}");
    let after = rows_by_date(&copy.archive, "login");
    for (date, rows) in &before["login"] {
        let expected = if date.as_str() < "2026-11-01" { None } else { Some(rows) };
        assert_eq!(after.get(date), expected, "login {date}");
    }
    for table in ["sync", "audit", "findings"] {
        assert_eq!(rows_by_date(&copy.archive, table), before[table], "{table} is within retention");
    }
    verify_clean(&copy);
}
