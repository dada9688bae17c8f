//! Roles below SQL (issue 20): a role that sees one location tries every trick an analyst
//! could think of to read another tenant's rows, or to write; each returns nothing of the
//! other tenant or a clear refusal. Every output is scanned for the other licenses.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{seedwatch, text};
use serde_json::Value;

struct Setup {
    dir: tempfile::TempDir,
    archive: PathBuf,
    access: PathBuf,
    /// The license role `oakland` sees.
    mine: String,
    /// Every other license.
    others: Vec<String>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = seedwatch(&["generate", "--out", &data.display().to_string(), "--days", "14", "--locations", "6"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = dir.path().join("archive");
    let d = |p: &Path| p.display().to_string();
    let out = seedwatch(&[
        "run", "--input", &d(&data.join("events.ndjson")), "--archive", &d(&archive), "--locations", &d(&data.join("locations.csv")),
        "--roster", &d(&data.join("roster.csv")), "--fingerprint-key", &d(&dir.path().join("fp.key")), "--signing-key", &d(&dir.path().join("s.pem")), "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(data.join("locations.csv")).expect("locations");
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let oakland = rows.iter().find(|r| r[0] == "oakland").expect("an oakland location");
    let mine = oakland[1].to_string();
    let others: Vec<String> = rows.iter().map(|r| r[1].to_string()).filter(|l| *l != mine).collect();
    assert!(!others.is_empty());
    let access = dir.path().join("access.yaml");
    std::fs::write(
        &access,
        format!("locations: {}\nroles:\n  soc:\n    all: true\n    may: [report, export, triage]\n  oakland:\n    locations: [oakland]\n    may: [report]\n", d(&data.join("locations.csv"))),
    )
    .expect("access file");
    Setup { dir, archive, access, mine, others }
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `seedwatch query` as `role` (None: without an access file).
    fn query(&self, role: Option<&str>, sql: &str) -> Output {
        let archive = self.archive.display().to_string();
        let mut args = vec!["query", "--archive", &archive, "--format", "json", "--rules", "rules"];
        let access = self.access.display().to_string();
        if let Some(role) = role {
            args.extend(["--access", &access, "--role", role]);
        }
        args.push(sql);
        Command::new(env!("CARGO_BIN_EXE_seedwatch")).args(&args).current_dir(common::repo()).output().expect("query")
    }

    /// Rows of a query `role` may run.
    fn rows(&self, role: Option<&str>, sql: &str) -> Vec<Value> {
        let out = self.query(role, sql);
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        if role == Some("oakland") {
            self.assert_nothing_of_the_others(sql, &out);
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{sql}: {e}: {}", text(&out.stdout)))
    }

    /// A statement `role` may not run: refused with one `error:` line that says why.
    fn refused(&self, role: Option<&str>, sql: &str, why: &str) {
        let out = self.query(role, sql);
        assert_eq!(out.status.code(), Some(2), "{sql} was not refused: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(errors.len() == 1 && errors[0].contains(why), "{sql}: expected one error naming `{why}`: {stderr}");
        if role == Some("oakland") {
            self.assert_nothing_of_the_others(sql, &out);
        }
    }

    fn assert_nothing_of_the_others(&self, what: &str, out: &Output) {
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        for other in &self.others {
            assert!(!all.contains(other.as_str()), "{what}: shows license {other} to role oakland:\n{all}");
        }
    }

    fn licenses(&self, role: Option<&str>, sql: &str) -> BTreeSet<String> {
        self.rows(role, sql).iter().filter_map(|r| r["license"].as_str().map(str::to_string)).collect()
    }

    fn count(&self, role: Option<&str>, sql: &str) -> u64 {
        self.rows(role, sql)[0]["n"].as_u64().unwrap_or_else(|| panic!("{sql}: no count"))
    }
}

#[test]
fn a_role_that_sees_one_location_reads_nothing_of_another_by_any_sql_and_writes_nothing() {
    let s = setup();
    let me = Some("oakland");
    let mine: BTreeSet<String> = [s.mine.clone()].into_iter().collect();
    // Every table and view holds the role's license only (the whole archive holds six).
    assert!(s.licenses(Some("soc"), "SELECT DISTINCT license FROM api").len() >= 6);
    for table in ["login", "api", "sync", "audit", "findings", "findings_latest", "suppressed"] {
        let seen = s.licenses(me, &format!("SELECT DISTINCT license FROM {table}"));
        assert!(seen.is_subset(&mine), "{table}: {seen:?}");
    }
    assert_eq!(s.licenses(me, "SELECT DISTINCT license FROM api"), mine, "the role sees its own rows");
    // Counts agree with what an all-seeing role counts for that license.
    for table in ["login", "api", "sync", "audit", "findings"] {
        let all_of_mine = s.count(Some("soc"), &format!("SELECT count(*) AS n FROM {table} WHERE license = '{}'", s.mine));
        assert_eq!(s.count(me, &format!("SELECT count(*) AS n FROM {table}")), all_of_mine, "{table}");
    }
    // Dead letters cannot be attributed to a license: none for a role that sees only some.
    assert!(s.count(None, "SELECT count(*) AS n FROM dead_letter") > 0);
    assert_eq!(s.count(me, "SELECT count(*) AS n FROM dead_letter"), 0);

    // Subqueries, UNION, CTEs, joins to views, predicates naming another license.
    let tricks = [
        "SELECT DISTINCT license FROM (SELECT * FROM (SELECT * FROM api) a) b".to_string(),
        "SELECT license FROM login UNION SELECT license FROM api UNION SELECT license FROM sync UNION SELECT license FROM audit UNION SELECT license FROM findings".into(),
        "WITH x AS (SELECT * FROM sync), y AS (SELECT * FROM findings_latest) SELECT license FROM x UNION ALL SELECT license FROM y".into(),
        "SELECT DISTINCT f.license FROM findings_latest f JOIN api a ON a.license <> f.license OR a.license = f.license".into(),
        format!("SELECT license FROM api WHERE license IN ({})", s.others.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(",")),
        format!("SELECT license FROM findings WHERE license = '{}' OR 1 = 1", s.others[0]),
        "SELECT license FROM api WHERE license NOT IN (SELECT license FROM login)".into(),
    ];
    for sql in &tricks {
        let seen = s.licenses(me, sql);
        assert!(seen.is_subset(&mine), "{sql}: {seen:?}");
    }
    // Another location's findings and their evidence, by id.
    let theirs = s.rows(None, &format!("SELECT finding_id, evidence FROM findings_latest WHERE license = '{}' LIMIT 1", s.others[0]));
    if let Some(finding) = theirs.first() {
        let id = finding["finding_id"].as_str().expect("id");
        assert!(s.rows(me, &format!("SELECT * FROM findings WHERE finding_id = '{id}'")).is_empty());
        let evidence: Vec<String> = finding["evidence"].as_array().expect("evidence").iter().filter_map(|e| e.as_str().map(|e| format!("'{e}'"))).collect();
        for table in ["login", "api", "sync", "audit"] {
            assert!(s.rows(me, &format!("SELECT * FROM {table} WHERE event_id IN ({})", evidence.join(","))).is_empty(), "{table}");
        }
    }

    // The catalog names the tables and views, nothing unfiltered, and no data.
    let names: BTreeSet<String> = s.rows(me, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").iter().filter_map(|r| r["table_name"].as_str().map(str::to_string)).collect();
    let expected: BTreeSet<String> = ["login", "api", "sync", "audit", "findings", "dead_letter", "findings_latest", "suppressed"].iter().map(|t| t.to_string()).collect();
    assert_eq!(names, expected);
    s.rows(me, "SELECT * FROM information_schema.views");
    s.rows(me, "SELECT * FROM information_schema.columns");
    for sql in ["SHOW TABLES", "SHOW ALL", "SHOW COLUMNS FROM api", "DESCRIBE findings"] {
        let out = s.query(me, sql);
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        s.assert_nothing_of_the_others(sql, &out);
    }

    // Plans count the rows a filter drops: refused to a narrowed role.
    s.refused(me, "EXPLAIN SELECT * FROM api", "EXPLAIN is refused");
    s.refused(me, "EXPLAIN ANALYZE SELECT count(*) FROM api", "EXPLAIN is refused");

    // Nothing writes, for any role, and no file or table function reads around the tables.
    let copied = s.dir.path().join("copied.csv");
    let file = common::files_under(&s.archive.join("api")).into_iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).expect("a data file");
    for role in [me, Some("soc"), None] {
        s.refused(role, &format!("CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION '{}/api/'", s.archive.display()), "DDL not supported");
        s.refused(role, &format!("COPY (SELECT * FROM api) TO '{}' STORED AS CSV", copied.display()), "DML not supported");
        s.refused(role, "INSERT INTO findings SELECT * FROM findings", "DML not supported");
        s.refused(role, "CREATE VIEW everything AS SELECT * FROM api", "DDL not supported");
        s.refused(role, "DROP TABLE api", "DDL not supported");
        s.refused(role, "SET datafusion.execution.batch_size = 1", "Statement not supported");
        s.refused(role, &format!("SELECT * FROM '{}'", file.display()), "not found");
        s.refused(role, "SELECT * FROM '/etc/passwd'", "not found");
        s.refused(role, &format!("SELECT * FROM read_parquet('{}')", file.display()), "read_parquet");
        s.refused(role, "SELECT * FROM read_csv('/etc/passwd')", "read_csv");
        s.refused(role, "SELECT * FROM api_unfiltered", "not found");
    }
    assert!(!copied.exists(), "COPY wrote a file");
    // Those refusals changed nothing: the role still sees what it saw.
    assert_eq!(s.licenses(me, "SELECT DISTINCT license FROM api"), mine);

    // The interactive shell runs statements through the same door.
    let archive = s.archive.display().to_string();
    let access = s.access.display().to_string();
    let mut shell = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["query", "--archive", &archive, "--access", &access, "--role", "oakland", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell");
    shell.stdin.take().expect("stdin").write_all(b"SELECT DISTINCT license FROM api;\nCOPY (SELECT 1) TO '/tmp/seedwatch-shell-copy.csv';\n\\q\n").expect("write");
    let out = shell.wait_with_output().expect("shell");
    s.assert_nothing_of_the_others("the shell", &out);
    assert!(text(&out.stdout).contains(&s.mine), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("DML not supported"), "{}", text(&out.stderr));
}

#[test]
fn reports_exports_and_triage_need_the_role_s_permission_and_see_only_its_licenses() {
    let s = setup();
    let d = |p: &Path| p.display().to_string();
    let (archive, access, data) = (d(&s.archive), d(&s.access), s.data());
    let (locations, roster) = (d(&data.join("locations.csv")), d(&data.join("roster.csv")));
    // A report over the role's licenses, with the reference tables narrowed too.
    let report = |role: &str, name: &str| {
        seedwatch(&["report", name, "--archive", &archive, "--access", &access, "--role", role, "--locations", &locations, "--roster", &roster, "--format", "json"])
    };
    for name in ["access-review", "open-findings", "api-errors", "sync-status"] {
        let out = report("oakland", name);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        s.assert_nothing_of_the_others(name, &out);
        let all = report("soc", name);
        assert!(all.status.success(), "{name}: {}", text(&all.stderr));
    }
    // Exports and triage need `export` and `triage`, which oakland lacks.
    let out = seedwatch(&["export", "ocsf", "--archive", &archive, "--table", "findings", "--access", &access, "--role", "oakland"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("role `oakland` may not export from the archive (add `export` to its `may:`"), "{}", text(&out.stderr));
    let out = seedwatch(&["export", "ocsf", "--archive", &archive, "--table", "findings", "--access", &access, "--role", "soc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.others.iter().any(|l| text(&out.stdout).contains(l.as_str())), "soc exports every license");
    let theirs = s.rows(None, &format!("SELECT finding_id FROM findings_latest WHERE license = '{}' LIMIT 1", s.others[0]));
    let mine = s.rows(None, &format!("SELECT finding_id FROM findings_latest WHERE license = '{}' LIMIT 1", s.mine));
    let signing = d(&s.dir.path().join("s.pem"));
    let ack = |role: &str, id: &str| seedwatch(&["findings", "ack", id, "--archive", &archive, "--note", "on it", "--by", "dana", "--signing-key", &signing, "--access", &access, "--role", role]);
    if let Some(id) = mine.first().and_then(|r| r["finding_id"].as_str()) {
        let out = ack("oakland", id);
        assert!(text(&out.stderr).contains("may not change a finding's status"), "{}", text(&out.stderr));
    }
    // A triage role sees one location: another location's finding does not exist for it.
    let narrow_triage = s.dir.path().join("triage.yaml");
    std::fs::write(&narrow_triage, format!("locations: {locations}\nroles:\n  oakland-triage:\n    locations: [oakland]\n    may: [triage]\n")).expect("access");
    if let Some(id) = theirs.first().and_then(|r| r["finding_id"].as_str()) {
        let out = seedwatch(&["findings", "ack", id, "--archive", &archive, "--note", "x", "--by", "dana", "--signing-key", &signing, "--access", &d(&narrow_triage), "--role", "oakland-triage"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(&format!("no finding {id}")), "{}", text(&out.stderr));
        let status = s.rows(None, &format!("SELECT status FROM findings_latest WHERE finding_id = '{id}'"));
        assert_eq!(status[0]["status"], "open", "nothing was written");
    }
    // Maintenance changes every tenant's rows: refused to a role without `maintain`, which
    // only an all-seeing role may hold; with it, the command runs.
    let before = s.rows(None, "SELECT count(*) AS n FROM login");
    for (what, args) in [
        ("prune the archive", vec!["archive", "prune", "--archive", &archive, "--signing-key", &signing]),
        ("compact the archive", vec!["archive", "compact", "--archive", &archive, "--signing-key", &signing]),
        ("backfill rules into the archive", vec!["rules", "backfill", "--archive", &archive, "--from", "2026-10-19", "--to", "2026-10-20", "--signing-key", &signing, "--quiet"]),
    ] {
        let out = seedwatch(&[args.as_slice(), &["--access", &access, "--role", "soc"]].concat());
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&format!("role `soc` may not {what} (add `maintain` to its `may:`")), "{}", text(&out.stderr));
    }
    assert_eq!(s.rows(None, "SELECT count(*) AS n FROM login"), before, "nothing changed");
    let admin = s.dir.path().join("admin.yaml");
    std::fs::write(&admin, "roles:\n  archivist:\n    all: true\n    may: [maintain]\n  greedy:\n    licenses: [X]\n    may: [maintain]\n").expect("access");
    let out = seedwatch(&["archive", "compact", "--archive", &archive, "--signing-key", &signing, "--access", &d(&admin), "--role", "archivist"]);
    let err = text(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("role `greedy`: field `may`: `maintain` changes every tenant's rows"), "{err}");
    std::fs::write(&admin, "roles:\n  archivist:\n    all: true\n    may: [maintain]\n").expect("access");
    let out = seedwatch(&["archive", "compact", "--archive", &archive, "--signing-key", &signing, "--access", &d(&admin), "--role", "archivist"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.rows(None, "SELECT count(*) AS n FROM login"), before, "compaction keeps every row");

    // A role is not a thing to guess: unknown roles and roles without a file are one-line errors.
    let out = seedwatch(&["query", "--archive", &archive, "--access", &access, "--role", "nobody", "SELECT 1"]);
    assert!(text(&out.stderr).starts_with("error: role `nobody` is not in"), "{}", text(&out.stderr));
    let out = seedwatch(&["query", "--archive", &archive, "--access", &access, "SELECT 1"]);
    assert!(text(&out.stderr).contains("name a role with --role or SEEDWATCH_ROLE"), "{}", text(&out.stderr));
    // The environment names them as well as the flags.
    let out = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["query", "--archive", &archive, "--format", "json", "SELECT DISTINCT license FROM login"])
        .env("SEEDWATCH_ACCESS", &access)
        .env("SEEDWATCH_ROLE", "oakland")
        .output()
        .expect("query");
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.assert_nothing_of_the_others("SEEDWATCH_ROLE", &out);
}

/// Tenancy on the way in, embedded: with the operator's locations.csv, a line naming another
/// license's location or another state is a dead letter with its reason, and the same event id
/// sent for two licenses is two events, not a duplicate that hides one.
#[test]
fn a_line_cannot_borrow_another_tenant_s_location_or_hide_its_event_behind_a_shared_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |p: &Path| p.display().to_string();
    let locations = dir.path().join("locations.csv");
    std::fs::write(&locations, "location,license,state,system,timezone,open,close\noakland,L1,CA,metrc,America/Los_Angeles,09:00,21:00\ndenver,L2,CO,metrc,America/Denver,08:00,22:00\n").expect("locations");
    let line = |license: &str, location: &str, state: &str, id: &str| {
        format!(r#"{{"family":"login","time":"2026-11-01T10:00:00Z","event_id":"{id}","system":"metrc","state":"{state}","license":"{license}","location":"{location}","user":"ana","outcome":"success","src_ip":"10.0.0.1"}}"#)
    };
    let input = dir.path().join("events.ndjson");
    let lines = [line("L1", "oakland", "CA", "ev-1"), line("L2", "denver", "CO", "ev-1"), line("L2", "oakland", "CA", "ev-2"), line("L1", "oakland", "CO", "ev-3"), line("L9", "elsewhere", "WA", "ev-4")];
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    let archive = dir.path().join("archive");
    let out = seedwatch(&[
        "run", "--input", &d(&input), "--archive", &d(&archive), "--locations", &d(&locations), "--fingerprint-key", &d(&dir.path().join("fp.key")),
        "--signing-key", &d(&dir.path().join("s.pem")), "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = common::query_json(&archive, "SELECT license, event_id FROM login ORDER BY license");
    let events: Vec<(String, String)> = events.iter().map(|r| (r["license"].as_str().unwrap_or("").into(), r["event_id"].as_str().unwrap_or("").into())).collect();
    assert_eq!(events, vec![("L1".into(), "ev-1".into()), ("L2".into(), "ev-1".into()), ("L9".into(), "ev-4".into())]);
    let dead = common::query_json(&archive, "SELECT line, reason_code, reason FROM dead_letter ORDER BY line");
    let dead: Vec<(u64, String)> = dead.iter().map(|r| (r["line"].as_u64().unwrap_or(0), r["reason_code"].as_str().unwrap_or("").into())).collect();
    assert_eq!(dead, vec![(3, "location_mismatch".to_string()), (4, "location_mismatch".to_string())]);
}
