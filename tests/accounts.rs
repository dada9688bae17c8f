//! Findings about accounts name the right one: the account acted on (not the admin
//! who acted) for user management, and the roster's account at the event's own place.

mod common;

use std::sync::Arc;

use seedwatch::pipeline::detect_source;
use seedwatch_detect::reference::{load_roster, Reference};
use seedwatch_detect::{load_rules, RuleEngine};
use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use seedwatch_schemas::Finding;

fn findings(rules: &[&str], reference: Reference, lines: &[String]) -> Vec<Finding> {
    let rules: Vec<_> = load_rules(&common::repo().join("rules")).expect("rules").into_iter().filter(|r| rules.contains(&r.id.as_str())).collect();
    let engine = RuleEngine::with_reference(rules, Arc::new(reference)).expect("engine");
    let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"accounts-test-secret").expect("fp")));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut found = detect_source(engine, decoder, Box::new(reader_source("accounts", std::io::Cursor::new(text.into_bytes())))).expect("detect").findings;
    found.sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
    found
}

fn audit(time: &str, actor: &str, action: &str, target: Option<&str>) -> String {
    let target = target.map_or(String::new(), |t| format!(r#","target":"{t}""#));
    format!(r#"{{"time":"{time}","family":"audit","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","actor":"{actor}","action":"{action}"{target}}}"#)
}

fn login(time: &str, license: &str, location: &str, user: &str) -> String {
    format!(r#"{{"time":"{time}","family":"login","system":"metrc","state":"CA","license":"{license}","location":"{location}","user":"{user}","outcome":"success","src_ip":"203.0.113.10"}}"#)
}

#[test]
fn user_management_findings_name_the_account_acted_on_and_the_actor() {
    let lines = [
        audit("2026-11-05T02:13:00-08:00", "admin.oak", "user_created", Some("new.clerk")),
        audit("2026-11-05T02:17:00-08:00", "admin.oak", "role_changed", Some("new.clerk")),
        audit("2026-11-05T02:20:00-08:00", "admin.oak", "mfa_disabled", None),
    ];
    let got: Vec<(String, String, Option<String>)> = findings(&["audit.user_created", "audit.role_changed", "audit.mfa_disabled"], Reference::default(), &lines)
        .into_iter()
        .map(|f| (f.rule, f.subject, f.actor))
        .collect();
    let admin = Some("admin.oak".to_string());
    assert_eq!(
        got,
        vec![
            // On one's own account (no target): the actor is the subject too.
            ("audit.mfa_disabled".to_string(), "admin.oak".to_string(), admin.clone()),
            ("audit.role_changed".to_string(), "new.clerk".to_string(), admin.clone()),
            ("audit.user_created".to_string(), "new.clerk".to_string(), admin),
        ]
    );
}

#[test]
fn a_terminated_account_at_one_operator_says_nothing_about_the_same_name_at_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roster = dir.path().join("roster.csv");
    // jsmith left operator A's Oakland store; another jsmith works at operator B's Denver store.
    std::fs::write(&roster, "user,location,role,status,terminated_at\njsmith,oakland,manager,terminated,2026-08-30\njsmith,denver,clerk,active,\n").expect("roster");
    let reference = Reference { roster: load_roster(&roster, &Default::default()).expect("roster"), ..Reference::default() };
    let lines = [
        login("2026-11-05T11:00:00-07:00", "402R-00042", "denver", "jsmith"),
        login("2026-11-05T11:05:00-08:00", "C10-0000123-LIC", "oakland", "jsmith"),
    ];
    let got: Vec<(String, String)> = findings(&["login.terminated_user"], reference, &lines).into_iter().map(|f| (f.location, f.subject)).collect();
    assert_eq!(got, vec![("oakland".to_string(), "jsmith".to_string())]);
}
