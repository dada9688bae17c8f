//! Detector goldens: `tests/golden/<case>/input.ndjson` through the shipped
//! rules must give exactly `expected.json`. `SEEDWATCH_UPDATE_GOLDEN=1`
//! rewrites the expected files; review the diff before committing.

mod common;

use std::path::Path;

use seedwatch::pipeline::detect_source;
use seedwatch_detect::{load_rules, RuleEngine};
use seedwatch_ingest::{source::reader_source, Decoder, Fingerprinter, Redactor};

fn fixed_clock() -> i64 {
    1_800_000_000_000
}

fn findings_for(input: &Path) -> String {
    let rules = load_rules(&common::repo().join("rules")).expect("rules");
    let policy = seedwatch_detect::policy::load_policy(&common::repo().join("rules/policy.yaml")).expect("policy");
    let reference = std::sync::Arc::new(seedwatch_detect::reference::Reference { policy, ..Default::default() });
    let engine = RuleEngine::with_reference(rules, reference).expect("engine").with_clock(fixed_clock);
    let fp = Fingerprinter::new(b"golden-secret-0123456789").expect("fingerprinter");
    let decoder = Decoder::new(Redactor::new(fp));
    let file = std::fs::File::open(input).expect("input");
    let detected = detect_source(engine, decoder, Box::new(reader_source("input.ndjson", file))).expect("detect");
    assert_eq!(detected.decode.dead_total(), 0, "golden inputs must be valid");
    let mut findings = detected.findings;
    seedwatch_detect::engine::sort_findings(&mut findings);
    serde_json::to_string_pretty(&findings).expect("json") + "\n"
}

#[test]
fn detector_goldens() {
    let root = common::repo().join("tests/golden");
    let update = std::env::var_os("SEEDWATCH_UPDATE_GOLDEN").is_some();
    let mut cases = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&root).expect("golden dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for dir in entries.into_iter().filter(|p| p.is_dir()) {
        let got = findings_for(&dir.join("input.ndjson"));
        let expected_path = dir.join("expected.json");
        if update {
            std::fs::write(&expected_path, &got).expect("write golden");
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert!(got == expected, "{} differs from {}:\n{got}", dir.display(), expected_path.display());
        cases += 1;
    }
    assert!(cases >= 3, "only {cases} golden cases found");
}
