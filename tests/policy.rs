//! Changing a number in rules/policy.yaml changes behaviour, with no code.

mod common;

use std::sync::Arc;

use seedwatch_detect::policy::load_policy;
use seedwatch_detect::reference::Reference;
use seedwatch::pipeline::detect_source;
use seedwatch_detect::{load_rules, RuleEngine};
use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use seedwatch_schemas::{Finding, Severity};

fn findings(policy_text: &str, rule: &str, fixture: &str) -> Vec<Finding> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, policy_text).expect("write policy");
    let reference = Arc::new(Reference { policy: load_policy(&path).expect("policy"), ..Reference::default() });
    let rules: Vec<_> = load_rules(&common::repo().join("rules")).expect("rules").into_iter().filter(|r| r.id == rule).collect();
    let engine = RuleEngine::with_reference(rules, reference).expect("engine");
    let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"policy-test-secret").expect("fp")));
    let file = std::fs::File::open(common::repo().join("rules").join(fixture)).expect("fixture");
    detect_source(engine, decoder, Box::new(reader_source(fixture, file))).expect("detect").findings
}

#[test]
fn policy_numbers_drive_severity_and_limits() {
    let shipped = std::fs::read_to_string(common::repo().join("rules/policy.yaml")).expect("policy");
    let ca = "  CA: {sync_interval: 0s, sync_grace: 0s, mfa_required: true, key_rotation_days: 90, session_timeout: 30m}";
    assert!(shipped.contains(ca), "the test edits this line of policy.yaml");

    let mfa = findings(&shipped, "audit.mfa_disabled", "audit/mfa_disabled.positive.ndjson");
    assert_eq!(mfa.iter().map(|f| f.severity).collect::<Vec<_>>(), vec![Severity::Critical], "CA requires MFA");
    let relaxed = shipped.replace(ca, "  CA: {sync_interval: 12h, mfa_required: false}");
    let mfa = findings(&relaxed, "audit.mfa_disabled", "audit/mfa_disabled.positive.ndjson");
    assert_eq!(mfa.iter().map(|f| f.severity).collect::<Vec<_>>(), vec![Severity::High]);

    assert_eq!(findings(&shipped, "sync.lag", "sync/lag.positive.ndjson").len(), 1, "90 min without sync in real-time CA");
    assert_eq!(findings(&shipped, "api.failed_burst", "api/failed_burst.positive.ndjson").len(), 2, "Metrc 10 and BioTrack 5 per hour");
    let stricter = shipped.replace("metrc: {failed_api_per_hour: 10}", "metrc: {failed_api_per_hour: 11}");
    assert_ne!(stricter, shipped);
    let burst = findings(&stricter, "api.failed_burst", "api/failed_burst.positive.ndjson");
    assert_eq!(burst.iter().map(|f| f.system.as_str()).collect::<Vec<_>>(), vec!["biotrack"], "10 Metrc failures no longer reach 11");
    assert!(findings(&relaxed, "sync.lag", "sync/lag.positive.ndjson").is_empty(), "within a 12 h interval");
}
