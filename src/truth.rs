//! Scoring findings against the generator's `truth.json`.

use std::collections::HashSet;

use chrono::DateTime;
use seedwatch_schemas::Finding;

use crate::generate::{Truth, TruthEntry};

/// Slack around a labelled incident's time range when matching findings.
const MARGIN_MS: i64 = 3_600_000;

/// How the findings compare with the labels.
#[derive(Debug, Default)]
pub struct Score {
    /// Incidents found, with the ids of the findings that found them.
    pub found: Vec<(TruthEntry, Vec<String>)>,
    /// Incidents whose rule is loaded but did not fire.
    pub missed: Vec<TruthEntry>,
    /// Incidents whose rule is not loaded (not counted in recall).
    pub not_loaded: Vec<TruthEntry>,
    /// Look-alikes that fired their rule.
    pub lookalike_hits: Vec<(TruthEntry, String)>,
    /// Findings explained by no incident.
    pub unexpected: Vec<Finding>,
}

impl Score {
    /// Found / (found + missed), over incidents whose rule is loaded.
    pub fn recall(&self) -> f64 {
        let total = self.found.len() + self.missed.len();
        if total == 0 { 1.0 } else { self.found.len() as f64 / total as f64 }
    }
}

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).map_or(0, |d| d.timestamp_millis())
}

fn explains(entry: &TruthEntry, rule: &str, f: &Finding) -> bool {
    f.rule == rule
        && f.license == entry.license
        && (entry.subject.is_empty() || f.subject == entry.subject)
        && f.window_end >= ms(&entry.start) - MARGIN_MS
        && f.window_start <= ms(&entry.end) + MARGIN_MS
}

/// Compare `findings` with `truth`, counting only rules in `loaded`. A finding is judged
/// by its latest version.
pub fn score(truth: &Truth, findings: &[Finding], loaded: &HashSet<String>) -> Score {
    let findings = &seedwatch_schemas::finding::latest_versions(findings);
    let mut s = Score::default();
    let mut explained = vec![false; findings.len()];
    for entry in &truth.incidents {
        for (i, f) in findings.iter().enumerate() {
            if std::iter::once(&entry.rule).chain(&entry.also).any(|r| explains(entry, r, f)) {
                explained[i] = true;
            }
        }
        if !loaded.contains(&entry.rule) {
            s.not_loaded.push(entry.clone());
            continue;
        }
        let ids: Vec<String> = findings.iter().filter(|f| explains(entry, &entry.rule, f)).map(|f| f.finding_id.clone()).collect();
        if ids.is_empty() {
            s.missed.push(entry.clone());
        } else {
            s.found.push((entry.clone(), ids));
        }
    }
    for entry in &truth.lookalikes {
        if let Some(f) = findings.iter().find(|f| explains(entry, &entry.rule, f)) {
            s.lookalike_hits.push((entry.clone(), f.finding_id.clone()));
        }
    }
    s.unexpected = findings.iter().zip(explained).filter(|(_, e)| !e).map(|(f, _)| f.clone()).collect();
    s
}
