//! Every shipped rule fires on its positive fixture and stays quiet on its negative one.

mod common;

use seedwatch::rule_fixtures::{fixture_path, test_rules};

#[test]
fn every_shipped_rule_passes_its_fixtures() {
    let results = test_rules(&common::repo().join("rules")).expect("rules test");
    assert!(results.len() >= 13, "{} rules", results.len());
    let failures: Vec<_> = results.iter().filter(|r| !r.problems.is_empty()).map(|r| (&r.rule, &r.problems)).collect();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn swapped_fixtures_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = common::repo().join("rules/login/failed_burst.yaml");
    let rule = dir.path().join("failed_burst.yaml");
    std::fs::copy(&src, &rule).expect("copy rule");
    std::fs::copy(fixture_path(&src, "negative"), fixture_path(&rule, "positive")).expect("copy");
    std::fs::copy(fixture_path(&src, "positive"), fixture_path(&rule, "negative")).expect("copy");
    let results = test_rules(dir.path()).expect("rules test");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].problems.len(), 2, "{:?}", results[0].problems);

    std::fs::remove_file(fixture_path(&rule, "negative")).expect("rm");
    let results = test_rules(dir.path()).expect("rules test");
    assert!(results[0].problems.iter().any(|p| p.contains("missing fixture")), "{:?}", results[0].problems);
}
