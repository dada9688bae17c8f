//! The archive's tables are Delta Lake tables: queries read what the log holds, so a file
//! in place but never committed is not read; a writer that stopped between placing its files
//! and committing them is finished by the next; two writers at once lose nothing; an archive
//! from before the table format is migrated with its row counts checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{options, query_json, seedwatch, text};
use seedwatch::generate::generate;

const TABLES: [&str; 6] = ["login", "api", "sync", "audit", "findings", "dead_letter"];

fn count(archive: &Path, table: &str) -> u64 {
    query_json(archive, &format!("SELECT count(*) AS n FROM {table}"))[0]["n"].as_u64().unwrap_or(u64::MAX)
}

fn counts(archive: &Path) -> Vec<(String, u64)> {
    TABLES.iter().map(|t| (t.to_string(), count(archive, t))).collect()
}

fn run(data: &Path, dir: &Path, archive: &Path, inputs: &[PathBuf]) -> std::process::Output {
    let args = common::run_args(data, dir, &archive.display().to_string(), inputs);
    seedwatch(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn verify_clean(dir: &Path, archive: &Path) {
    let out = seedwatch(&["archive", "verify", "--quiet", "--archive", &archive.display().to_string(), "--signing-key", &dir.join("signing.pem").display().to_string()]);
    assert!(out.status.success(), "verify: {}{}", text(&out.stdout), text(&out.stderr));
}

/// The commit files of a table's Delta log, oldest first.
fn commits(archive: &Path, table: &str) -> Vec<PathBuf> {
    let log = archive.join(table).join("_delta_log");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display())).map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    files
}

fn data_files(archive: &Path, table: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for day in std::fs::read_dir(archive.join(table)).expect("table dir") {
        let day = day.expect("entry").path();
        if day.file_name().is_some_and(|n| n.to_string_lossy().starts_with("date=") || n.to_string_lossy().starts_with("month=")) {
            files.extend(std::fs::read_dir(&day).expect("day dir").map(|e| e.expect("entry").path()));
        }
    }
    files.sort();
    files
}

struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    fn new(days: u32, locations: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(&dir.path().join("data"), &options(days, locations, seed)).expect("generate");
        Self { dir }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn events(&self) -> PathBuf {
        self.data().join("events.ndjson")
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn every_table_has_a_delta_log_and_a_file_outside_it_is_never_read() {
    let d = Data::new(7, 3, 11);
    let archive = d.path().join("archive");
    let out = run(&d.data(), d.path(), &archive, &[d.events()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for table in TABLES {
        assert!(!commits(&archive, table).is_empty(), "{table} has no Delta log");
    }
    let before = count(&archive, "login");
    assert!(before > 0);

    // A copy of a data file under a new name, in place but in no commit (a writer that died
    // before committing, or someone dropping a file in): the table does not read it.
    let file = data_files(&archive, "login").into_iter().next().expect("a login file");
    std::fs::copy(&file, file.with_file_name("part-dropped-in.parquet")).expect("copy");
    assert_eq!(count(&archive, "login"), before, "a file outside the log was read");
}

#[test]
fn a_writer_that_stopped_before_committing_to_the_log_is_finished_by_the_next() {
    let d = Data::new(7, 3, 12);
    let archive = d.path().join("archive");
    let out = run(&d.data(), d.path(), &archive, &[d.events()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = counts(&archive);

    // As if the run had stopped after recording and placing its last login files but before
    // its Delta commit: the newest commit of the table is gone, and so are its rows.
    let newest = commits(&archive, "login").pop().expect("a commit");
    std::fs::remove_file(&newest).expect("remove commit");
    let now = count(&archive, "login");
    assert!(now < before[0].1, "removing the newest commit hid nothing ({now} rows)");

    // The next writer (here a run of the same input: every event a duplicate) brings the
    // log in line with the manifest: every row is back, none twice.
    let out = run(&d.data(), d.path(), &archive, &[d.events()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counts(&archive), before);
    let distinct = query_json(&archive, "SELECT count(DISTINCT (license, event_id)) AS n FROM login")[0]["n"].as_u64();
    assert_eq!(distinct, Some(before[0].1));
    verify_clean(d.path(), &archive);
}

#[test]
fn two_writers_at_once_commit_every_row() {
    let d = Data::new(10, 4, 13);
    // The input split by license, one file per writer: two detectors on two hosts, each
    // with its own locations, writing one archive.
    let (a, b) = common::split_by_license(&d.events(), d.path());

    // The whole input through one writer, for the expected counts.
    let alone = d.path().join("alone");
    let out = run(&d.data(), d.path(), &alone, &[d.events()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let archive = d.path().join("archive");
    let spawn = |input: &Path| {
        Command::new(env!("CARGO_BIN_EXE_seedwatch")).args(common::run_args(&d.data(), d.path(), &archive.display().to_string(), &[input.to_path_buf()])).output()
    };
    let (out_a, out_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| spawn(&a));
        let tb = s.spawn(|| spawn(&b));
        (ta.join().expect("thread").expect("run a"), tb.join().expect("thread").expect("run b"))
    });
    assert!(out_a.status.success(), "writer a: {}", text(&out_a.stderr));
    assert!(out_b.status.success(), "writer b: {}", text(&out_b.stderr));
    for table in ["login", "api", "sync", "audit"] {
        assert_eq!(count(&archive, table), count(&alone, table), "{table}: rows of two writers at once");
    }
    verify_clean(d.path(), &archive);
}

#[test]
fn an_archive_from_before_the_table_format_is_migrated_with_its_rows() {
    let d = Data::new(7, 3, 14);
    let archive = d.path().join("archive");
    let out = run(&d.data(), d.path(), &archive, &[d.events()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = counts(&archive);

    // The layout of seedwatch before the table format: the same folders, no logs.
    for table in TABLES {
        std::fs::remove_dir_all(archive.join(table).join("_delta_log")).expect("remove log");
    }
    // Still readable as it is...
    assert_eq!(counts(&archive), before);
    // ...but not written to: one line naming the command that converts it.
    let out = run(&d.data(), d.path(), &archive, &[d.events()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("seedwatch archive migrate --archive"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let a = archive.display().to_string();
    let out = seedwatch(&["archive", "migrate", "--archive", &a]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (table, n) in &before {
        if *n > 0 {
            let line = stdout.lines().find(|l| l.starts_with(&format!("migrated {table}:"))).unwrap_or_else(|| panic!("no line for {table}: {stdout}"));
            let plain = line.replace(',', "");
            assert!(plain.contains(&format!(" {n} rows in the files {n} rows read through the table")), "{line}");
        }
    }
    assert_eq!(counts(&archive), before);
    let again = seedwatch(&["archive", "migrate", "--archive", &a]);
    assert!(text(&again.stdout).contains("nothing to do"), "{}", text(&again.stdout));

    // Written to again: the same input adds nothing, and the archive verifies.
    let out = run(&d.data(), d.path(), &archive, &[d.events()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counts(&archive), before);
    verify_clean(d.path(), &archive);
}

/// Everything a query reads of `table`, as one sorted text (rows compared whole).
fn content(archive: &Path, table: &str) -> Vec<String> {
    let mut rows: Vec<String> = query_json(archive, &format!("SELECT * FROM {table}")).iter().map(|r| r.to_string()).collect();
    rows.sort();
    rows
}

fn compact(dir: &Path, archive: &Path, stop: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seedwatch"));
    cmd.args(["archive", "compact", "--archive", &archive.display().to_string(), "--signing-key", &dir.join("signing.pem").display().to_string()]);
    if let Some(point) = stop {
        cmd.env("SEEDWATCH_TEST_STOP_COMPACTION", point);
    }
    cmd.output().expect("compact")
}

/// The input as two files of alternate lines, run one after the other into `archive`: most
/// days get two files per table. Returns the archive and the two inputs.
fn two_interleaved_runs(d: &Data) -> (PathBuf, PathBuf, PathBuf) {
    let lines: Vec<String> = std::fs::read_to_string(d.events()).expect("events").lines().map(str::to_string).collect();
    let (a, b) = (d.path().join("a.ndjson"), d.path().join("b.ndjson"));
    std::fs::write(&a, lines.iter().step_by(2).cloned().collect::<Vec<_>>().join("\n")).expect("write");
    std::fs::write(&b, lines.iter().skip(1).step_by(2).cloned().collect::<Vec<_>>().join("\n")).expect("write");
    let archive = d.path().join("archive");
    for input in [&a, &b] {
        let out = run(&d.data(), d.path(), &archive, &[input.clone()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    (archive, a, b)
}

#[test]
fn compaction_keeps_every_row_once_and_an_interrupted_one_is_invisible() {
    let d = Data::new(5, 3, 15);
    let (archive, a, b) = two_interleaved_runs(&d);
    let before: Vec<Vec<String>> = TABLES.iter().map(|t| content(&archive, t)).collect();
    let files_before = data_files(&archive, "api").len();

    // Stopped after recording the first day in the manifest, before anything went into place.
    let out = compact(d.path(), &archive, Some("recorded"));
    assert_eq!(out.status.code(), Some(86), "{}", text(&out.stderr));
    assert_eq!(TABLES.iter().map(|t| content(&archive, t)).collect::<Vec<_>>(), before, "an interrupted compaction showed");

    let out = compact(d.path(), &archive, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("compact api:")), "{stdout}");
    assert_eq!(TABLES.iter().map(|t| content(&archive, t)).collect::<Vec<_>>(), before, "rows changed by compaction");
    assert!(data_files(&archive, "api").len() < files_before, "{stdout}");
    let again = compact(d.path(), &archive, None);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(!text(&again.stdout).lines().any(|l| l.starts_with("compact api:")), "a compacted day was compacted again: {}", text(&again.stdout));
    // The next writer finishes the interrupted day (its files recorded, never committed) and
    // nothing is doubled.
    let out = run(&d.data(), d.path(), &archive, &[a.clone(), b.clone()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(TABLES.iter().take(4).map(|t| content(&archive, t)).collect::<Vec<_>>(), before[..4].to_vec());
    verify_clean(d.path(), &archive);
}

#[test]
fn the_logs_time_ranges_let_filters_skip_files_and_hide_no_row() {
    let d = Data::new(7, 3, 16);
    let (archive, _, _) = two_interleaved_runs(&d);
    for (table, column) in [("login", "time"), ("api", "time"), ("findings", "window_start")] {
        let total = count(&archive, table);
        // Every file's range, from the adds of the table's log.
        let mut edges = Vec::new();
        for commit in commits(&archive, table) {
            for line in std::fs::read_to_string(&commit).expect("commit").lines() {
                let action: serde_json::Value = serde_json::from_str(line).expect("a JSON action");
                let Some(stats) = action["add"]["stats"].as_str() else { continue };
                let stats: serde_json::Value = serde_json::from_str(stats).expect("stats");
                for bound in ["minValues", "maxValues"] {
                    edges.push(stats[bound][column].as_str().unwrap_or_else(|| panic!("{table}: no {bound}.{column} in {stats}")).to_string());
                }
            }
        }
        assert!(edges.len() >= 4, "{table}: {edges:?}");
        // Each file's ranges (time and `date`) are its rows', as another reader (pyarrow) finds them: our own
        // scans do not skip files by it today, Python deltalake and Spark do.
        let python = std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let check = r#"
import glob, json, sys, pyarrow.compute as pc, pyarrow.parquet as pq
table_dir, column = sys.argv[1], sys.argv[2]
wrong, checked = [], 0
for commit in sorted(glob.glob(table_dir + "/_delta_log/*.json")):
    for line in open(commit):
        add = json.loads(line).get("add")
        if not add:
            continue
        stats = json.loads(add["stats"])
        times = pq.read_table(table_dir + "/" + add["path"], columns=[column]).column(column)
        iso = lambda t: t.as_py().strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.as_py().microsecond // 1000:03d}Z"
        got = (iso(pc.min(times)), iso(pc.max(times)))
        if got != (stats["minValues"][column], stats["maxValues"][column]) or stats["numRecords"] != len(times):
            wrong.append((add["path"], got, stats))
        dates = pq.read_table(table_dir + "/" + add["path"], columns=["date"]).column("date")
        if (pc.min(dates).as_py(), pc.max(dates).as_py()) != (stats["minValues"]["date"], stats["maxValues"]["date"]):
            wrong.append((add["path"], "date", stats))
        checked += 1
print(json.dumps({"checked": checked, "wrong": wrong}))
"#;
        let out = Command::new(&python).args(["-c", check, &archive.join(table).display().to_string(), column]).output().expect("python");
        assert!(out.status.success(), "{python}: {}", text(&out.stderr));
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(result["wrong"], serde_json::json!([]), "{table}: statistics that differ from the file");
        assert_eq!(result["checked"].as_u64(), Some(edges.len() as u64 / 2), "{table}");
        // At each edge the rows on either side add up to the table, and the edge row is found:
        // a range that skipped a file holding matching rows would come up short.
        for edge in &edges {
            let sql = format!(
                "SELECT (SELECT count(*) FROM {table} WHERE {column} >= '{edge}') AS ge, (SELECT count(*) FROM {table} WHERE {column} < '{edge}') AS lt, \
                 (SELECT count(*) FROM {table} WHERE {column} = '{edge}') AS at"
            );
            let row = &query_json(&archive, &sql)[0];
            let n = |k: &str| row[k].as_u64().unwrap_or(u64::MAX);
            assert_eq!(n("ge") + n("lt"), total, "{table} split at {edge}: {row}");
            assert!(n("at") >= 1, "{table}: no row at the edge {edge} of a file's range");
        }
    }
}

/// `tests/fixtures/day-layout-archive.tgz`: an archive as seedwatch wrote it before month
/// files (the day layout: `date` a Delta partition column, not stored in the files), with
/// its signing key. One site, 2026-09-26 to 2026-10-03, written by two runs of half the
/// input each, then compacted before 2026-09-29.
fn day_layout_archive() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/day-layout-archive.tgz");
    let status = Command::new("tar").arg("xzf").arg(&fixture).arg("-C").arg(dir.path()).status().expect("tar");
    assert!(status.success(), "unpacking {}", fixture.display());
    // Where this file's helpers look for the key.
    std::fs::copy(dir.path().join("keys/signing.pem"), dir.path().join("signing.pem")).expect("the fixture's key");
    let archive = dir.path().join("archive");
    (dir, archive)
}

/// Rows per day of `table`.
fn per_day(archive: &Path, table: &str) -> Vec<serde_json::Value> {
    query_json(archive, &format!("SELECT date, count(*) AS n FROM {table} GROUP BY date ORDER BY date"))
}

#[test]
fn an_archive_of_the_day_layout_is_read_as_it_is_and_migrated_to_files_that_hold_their_date() {
    let (dir, archive) = day_layout_archive();
    let key = dir.path().join("signing.pem");
    let a = archive.display().to_string();
    // Read as it is.
    let before: Vec<Vec<String>> = TABLES.iter().map(|t| content(&archive, t)).collect();
    let days_before: Vec<_> = TABLES.iter().map(|t| per_day(&archive, t)).collect();
    assert_eq!(days_before[0].len(), 8, "{:?}", days_before[0]);
    // Not written to: one line naming the command that converts it.
    let out = compact(dir.path(), &archive, None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("day layout") && stderr.contains("seedwatch archive migrate --archive"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Its entries are signed: migrating without its key is refused, and changes nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_seedwatch")).args(["archive", "migrate", "--archive", &a, "--signing-key"]).arg(dir.path().join("no-such.pem")).output().expect("migrate");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert_eq!(TABLES.iter().map(|t| content(&archive, t)).collect::<Vec<_>>(), before);

    // Stopped with the first table's new files in place, then again once they are recorded:
    // queries still read the old files, and the next run cleans up or finishes.
    for stop in ["written", "recorded"] {
        let out = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
            .args(["archive", "migrate", "--archive", &a, "--signing-key"])
            .arg(&key)
            .env("SEEDWATCH_TEST_STOP_MIGRATION", stop)
            .output()
            .expect("migrate");
        assert_eq!(out.status.code(), Some(86), "{stop}: {}", text(&out.stderr));
        assert_eq!(TABLES.iter().map(|t| content(&archive, t)).collect::<Vec<_>>(), before, "after a migration stopped at `{stop}`");
    }
    let out = seedwatch(&["archive", "migrate", "--archive", &a, "--signing-key", &key.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (table, rows) in TABLES.iter().zip(&before) {
        let line = stdout.lines().find(|l| l.starts_with(&format!("migrated {table}:"))).unwrap_or_else(|| panic!("no line for {table}: {stdout}"));
        let files = data_files(&archive, table).len();
        assert!(line.contains(&format!("{files} file(s) ({files} rewritten with their date)")), "{line}");
        let n = rows.len();
        assert!(line.replace(',', "").contains(&format!(" {n} rows in the files {n} rows read through the table")), "{line}");
    }
    // The same rows, each day's where it was; the dates now come from the files themselves.
    assert_eq!(TABLES.iter().map(|t| content(&archive, t)).collect::<Vec<_>>(), before, "rows changed by the migration");
    assert_eq!(TABLES.iter().map(|t| per_day(&archive, t)).collect::<Vec<_>>(), days_before);
    for table in TABLES {
        let log = std::fs::read_to_string(commits(&archive, table).last().expect("a commit")).expect("commit");
        assert!(log.contains(r#""partitionColumns":[]"#), "{table}: {log}");
        assert!(data_files(&archive, table).iter().all(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-migrate-"))), "{table}: old files left");
    }
    verify_clean(dir.path(), &archive);
    let again = seedwatch(&["archive", "migrate", "--archive", &a, "--signing-key", &key.display().to_string()]);
    assert!(text(&again.stdout).contains("nothing to do"), "{}", text(&again.stdout));

    // Written to again: compaction folds each month's quiet days into one file.
    let out = compact(dir.path(), &archive, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let login = data_files(&archive, "login");
    let folders: Vec<String> = login.iter().filter_map(|f| f.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned())).collect();
    assert_eq!(folders, vec!["month=2026-09".to_string(), "month=2026-10".to_string()], "{login:?}");
    assert_eq!(TABLES.iter().map(|t| content(&archive, t)).collect::<Vec<_>>(), before, "rows changed by compaction");
    assert_eq!(TABLES.iter().map(|t| per_day(&archive, t)).collect::<Vec<_>>(), days_before);
    verify_clean(dir.path(), &archive);
}
