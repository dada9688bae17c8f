//! Findings: what a detector reports, one row per finding.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use crate::arrow::array::{ArrayRef, Int64Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder};
use crate::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use crate::arrow::error::ArrowError;
use crate::arrow::record_batch::RecordBatch;
use crate::arrow_schema::timestamp_type;
use crate::{Family, UnknownName};

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Review in the next business day.
    Low,
    /// Review today.
    Medium,
    /// Investigate now.
    High,
    /// Contain now; may need a regulator notification.
    Critical,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 4] = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    /// Lower-case name, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_string()))
    }
}

/// Most event ids a finding keeps as evidence.
pub const MAX_EVIDENCE: usize = 20;

/// One finding. Repeats of a rule on the same subject inside the rule's
/// suppression window update the same finding (count, window end, evidence).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// Stable id: a hash of rule, group key and first window start.
    pub finding_id: String,
    /// Rule id, e.g. `login.failed_burst`.
    pub rule: String,
    /// Human title of the rule.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// Family of the events the rule reads.
    pub family: Family,
    /// Tracking system of the events.
    pub system: String,
    /// State code.
    pub state: String,
    /// License the events belong to.
    pub license: String,
    /// Location the events belong to.
    pub location: String,
    /// The user, key id or integration the finding is about: for user-management
    /// actions, the account acted on.
    pub subject: String,
    /// Who acted (the user who logged in, the admin who changed an account), when the
    /// rule's events name one.
    pub actor: Option<String>,
    /// Event time of the first event counted (UTC ms).
    pub window_start: i64,
    /// Event time of the last event counted (UTC ms).
    pub window_end: i64,
    /// Events counted.
    pub event_count: i64,
    /// Up to [`MAX_EVIDENCE`] event ids.
    pub evidence: Vec<String>,
    /// Wall-clock time of detection (UTC ms).
    pub detected_at: i64,
    /// Rule-specific details as a JSON object.
    pub details: String,
}

impl serde::Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Schema of the `findings` table.
pub fn findings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let s = |n: &str| Field::new(n, DataType::Utf8, false);
            Arc::new(Schema::new(vec![
                s("finding_id"),
                s("rule"),
                s("title"),
                s("severity"),
                s("family"),
                s("system"),
                s("state"),
                s("license"),
                s("location"),
                s("subject"),
                // Added 2026-12-03; files written before it read as null.
                Field::new("actor", DataType::Utf8, true),
                Field::new("window_start", timestamp_type(), false),
                Field::new("window_end", timestamp_type(), false),
                Field::new("event_count", DataType::Int64, false),
                Field::new(
                    "evidence",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                Field::new("detected_at", timestamp_type(), false),
                s("details"),
            ]))
        })
        .clone()
}

/// Build a `findings` record batch.
pub fn findings_to_batch(findings: &[Finding]) -> Result<RecordBatch, ArrowError> {
    let n = findings.len();
    let mut strings: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut detected = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut count = Int64Builder::with_capacity(n);
    let mut evidence = ListBuilder::new(StringBuilder::new());
    let mut details = StringBuilder::with_capacity(n, n * 64);
    let mut actor = StringBuilder::with_capacity(n, n * 16);
    for f in findings {
        let values = [
            f.finding_id.as_str(),
            &f.rule,
            &f.title,
            f.severity.as_str(),
            f.family.as_str(),
            &f.system,
            &f.state,
            &f.license,
            &f.location,
            &f.subject,
        ];
        for (b, v) in strings.iter_mut().zip(values) {
            b.append_value(v);
        }
        actor.append_option(f.actor.as_deref());
        start.append_value(f.window_start);
        end.append_value(f.window_end);
        count.append_value(f.event_count);
        for id in &f.evidence {
            evidence.values().append_value(id);
        }
        evidence.append(true);
        detected.append_value(f.detected_at);
        details.append_value(&f.details);
    }
    let mut columns: Vec<ArrayRef> = strings.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect();
    columns.push(Arc::new(actor.finish()));
    columns.push(Arc::new(start.finish()));
    columns.push(Arc::new(end.finish()));
    columns.push(Arc::new(count.finish()));
    columns.push(Arc::new(evidence.finish()));
    columns.push(Arc::new(detected.finish()));
    columns.push(Arc::new(details.finish()));
    RecordBatch::try_new(findings_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_round_trip_into_a_batch() {
        let f = Finding {
            finding_id: "f1".into(),
            rule: "login.failed_burst".into(),
            title: "t".into(),
            severity: Severity::High,
            family: Family::Login,
            system: "metrc".into(),
            state: "CA".into(),
            license: "L1".into(),
            location: "L1".into(),
            subject: "alice".into(),
            actor: Some("alice".into()),
            window_start: 1,
            window_end: 2,
            event_count: 3,
            evidence: vec!["a".into(), "b".into()],
            detected_at: 4,
            details: "{}".into(),
        };
        let batch = findings_to_batch(&[f.clone(), f]).map_err(|e| e.to_string());
        let batch = batch.as_ref().map(|b| (b.num_rows(), b.num_columns()));
        assert_eq!(batch, Ok((2, 17)));
        assert_eq!("critical".parse::<Severity>().ok(), Some(Severity::Critical));
        assert!("urgent".parse::<Severity>().is_err());
    }
}
