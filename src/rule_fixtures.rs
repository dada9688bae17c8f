//! `seedwatch rules test`: every rule ships fixtures beside its YAML file,
//! `<name>.positive.ndjson` (must produce at least one finding of the rule)
//! and `<name>.negative.ndjson` (near misses: must produce none). Each rule
//! runs alone over its own fixtures; `schedule` and `reference` rules join
//! against `<rules>/fixtures/locations.csv` and `<rules>/fixtures/roster.csv`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, CompiledRule, RuleEngine};
use seedwatch_ingest::{file_source, ChunkLimits, Decoder, Fingerprinter, Redactor};

use crate::pipeline::detect_source;

/// Outcome of one rule's fixtures.
#[derive(Debug, Clone)]
pub struct FixtureResult {
    /// Rule id.
    pub rule: String,
    /// Findings of the rule over the positive fixture.
    pub positive: usize,
    /// Findings of the rule over the negative fixture.
    pub negative: usize,
    /// What is wrong; empty when the rule passes.
    pub problems: Vec<String>,
}

/// The fixture file of `kind` (`positive` or `negative`) for a rule file.
pub fn fixture_path(rule_file: &Path, kind: &str) -> PathBuf {
    let stem = rule_file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    rule_file.with_file_name(format!("{stem}.{kind}.ndjson"))
}

/// Reference files for fixtures live in `<rules>/fixtures/`.
fn fixture_reference(dir: &Path) -> Result<Reference> {
    let (locations, roster) = (dir.join("fixtures/locations.csv"), dir.join("fixtures/roster.csv"));
    let present = |p: &PathBuf| p.exists().then(|| p.clone());
    Ok(Reference::load(dir, present(&locations).as_deref(), present(&roster).as_deref())?)
}

fn findings_over(rule: &CompiledRule, reference: &Arc<Reference>, path: &Path, problems: &mut Vec<String>) -> Result<usize> {
    let source = file_source(path, ChunkLimits::default())?;
    let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"seedwatch-rule-fixtures")?));
    let engine = RuleEngine::with_reference(vec![rule.clone()], reference.clone())?;
    if let Some((_, why)) = engine.skipped().first() {
        problems.push(format!("cannot run: {why}; add it under fixtures/"));
    }
    let detected = detect_source(engine, decoder, Box::new(source))?;
    if detected.decode.dead_total() > 0 {
        problems.push(format!("{} has {} invalid lines", path.display(), detected.decode.dead_total()));
    }
    Ok(seedwatch_schemas::finding::latest_versions(&detected.findings).iter().filter(|f| f.rule == rule.id).count())
}

/// Run every rule under `dir` over its fixtures.
pub fn test_rules(dir: &Path) -> Result<Vec<FixtureResult>> {
    let rules = load_rules(dir)?;
    let reference = Arc::new(fixture_reference(dir)?);
    let mut results = Vec::with_capacity(rules.len());
    for rule in &rules {
        let mut problems = Vec::new();
        let mut count = |kind: &str| -> Result<usize> {
            let path = fixture_path(&rule.file, kind);
            if !path.exists() {
                problems.push(format!("missing fixture {}", path.display()));
                return Ok(0);
            }
            findings_over(rule, &reference, &path, &mut problems).with_context(|| format!("rule {}: {}", rule.id, path.display()))
        };
        let positive = count("positive")?;
        let negative = count("negative")?;
        if positive == 0 {
            problems.push("the positive fixture produced no finding".into());
        }
        if negative > 0 {
            problems.push(format!("the negative fixture produced {negative} finding(s)"));
        }
        results.push(FixtureResult { rule: rule.id.clone(), positive, negative, problems });
    }
    Ok(results)
}
