//! The archive's disk fills up mid-run (issue 19): on a 1 MiB tmpfs the test mounts, `run`
//! stops with one line saying so, leaves no file of its own behind (its space is free again)
//! and no half file where queries look; once the disk is larger, the same command archives
//! every line exactly once and finds what a run on a roomy disk finds.
//!
//! Mounting needs root, as the test script's apt installs do; the test fails, not skips, without it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{seedwatch, text};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mkdir");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().expect("running mount");
        assert!(out.status.success(), "mounting a {size} tmpfs at {} (needs root): {}", at.display(), text(&out.stderr));
        Self(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().expect("running mount");
        assert!(out.status.success(), "remounting {}: {}", self.0.display(), text(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn finding_ids(archive: &Path) -> BTreeSet<String> {
    common::query_json(archive, "SELECT DISTINCT finding_id FROM findings").iter().filter_map(|r| r["finding_id"].as_str().map(str::to_string)).collect()
}

#[test]
fn a_full_disk_stops_the_run_cleanly_and_the_next_run_archives_everything_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = seedwatch(&["generate", "--out", &data.display().to_string(), "--days", "21", "--locations", "6"]);
    assert!(out.status.success(), "generate: {}", text(&out.stderr));
    let input = data.join("events.ndjson");
    let lines = std::fs::read_to_string(&input).expect("input").lines().count() as u64;
    let key = dir.path().join("fp.key").display().to_string();
    let signing = dir.path().join("signing.pem").display().to_string();
    let run = |archive: &Path| {
        seedwatch(&[
            "run", "--input", &input.display().to_string(), "--archive", &archive.display().to_string(),
            "--locations", &data.join("locations.csv").display().to_string(), "--roster", &data.join("roster.csv").display().to_string(),
            "--fingerprint-key", &key, "--signing-key", &signing, "--quiet",
        ])
    };

    // The archive of a roomy disk, to compare with.
    let roomy = dir.path().join("roomy");
    let out = run(&roomy);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // 1 MiB: the archive of this input needs about 3.
    let disk = Tmpfs::mount(&dir.path().join("disk"), "1m");
    let archive = disk.0.join("archive");
    let out = run(&archive);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the run did not stop: {stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].starts_with("error: the archive's disk is full") && error[0].contains("run the same command again"), "{stderr}");
    // No file of its own left behind: only committed files (in their tables' Delta logs) and the logs.
    let left: Vec<PathBuf> = common::files_under(&archive).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    let staged: Vec<&PathBuf> = left.iter().filter(|p| p.components().any(|c| c.as_os_str() == "_tmp")).collect();
    assert!(staged.is_empty(), "partial files left in the temp directory: {staged:?}");
    // What queries see is whole: every table reads, and holds no more than the input.
    let partial: u64 = ["login", "api", "sync", "audit", "dead_letter"].iter().map(|t| common::query_json(&archive, &format!("SELECT count(*) AS n FROM {t}"))[0]["n"].as_u64().unwrap_or(u64::MAX)).sum();
    assert!(partial < lines, "{partial} rows archived of {lines} on a full disk");

    // Space returns: the same command finishes the job, nothing lost or doubled.
    disk.resize("300m");
    let out = run(&archive);
    assert!(out.status.success(), "after space returned: {}", text(&out.stderr));
    let mut archived = 0;
    for table in ["login", "api", "sync", "audit"] {
        let row = &common::query_json(&archive, &format!("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM {table}"))[0];
        assert_eq!(row["n"], row["ids"], "{table}: an event archived twice");
        archived += row["n"].as_u64().unwrap_or(0);
    }
    archived += common::query_json(&archive, "SELECT count(*) AS n FROM dead_letter")[0]["n"].as_u64().unwrap_or(0);
    assert_eq!(archived, lines, "every line once, as an event or a dead letter");
    assert_eq!(finding_ids(&archive), finding_ids(&roomy), "the findings differ from a run with room");
    let staged: Vec<PathBuf> = common::files_under(&archive.join("_tmp")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    assert!(staged.is_empty(), "{staged:?}");
}
