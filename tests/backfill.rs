//! `seedwatch rules backfill`: a rule added after the fact finds on archived
//! history exactly what it would have found live, and nothing is written twice.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{seedwatch, text};
use seedwatch::generate::generate;
use seedwatch::pipeline::run;
use serde_json::Value;

fn finding_ids(archive: &Path, rule: &str) -> BTreeSet<String> {
    let out = seedwatch(&["query", "--archive", &archive.display().to_string(), "--format", "json", &format!("SELECT finding_id FROM findings WHERE rule = '{rule}'")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    rows.iter().filter_map(|r| r["finding_id"].as_str().map(str::to_string)).collect()
}

#[test]
fn a_rule_added_later_finds_on_history_what_it_would_have_found_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let truth = generate(&data, &common::options(21, 6, 42)).expect("generate");
    let added = ["login.failed_burst", "api.volume_spike"];

    // Live with the full catalog, and live without the two rules.
    let whole = run(&common::run_options(&data, &dir.path().join("whole"), dir.path())).expect("whole run");
    let partial_rules = dir.path().join("rules");
    common::copy_dir(&common::repo().join("rules"), &partial_rules);
    for file in ["login/failed_burst.yaml", "api/volume_spike.yaml"] {
        std::fs::remove_file(partial_rules.join(file)).expect("remove rule");
    }
    let archive = dir.path().join("partial");
    let mut opts = common::run_options(&data, &archive, dir.path());
    opts.rules = partial_rules;
    run(&opts).expect("partial run");
    for rule in added {
        assert!(finding_ids(&archive, rule).is_empty(), "{rule} ran live");
    }

    let a = archive.display().to_string();
    // The same reference data as live: baselines compare local hours (locations.csv).
    let (locations, roster) = (data.join("locations.csv").display().to_string(), data.join("roster.csv").display().to_string());
    let backfill = |extra: &[&str]| {
        let mut args = vec!["rules", "backfill", "--archive", &a, "--quiet", "--locations", &locations, "--roster", &roster];
        args.extend_from_slice(extra);
        let out = seedwatch(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };

    // The spike's day alone: its baseline needs weeks of history before --from,
    // which the warm-up rebuilds from the archive.
    let spike = truth.incidents.iter().find(|e| e.rule == "api.volume_spike").expect("a labelled spike");
    let spike_day = &spike.start[..10];
    let next_day = chrono::NaiveDate::parse_from_str(spike_day, "%Y-%m-%d").expect("date").succ_opt().expect("next day").to_string();
    let dry = backfill(&["--from", spike_day, "--to", &next_day, "--rule", "api.volume_spike", "--dry-run"]);
    assert!(dry.contains("dry run: 1 new finding(s), nothing written"), "{dry}");
    assert!(finding_ids(&archive, "api.volume_spike").is_empty(), "a dry run wrote findings");

    let out = backfill(&["--from", "2026-10-19", "--to", "2026-11-10", "--rule", "login.failed_burst", "--rule", "api.volume_spike"]);
    for rule in added {
        let live: BTreeSet<String> = whole.findings.iter().filter(|f| f.rule == rule).map(|f| f.finding_id.clone()).collect();
        assert!(!live.is_empty(), "{rule} found nothing live");
        assert_eq!(finding_ids(&archive, rule), live, "{rule} on history differs from live:\n{out}");
    }

    // The whole catalog over the whole range adds nothing: the live findings are recognised.
    let again = backfill(&["--from", "2026-10-19", "--to", "2026-11-10"]);
    assert!(again.contains("wrote 0 new finding(s)"), "{again}");
    assert!(again.lines().any(|l| l.starts_with("login.terminated_user") && l.split_whitespace().nth(1) == Some("1")), "{again}");
}

#[test]
fn backfill_errors_are_one_line_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--from", "2026-10-19", "--to", "2026-11-10", "--rule", "login.nope"], "unknown rule `login.nope`"),
        (&["--from", "2026-11-10", "--to", "2026-10-19"], "--from must be before --to"),
        (&["--from", "last tuesday", "--to", "2026-10-19"], "is not a date"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["rules", "backfill", "--archive", &a];
        args.extend_from_slice(extra);
        let out = seedwatch(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
