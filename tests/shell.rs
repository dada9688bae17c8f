//! `seedwatch query` without a statement: the interactive shell, fed a script on stdin.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{fixture, query_json, text};

/// Run the shell over the fixture's archive with `script` on stdin: (stdout, stderr).
fn shell(script: &str) -> (String, String) {
    let archive = fixture().archive().display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedwatch"))
        .args(["query", "--archive", &archive, "--format", "csv"])
        .current_dir(common::repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("seedwatch");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write script");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_shell_runs_multi_line_statements_lists_tables_and_columns_and_survives_errors() {
    let f = fixture();
    let logins = query_json(&f.archive(), "SELECT count(*) AS n FROM login")[0]["n"].as_u64().expect("count");
    let script = "SELECT count(*)\n  AS n\nFROM login;\nSELECT nope FROM login;\n\\d\n\\d sync\n\\d payroll\nSELECT 41 + 1 AS answer;\n\\q\nSELECT 'after quit';\n";
    let (out, err) = shell(script);
    // The statement over three lines ran, and gave what `query` gives.
    assert!(out.contains(&format!("n\n{logins}\n")), "{out}");
    // A failing statement prints its error; the next ones still run.
    assert!(err.contains("error:") && err.contains("nope"), "{err}");
    assert!(out.contains("answer\n42\n"), "{out}");
    // \d: every table and view; \d sync: its columns with types.
    for table in ["login", "api", "sync", "audit", "findings", "dead_letter", "findings_latest"] {
        assert!(out.contains(&format!("{table},")), "{table} missing from \\d: {out}");
    }
    assert!(out.contains("lag_seconds,Int64"), "{out}");
    assert!(err.contains("no table or view `payroll`"), "{err}");
    // \q ends the session: what follows is not run.
    assert!(!out.contains("after quit"), "{out}");
}

#[test]
fn a_script_that_ends_without_a_semicolon_still_runs_its_last_statement() {
    let (out, _) = shell("SELECT 7 AS seven");
    assert!(out.contains("seven\n7\n"), "{out}");
}
