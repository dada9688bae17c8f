//! Shared fixtures for the end-to-end tests: one generated data set and one
//! archive per test binary, built on first use.

#![allow(dead_code, unreachable_pub)]

pub mod broker;
pub mod http;
pub mod pki;
pub mod prometheus;
pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use chrono::NaiveDate;
use seedwatch::generate::{generate, GenerateOptions, Truth};
use seedwatch::pipeline::{run, RunOptions, RunReport};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub truth: Truth,
    pub report: RunReport,
}

impl Fixture {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }
    pub fn options(&self) -> RunOptions {
        run_options(&self.data(), &self.archive(), self.dir.path())
    }
}

pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from)
}

pub fn run_options(data: &Path, archive: &Path, dir: &Path) -> RunOptions {
    RunOptions {
        inputs: vec![data.join("events.ndjson")],
        archive: archive.into(),
        rules: repo().join("rules"),
        locations: Some(data.join("locations.csv")),
        roster: Some(data.join("roster.csv")),
        fingerprint_key: dir.join("fingerprint.key"),
        signing_key: dir.join("archive-signing.pem"),
        progress: false,
        allowed_lateness_ms: seedwatch_detect::engine::DEFAULT_ALLOWED_LATENESS_MS,
        max_clock_skew_ms: seedwatch::pipeline::DEFAULT_MAX_CLOCK_SKEW_MS,
        partitions: 2,
        alertmanager: None,
    }
}

pub fn options(days: u32, locations: usize, seed: u64) -> GenerateOptions {
    GenerateOptions { days, locations, seed, start: NaiveDate::from_ymd_opt(2026, 10, 19).unwrap_or_default() }
}

/// The default demo shape (21 days, 6 locations), generated and run once.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let truth = generate(&dir.path().join("data"), &options(21, 6, 42)).expect("generate");
        let opts = run_options(&dir.path().join("data"), &dir.path().join("archive"), dir.path());
        let report = run(&opts).expect("run");
        Fixture { dir, truth, report }
    })
}

pub fn seedwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seedwatch")).args(args).current_dir(repo()).output().expect("running seedwatch")
}

/// `seedwatch keys init --fingerprint-key KEY`, as an operator does once before the first
/// collector or detector (they refuse to start without the file). Returns `key`.
pub fn keys_init(key: &Path) -> PathBuf {
    let signing = key.with_extension("signing.pem");
    let out = seedwatch(&["keys", "init", "--fingerprint-key", &key.display().to_string(), "--signing-key", &signing.display().to_string()]);
    assert!(out.status.success(), "keys init: {}", text(&out.stderr));
    key.to_path_buf()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `seedwatch query --format json` over `archive`: the rows as JSON objects.
pub fn query_json(archive: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = seedwatch(&["query", "--archive", &archive.display().to_string(), "--format", "json", sql]);
    assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", text(&out.stdout)))
}

/// Every file under `dir`, at any depth (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// Copy a directory tree (a rules directory to edit in a test).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A copy of the shared fixture's archive, and the key that signed it.
pub struct ArchiveCopy {
    pub dir: tempfile::TempDir,
    pub archive: PathBuf,
    pub key: PathBuf,
}

/// A fresh copy of the shared fixture's archive, for a test that changes it.
pub fn copy_of_archive() -> ArchiveCopy {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    copy_dir(&f.archive(), &archive);
    ArchiveCopy { archive, key: f.dir.path().join("archive-signing.pem"), dir }
}

/// `seedwatch run` arguments over `inputs` into `archive` (a directory or `s3://…`), with the
/// data set's reference files and the keys in `dir`.
pub fn run_args(data: &Path, dir: &Path, archive: &str, inputs: &[PathBuf]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--quiet", "--archive", archive].iter().map(|s| s.to_string()).collect();
    for input in inputs {
        args.extend(["--input".into(), input.display().to_string()]);
    }
    for (flag, path) in [("--locations", data.join("locations.csv")), ("--roster", data.join("roster.csv")), ("--fingerprint-key", dir.join("fingerprint.key")), ("--signing-key", dir.join("signing.pem"))] {
        args.extend([flag.to_string(), path.display().to_string()]);
    }
    args
}

/// `events` split by license into two files in `dir` (`a.ndjson`, `b.ndjson`), alternate
/// licenses to each: the inputs of two writers on two hosts, each with its own locations.
pub fn split_by_license(events: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(events).expect("events");
    let license = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["license"].as_str().map(str::to_string)).unwrap_or_default();
    let mut licenses: Vec<String> = text.lines().map(license).collect();
    licenses.sort();
    licenses.dedup();
    assert!(licenses.len() >= 2, "{licenses:?}");
    let (mut first, mut second) = (String::new(), String::new());
    for line in text.lines() {
        let half = if licenses.iter().position(|l| *l == license(line)).unwrap_or(0) % 2 == 0 { &mut first } else { &mut second };
        half.push_str(line);
        half.push('\n');
    }
    let (a, b) = (dir.join("a.ndjson"), dir.join("b.ndjson"));
    std::fs::write(&a, first).expect("write");
    std::fs::write(&b, second).expect("write");
    (a, b)
}
