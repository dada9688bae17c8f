//! An archive in an S3-compatible bucket (`--archive s3://bucket/prefix`), against a real S3
//! server (moto, from PyPI; scripts/test.sh installs it and sets SEEDWATCH_PYTHON; without it
//! these tests fail rather than skip): a run writes the same tables it writes on disk, queries
//! and `archive verify` read them there, Python's deltalake reads them too, two writers at once
//! lose nothing, and a writer stopped after recording its files is finished by the next.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{options, query_json, run_args, seedwatch, split_by_license, text};
use seedwatch::generate::generate;

const TABLES: [&str; 6] = ["login", "api", "sync", "audit", "findings", "dead_letter"];

fn python() -> String {
    std::env::var("SEEDWATCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A moto S3 server on a free port, stopped when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    /// Holds the server's log (a pipe nobody reads would fill and stop the server).
    _log: tempfile::NamedTempFile,
}

impl S3Server {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let mut child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto with {} (run ./scripts/test.sh, which installs it): {e}", python()));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("moto exited ({status}) before listening (run ./scripts/test.sh, which installs moto[server]): {err}");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "moto did not listen on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint: format!("http://127.0.0.1:{port}"), _log: log }
    }

    /// The settings a client of this server needs, as the AWS tools name them.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "seedwatch-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "seedwatch-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Run tests/object_storage/s3.py with this server's settings.
    fn tool(&self, args: &[&str]) -> String {
        let script = common::repo().join("tests/object_storage/s3.py");
        let out = Command::new(python()).arg(&script).args(args).envs(self.env()).output().expect("running s3.py");
        assert!(out.status.success(), "s3.py {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn bucket(&self, name: &str) -> String {
        self.tool(&["create-bucket", name]);
        format!("s3://{name}")
    }

    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        serde_json::from_str(&self.tool(&["list", bucket, prefix])).expect("a JSON list")
    }

    /// `seedwatch` with this server's settings in the environment.
    fn seedwatch(&self, args: &[String]) -> Output {
        self.command(args).output().expect("running seedwatch")
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_seedwatch"));
        command.args(args).envs(self.env()).current_dir(common::repo());
        command
    }

    fn query(&self, archive: &str, sql: &str) -> Vec<serde_json::Value> {
        let out = self.seedwatch(&strings(&["query", "--archive", archive, "--format", "json", sql]));
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", text(&out.stdout)))
    }

    fn counts(&self, archive: &str) -> Vec<(String, u64)> {
        TABLES.iter().map(|t| (t.to_string(), self.query(archive, &format!("SELECT count(*) AS n FROM {t}"))[0]["n"].as_u64().unwrap_or(u64::MAX))).collect()
    }

    fn verify(&self, archive: &str, dir: &Path) -> Output {
        self.seedwatch(&strings(&["archive", "verify", "--quiet", "--archive", archive, "--signing-key", &dir.join("signing.pem").display().to_string()]))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn local_counts(archive: &Path) -> Vec<(String, u64)> {
    TABLES.iter().map(|t| (t.to_string(), query_json(archive, &format!("SELECT count(*) AS n FROM {t}"))[0]["n"].as_u64().unwrap_or(u64::MAX))).collect()
}

fn generated(days: u32, locations: usize, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(&dir.path().join("data"), &options(days, locations, seed)).expect("generate");
    dir
}

#[test]
fn a_run_into_a_bucket_writes_what_it_writes_on_disk_and_verify_finds_a_changed_object() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("archive");
    let archive = format!("{bucket}/tenants/acme");
    let dir = generated(10, 4, 21);
    let (data, events) = (dir.path().join("data"), dir.path().join("data/events.ndjson"));

    let local = dir.path().join("local");
    let out = seedwatch(&run_args(&data, dir.path(), &local.display().to_string(), std::slice::from_ref(&events)).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "local run: {}", text(&out.stderr));
    let out = s3.seedwatch(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&events)));
    assert!(out.status.success(), "run into {archive}: {}", text(&out.stderr));

    // Every table, under the prefix only, as a Delta table.
    let keys = s3.keys("archive", "");
    assert!(keys.iter().all(|k| k.starts_with("tenants/acme/")), "objects outside the prefix: {keys:?}");
    for table in TABLES {
        assert!(keys.iter().any(|k| k.starts_with(&format!("tenants/acme/{table}/_delta_log/"))), "{table} has no Delta log in the bucket");
    }
    assert!(!keys.iter().any(|k| k.starts_with("tenants/acme/_tmp/")), "staged files left after the run: {keys:?}");

    let expected = local_counts(&local);
    assert!(expected.iter().all(|(_, n)| *n > 0), "{expected:?}");
    assert_eq!(s3.counts(&archive), expected, "the bucket's tables against the same run on disk");
    let findings = "SELECT rule, license, count(*) AS n FROM findings_latest GROUP BY rule, license ORDER BY rule, license";
    assert_eq!(s3.query(&archive, findings), query_json(&local, findings), "findings in the bucket against those on disk");

    // Another Delta reader agrees, through the log.
    let theirs: serde_json::Value = serde_json::from_str(&s3.tool(&[&["delta-counts", &archive][..], &TABLES[..]].concat())).expect("counts");
    for (table, n) in &expected {
        assert_eq!(theirs[table.as_str()].as_u64(), Some(*n), "Python deltalake's count of {table} in the bucket");
    }

    // A second run of the same input adds nothing (ids are read back from the bucket).
    let out = s3.seedwatch(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&events)));
    assert!(out.status.success(), "second run: {}", text(&out.stderr));
    assert_eq!(s3.counts(&archive), expected, "a second run of the same input doubled rows");

    let out = s3.verify(&archive, dir.path());
    assert!(out.status.success(), "verify: {}{}", text(&out.stdout), text(&out.stderr));
    let head = s3.seedwatch(&strings(&["archive", "head", "--archive", &archive]));
    assert!(head.status.success() && text(&head.stdout).contains(':'), "head: {}{}", text(&head.stdout), text(&head.stderr));

    // Someone with write access to the bucket changes one byte of a data file, and drops
    // in a file of their own: verify names both and fails.
    let victim = keys.iter().find(|k| k.starts_with("tenants/acme/login/date=") && k.ends_with(".parquet")).expect("a login file");
    s3.tool(&["flip-byte", "archive", victim]);
    let planted = "tenants/acme/api/date=2026-10-20/part-planted.parquet";
    s3.tool(&["put", "archive", planted, "not really parquet"]);
    let out = s3.verify(&archive, dir.path());
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "verify passed a changed object: {report}{}", text(&out.stderr));
    let victim = victim.trim_start_matches("tenants/acme/");
    assert!(report.contains(&format!("ALTERED {victim}")), "{report}");
    assert!(report.contains(&format!("UNRECORDED {}", planted.trim_start_matches("tenants/acme/"))), "{report}");
}

#[test]
fn two_writers_on_one_bucket_commit_every_row() {
    let s3 = S3Server::start();
    let archive = format!("{}/shared", s3.bucket("group"));
    let dir = generated(10, 4, 22);
    let data = dir.path().join("data");
    // The input split by license: two detectors on two hosts, each with its own locations.
    let (a, b) = split_by_license(&data.join("events.ndjson"), dir.path());

    let alone = dir.path().join("alone");
    let out = seedwatch(&run_args(&data, dir.path(), &alone.display().to_string(), &[data.join("events.ndjson")]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (out_a, out_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| s3.command(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&a))).output().expect("run a"));
        let tb = s.spawn(|| s3.command(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&b))).output().expect("run b"));
        (ta.join().expect("thread"), tb.join().expect("thread"))
    });
    assert!(out_a.status.success(), "writer a: {}", text(&out_a.stderr));
    assert!(out_b.status.success(), "writer b: {}", text(&out_b.stderr));
    let expected = local_counts(&alone);
    let got = s3.counts(&archive);
    for table in ["login", "api", "sync", "audit"] {
        let find = |c: &[(String, u64)]| c.iter().find(|(t, _)| t == table).map(|(_, n)| *n);
        assert_eq!(find(&got), find(&expected), "{table}: rows of two writers at once in the bucket");
    }
    let out = s3.verify(&archive, dir.path());
    assert!(out.status.success(), "verify after two writers: {}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn compaction_in_a_bucket_keeps_every_row_and_an_interrupted_one_is_finished_by_the_next() {
    let s3 = S3Server::start();
    let archive = format!("{}/c", s3.bucket("compact"));
    let dir = generated(6, 3, 24);
    let data = dir.path().join("data");
    // Two runs over alternate lines: every day of every table gets two files, as a streaming
    // writer leaves them.
    let events = std::fs::read_to_string(data.join("events.ndjson")).expect("events");
    let (mut odd, mut even) = (String::new(), String::new());
    for (i, line) in events.lines().enumerate() {
        let half = if i % 2 == 0 { &mut even } else { &mut odd };
        half.push_str(line);
        half.push('\n');
    }
    let halves = [dir.path().join("even.ndjson"), dir.path().join("odd.ndjson")];
    std::fs::write(&halves[0], even).expect("write");
    std::fs::write(&halves[1], odd).expect("write");
    for half in &halves {
        let out = s3.seedwatch(&run_args(&data, dir.path(), &archive, std::slice::from_ref(half)));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // What compaction must keep: every row, every value (a digest of each table's content).
    let digest = |table: &str| {
        let sql = format!("SELECT count(*) AS n, count(DISTINCT event_id) AS ids, min(time) AS first, max(time) AS last, sum(length(coalesce(user, '')) + length(coalesce(src_ip, ''))) AS chars FROM {table}");
        s3.query(&archive, &sql)
    };
    let before: Vec<_> = ["login", "api"].iter().map(|t| digest(t)).collect();
    let counts = s3.counts(&archive);
    let login_files = |s3: &S3Server| s3.keys("compact", "c/login/").into_iter().filter(|k| k.ends_with(".parquet") && !k.contains("/_delta_log/")).collect::<Vec<_>>();
    let folders = login_files(&s3).iter().filter_map(|k| k.split('/').nth(2).map(str::to_string)).collect::<std::collections::BTreeSet<_>>();
    let days = folders.len();
    assert!(folders.iter().all(|f| f.starts_with("date=")), "{folders:?}");
    assert!(login_files(&s3).len() > days + days / 2, "about two files per day before: {:?}", login_files(&s3));
    // A quiet table's days go into one file per month.
    let months = folders.iter().map(|f| &f["date=".len().."date=YYYY-MM".len()]).collect::<std::collections::BTreeSet<_>>().len();
    let compact = |table: &str| {
        let mut args = strings(&["archive", "compact", "--archive", &archive, "--table", table, "--before", "2100-01-01"]);
        args.extend(["--signing-key".into(), dir.path().join("signing.pem").display().to_string()]);
        s3.command(&args)
    };

    // Stopped after its manifest entry: nothing visible changes, and the next compaction
    // finishes it (the staged files copied into place and committed) and does the rest.
    let out = compact("login").env("SEEDWATCH_TEST_STOP_COMPACTION", "recorded").output().expect("compact");
    assert_eq!(out.status.code(), Some(86), "the stop hook did not stop it: {}", text(&out.stderr));
    assert_eq!(s3.counts(&archive), counts, "rows after an interrupted compaction");
    assert_eq!(digest("login"), before[0]);
    for table in ["login", "api"] {
        let out = compact(table).output().expect("compact");
        assert!(out.status.success(), "compact {table}: {}", text(&out.stderr));
    }
    assert_eq!(s3.counts(&archive), counts, "rows after compaction");
    assert_eq!(["login", "api"].iter().map(|t| digest(t)).collect::<Vec<_>>(), before, "content after compaction");
    // One compacted file per month (a few hundred logins a day); the old objects and the
    // staged copies are gone.
    let files = login_files(&s3);
    assert_eq!(files.len(), months, "{files:?}");
    assert!(files.iter().all(|k| k.split('/').nth(2).is_some_and(|f| f.starts_with("month=")) && k.rsplit('/').next().is_some_and(|n| n.starts_with("part-compact-"))), "{files:?}");
    // Staged copies: the finished compactions removed theirs; the stopped one's stay for the
    // bucket's lifecycle rule (no lock tells a dead writer's staged files from a live one's),
    // and each is now in place under its name.
    let staged = s3.keys("compact", "c/_tmp/");
    let runs: std::collections::BTreeSet<&str> = staged.iter().filter_map(|k| k.split('/').nth(2)).collect();
    assert!(runs.len() <= 1, "staged objects of a finished compaction left behind: {staged:?}");
    for key in &staged {
        let name = key.rsplit('/').next().unwrap_or_default();
        assert!(files.iter().any(|f| f.ends_with(name)), "{key} is not in place: {files:?}");
    }
    let out = s3.verify(&archive, dir.path());
    assert!(out.status.success(), "verify after compaction: {}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn prune_in_a_bucket_removes_what_it_removes_on_disk() {
    let s3 = S3Server::start();
    let archive = format!("{}/p", s3.bucket("prune"));
    let dir = generated(8, 3, 25);
    let data = dir.path().join("data");
    let events = data.join("events.ndjson");
    let local = dir.path().join("local");
    let out = seedwatch(&run_args(&data, dir.path(), &local.display().to_string(), std::slice::from_ref(&events)).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s3.seedwatch(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&events)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = s3.counts(&archive);
    assert_eq!(before, local_counts(&local));
    // Three years and a bit later: login, API and dead-letter days are past retention, except
    // those a kept finding needs; audit (7 years), sync (5) and findings (indefinite) stay.
    let prune = |archive: &str| {
        let mut args = strings(&["archive", "prune", "--archive", archive, "--as-of", "2029-12-01"]);
        args.extend(["--signing-key".into(), dir.path().join("signing.pem").display().to_string()]);
        let out = s3.seedwatch(&args);
        assert!(out.status.success(), "prune {archive}: {}", text(&out.stderr));
        // The plan, without the location it was made for.
        text(&out.stdout).lines().filter(|l| l.starts_with("removed") || l.starts_with("kept")).map(|l| l.split(" file(s)").next().unwrap_or(l).to_string()).collect::<Vec<_>>()
    };
    let removed_on_disk = prune(&local.display().to_string());
    let removed_in_bucket = prune(&archive);
    assert!(removed_on_disk.iter().any(|l| l.starts_with("removed login")), "{removed_on_disk:?}");
    assert!(removed_on_disk.iter().any(|l| l.starts_with("kept")), "a finding's days are kept: {removed_on_disk:?}");
    assert_eq!(removed_in_bucket, removed_on_disk, "the same days go in the bucket as on disk");
    let after = s3.counts(&archive);
    assert_eq!(after, local_counts(&local), "rows left in the bucket and on disk");
    let login = |c: &[(String, u64)]| c.iter().find(|(t, _)| t == "login").map(|(_, n)| *n).unwrap_or_default();
    assert!(login(&after) < login(&before), "login rows before {before:?}, after {after:?}");
    // The objects went too, and the manifest says so.
    let left = s3.keys("prune", "p/login/date=").len();
    let on_disk = seedwatch_archive::ArchiveRoot::from(&local).data_files("login").expect("files").len();
    assert_eq!(left, on_disk, "login objects left");
    let out = s3.verify(&archive, dir.path());
    assert!(out.status.success(), "verify after prune: {}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn a_writer_stopped_after_recording_its_files_is_finished_by_the_next() {
    let s3 = S3Server::start();
    let archive = format!("{}/a", s3.bucket("restart"));
    let dir = generated(7, 3, 23);
    let data = dir.path().join("data");
    let events = data.join("events.ndjson");

    let alone = dir.path().join("alone");
    let out = seedwatch(&run_args(&data, dir.path(), &alone.display().to_string(), std::slice::from_ref(&events)).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = local_counts(&alone);

    // The first writer stops as a crash would, right after its manifest entry: its files are
    // staged in the bucket and recorded, none in place or in a table's log.
    let out = s3.command(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&events))).env("SEEDWATCH_TEST_STOP_WRITER", "recorded").output().expect("run");
    assert_eq!(out.status.code(), Some(86), "the stop hook did not stop the run: {}", text(&out.stderr));
    assert!(!s3.keys("restart", "a/_tmp/").is_empty(), "nothing staged before the stop");
    assert!(s3.counts(&archive).iter().all(|(_, n)| *n == 0), "rows visible before their commit: {:?}", s3.counts(&archive));

    // The next writer (another process, nothing shared with the first but the bucket) puts
    // the recorded files in place and commits them; its own rows are all duplicates.
    let out = s3.seedwatch(&run_args(&data, dir.path(), &archive, std::slice::from_ref(&events)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every event and every finding version: a run over files commits once, at the end of its
    // input, so the stop lost nothing the next run cannot finish.
    assert_eq!(s3.counts(&archive), expected, "rows after the restart");
    let distinct = s3.query(&archive, "SELECT count(DISTINCT event_id || '/' || license) AS n FROM login")[0]["n"].as_u64();
    assert_eq!(distinct, expected.first().map(|(_, n)| *n), "login rows twice after the restart");
    let out = s3.verify(&archive, dir.path());
    assert!(out.status.success(), "verify after the restart: {}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn settings_come_from_a_private_file_and_a_bad_one_is_named_by_line() {
    let s3 = S3Server::start();
    let archive = format!("{}/x", s3.bucket("settings"));
    let dir = generated(3, 2, 24);
    let data = dir.path().join("data");
    let settings = dir.path().join("s3.env");
    let mut file = std::fs::File::create(&settings).expect("create");
    for (key, value) in s3.env() {
        writeln!(file, "{key}={value}").expect("write");
    }
    drop(file);
    let args = run_args(&data, dir.path(), &archive, &[data.join("events.ndjson")]);
    let with_file = |settings: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_seedwatch"));
        command.args(&args).current_dir(common::repo()).env("SEEDWATCH_S3_CONFIG", settings);
        for (key, _) in s3.env() {
            command.env_remove(key);
        }
        command.output().expect("run")
    };

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = with_file(&settings);
        assert!(!out.status.success(), "a settings file others can read was used");
        assert!(text(&out.stderr).contains("chmod 600"), "{}", text(&out.stderr));
        std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let out = with_file(&settings);
    assert!(out.status.success(), "run with settings from {}: {}", settings.display(), text(&out.stderr));
    assert!(s3.counts(&archive)[0].1 > 0, "nothing archived");

    let bad = dir.path().join("bad.env");
    std::fs::write(&bad, "AWS_REGION=us-east-1\nAWS_SECRET_KEY_TYPO=x\n").expect("write");
    #[cfg(unix)]
    std::fs::set_permissions(&bad, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600)).expect("chmod");
    let out = with_file(&bad);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:2", bad.display())) && err.contains("AWS_SECRET_KEY_TYPO"), "{err}");
}

#[test]
fn an_archive_of_the_day_layout_in_a_bucket_is_migrated_in_place() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("migrate");
    let archive = format!("{bucket}/m");
    // The fixture of tests/table_format.rs: the day layout, as the previous release wrote it.
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = common::repo().join("tests/fixtures/day-layout-archive.tgz");
    let status = Command::new("tar").arg("xzf").arg(&fixture).arg("-C").arg(dir.path()).status().expect("tar");
    assert!(status.success(), "unpacking {}", fixture.display());
    std::fs::copy(dir.path().join("keys/signing.pem"), dir.path().join("signing.pem")).expect("key");
    s3.tool(&["upload-dir", "migrate", "m", &dir.path().join("archive").display().to_string()]);
    let content = |s3: &S3Server| -> Vec<Vec<String>> {
        TABLES
            .iter()
            .map(|t| {
                let mut rows: Vec<String> = s3.query(&archive, &format!("SELECT * FROM {t}")).iter().map(|r| r.to_string()).collect();
                rows.sort();
                rows
            })
            .collect()
    };
    let before = content(&s3);
    assert!(before[0].len() > 50, "login rows: {}", before[0].len());

    let key = dir.path().join("signing.pem").display().to_string();
    let out = s3.seedwatch(&strings(&["archive", "migrate", "--archive", &archive, "--signing-key", &key]));
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().filter(|l| l.starts_with("migrated ")).count(), TABLES.len(), "{}", text(&out.stdout));
    assert_eq!(content(&s3), before, "rows changed by the migration");
    let left: Vec<String> = s3.keys("migrate", "m/login/").into_iter().filter(|k| k.ends_with(".parquet") && !k.contains("/_delta_log/")).collect();
    assert!(!left.is_empty() && left.iter().all(|k| k.rsplit('/').next().is_some_and(|n| n.starts_with("part-migrate-"))), "{left:?}");
    let out = s3.verify(&archive, dir.path());
    assert!(out.status.success(), "verify after migrate: {}{}", text(&out.stdout), text(&out.stderr));
    // Another reader agrees.
    let counts: serde_json::Value = serde_json::from_str(&s3.tool(&["delta-counts", &archive, "login", "api"])).expect("json");
    assert_eq!(counts["login"].as_u64(), Some(before[0].len() as u64), "{counts}");
}
