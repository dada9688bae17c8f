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

/// Where a finding stands. The detector opens findings and resolves the ones that end by
/// themselves (a sync that recovers); people acknowledge, resolve or dismiss them
/// (`seedwatch findings ack|resolve|false-positive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Raised and not yet looked at, or grown since.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Dealt with, or ended by itself.
    Resolved,
    /// Not an incident.
    FalsePositive,
}

impl Status {
    /// All statuses.
    pub const ALL: [Status; 4] = [Status::Open, Status::Acknowledged, Status::Resolved, Status::FalsePositive];

    /// Name, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
            Status::FalsePositive => "false_positive",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownName(s.to_string()))
    }
}

/// Most event ids a finding keeps as evidence.
pub const MAX_EVIDENCE: usize = 20;

/// One version of a finding. Repeats of a rule on the same subject inside the rule's
/// suppression window update the same finding (count, window end, evidence); each
/// published change is a new version with the same `finding_id`, and the archive
/// keeps them all (the history is the audit trail).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// Stable id: a hash of rule, group key and first window start.
    pub finding_id: String,
    /// 1 when the finding opens, one more for each change the detector publishes. A
    /// person's status change keeps the version it was made on.
    pub version: i64,
    /// Rule id, e.g. `login.failed_burst`.
    pub rule: String,
    /// Human title of the rule.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// Where the finding stands.
    pub status: Status,
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
    /// Wall-clock time the finding was first detected (UTC ms).
    pub detected_at: i64,
    /// Wall-clock time of this version (UTC ms).
    pub updated_at: i64,
    /// A person's note on a status change.
    pub note: Option<String>,
    /// Who changed the status (a person's name); none for the detector's versions.
    pub changed_by: Option<String>,
    /// Rule-specific details as a JSON object.
    pub details: String,
    /// This version opened the finding or raised its severity: what alerting counts
    /// (`seedwatch_findings_total`). Not stored.
    #[serde(skip)]
    pub raised: bool,
}

impl serde::Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The newest version of each finding (the highest `version`, the later of equal ones),
/// in the order of their first versions.
pub fn latest_versions(findings: &[Finding]) -> Vec<Finding> {
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(findings.len());
    let mut latest: Vec<&Finding> = Vec::with_capacity(findings.len());
    for f in findings {
        match at.get(f.finding_id.as_str()) {
            Some(&i) if latest[i].version > f.version => {}
            Some(&i) => latest[i] = f,
            None => {
                at.insert(&f.finding_id, latest.len());
                latest.push(f);
            }
        }
    }
    latest.into_iter().cloned().collect()
}

/// Schema of the `findings` table.
pub fn findings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let s = |n: &str| Field::new(n, DataType::Utf8, false);
            // Columns added after the first release are nullable: files written before them
            // read as null (version 1, status open; see the `findings_latest` view).
            let added = |n: &str, t: DataType| Field::new(n, t, true);
            Arc::new(Schema::new(vec![
                s("finding_id"),
                added("version", DataType::Int64),
                s("rule"),
                s("title"),
                s("severity"),
                added("status", DataType::Utf8),
                s("family"),
                s("system"),
                s("state"),
                s("license"),
                s("location"),
                s("subject"),
                // Added 2026-12-03; files written before it read as null.
                added("actor", DataType::Utf8),
                Field::new("window_start", timestamp_type(), false),
                Field::new("window_end", timestamp_type(), false),
                Field::new("event_count", DataType::Int64, false),
                Field::new(
                    "evidence",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                Field::new("detected_at", timestamp_type(), false),
                added("updated_at", timestamp_type()),
                added("note", DataType::Utf8),
                added("changed_by", DataType::Utf8),
                s("details"),
            ]))
        })
        .clone()
}

/// Build a `findings` record batch.
pub fn findings_to_batch(findings: &[Finding]) -> Result<RecordBatch, ArrowError> {
    let n = findings.len();
    let strings = |value: &dyn Fn(&Finding) -> &str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        findings.iter().for_each(|f| b.append_value(value(f)));
        Arc::new(b.finish())
    };
    let optional = |value: &dyn Fn(&Finding) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        findings.iter().for_each(|f| b.append_option(value(f)));
        Arc::new(b.finish())
    };
    let times = |value: &dyn Fn(&Finding) -> i64| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        findings.iter().for_each(|f| b.append_value(value(f)));
        Arc::new(b.finish())
    };
    let integers = |value: &dyn Fn(&Finding) -> i64| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        findings.iter().for_each(|f| b.append_value(value(f)));
        Arc::new(b.finish())
    };
    let mut evidence = ListBuilder::new(StringBuilder::new());
    for f in findings {
        for id in &f.evidence {
            evidence.values().append_value(id);
        }
        evidence.append(true);
    }
    // In the order of `findings_schema`.
    let columns: Vec<ArrayRef> = vec![
        strings(&|f| &f.finding_id),
        integers(&|f| f.version),
        strings(&|f| &f.rule),
        strings(&|f| &f.title),
        strings(&|f| f.severity.as_str()),
        strings(&|f| f.status.as_str()),
        strings(&|f| f.family.as_str()),
        strings(&|f| &f.system),
        strings(&|f| &f.state),
        strings(&|f| &f.license),
        strings(&|f| &f.location),
        strings(&|f| &f.subject),
        optional(&|f| f.actor.as_deref()),
        times(&|f| f.window_start),
        times(&|f| f.window_end),
        integers(&|f| f.event_count),
        Arc::new(evidence.finish()),
        times(&|f| f.detected_at),
        times(&|f| f.updated_at),
        optional(&|f| f.note.as_deref()),
        optional(&|f| f.changed_by.as_deref()),
        strings(&|f| &f.details),
    ];
    RecordBatch::try_new(findings_schema(), columns)
}

/// Read findings back from a batch of the `findings` table (as written, or as SQL hands it
/// back: string views, and null for columns older files lack).
pub fn findings_from_batch(batch: &RecordBatch) -> Result<Vec<Finding>, ArrowError> {
    use crate::arrow::array::{Array, AsArray, StringArray};
    use crate::arrow::compute::cast;
    use crate::arrow::datatypes::{Int64Type, TimestampMillisecondType};
    let column = |name: &str, to: &DataType| -> Result<Option<ArrayRef>, ArrowError> { batch.column_by_name(name).map(|c| cast(c, to)).transpose() };
    let required = |name: &str, to: &DataType| -> Result<ArrayRef, ArrowError> { column(name, to)?.ok_or_else(|| ArrowError::SchemaError(format!("no column {name}"))) };
    let ms = crate::arrow_schema::timestamp_type();
    let strings: Vec<(&str, ArrayRef)> = ["finding_id", "rule", "title", "severity", "family", "system", "state", "license", "location", "subject", "details"]
        .into_iter()
        .map(|n| required(n, &DataType::Utf8).map(|c| (n, c)))
        .collect::<Result<_, _>>()?;
    let text = |name: &str, row: usize| -> String {
        strings.iter().find(|(n, _)| *n == name).map_or(String::new(), |(_, c)| c.as_string::<i32>().value(row).to_string())
    };
    let optional: Vec<(&str, Option<ArrayRef>)> = ["actor", "status", "note", "changed_by"].into_iter().map(|n| column(n, &DataType::Utf8).map(|c| (n, c))).collect::<Result<_, _>>()?;
    let maybe = |name: &str, row: usize| -> Option<String> {
        let c = optional.iter().find(|(n, _)| *n == name)?.1.as_ref()?;
        let c: &StringArray = c.as_string::<i32>();
        c.is_valid(row).then(|| c.value(row).to_string())
    };
    let times: Vec<ArrayRef> = ["window_start", "window_end", "detected_at"].into_iter().map(|n| required(n, &ms)).collect::<Result<_, _>>()?;
    let updated = column("updated_at", &ms)?;
    let (count, version) = (required("event_count", &DataType::Int64)?, column("version", &DataType::Int64)?);
    let evidence = required("evidence", &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))))?;
    let evidence = evidence.as_list::<i32>();
    let time = |i: usize, row: usize| times[i].as_primitive::<TimestampMillisecondType>().value(row);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let bad = |what: &str, value: String| ArrowError::ParseError(format!("row {row}: {what} `{value}`"));
        let severity = text("severity", row);
        let family = text("family", row);
        let status = maybe("status", row).unwrap_or_else(|| "open".into());
        let ids = evidence.value(row);
        out.push(Finding {
            finding_id: text("finding_id", row),
            version: version.as_ref().map(|v| v.as_primitive::<Int64Type>()).filter(|v| v.is_valid(row)).map_or(1, |v| v.value(row)),
            rule: text("rule", row),
            title: text("title", row),
            severity: severity.parse().map_err(|_| bad("severity", severity.clone()))?,
            status: status.parse().map_err(|_| bad("status", status.clone()))?,
            family: family.parse().map_err(|_| bad("family", family.clone()))?,
            system: text("system", row),
            state: text("state", row),
            license: text("license", row),
            location: text("location", row),
            subject: text("subject", row),
            actor: maybe("actor", row),
            window_start: time(0, row),
            window_end: time(1, row),
            event_count: count.as_primitive::<Int64Type>().value(row),
            evidence: ids.as_string::<i32>().iter().flatten().map(str::to_string).collect(),
            detected_at: time(2, row),
            updated_at: updated.as_ref().map(|u| u.as_primitive::<TimestampMillisecondType>()).filter(|u| u.is_valid(row)).map_or(time(2, row), |u| u.value(row)),
            note: maybe("note", row),
            changed_by: maybe("changed_by", row),
            details: text("details", row),
            raised: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_round_trip_into_a_batch() {
        let f = Finding {
            finding_id: "f1".into(),
            version: 1,
            rule: "login.failed_burst".into(),
            title: "t".into(),
            severity: Severity::High,
            status: Status::Open,
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
            updated_at: 5,
            note: None,
            changed_by: None,
            details: "{}".into(),
            raised: true,
        };
        let back = findings_to_batch(&[f.clone()]).and_then(|b| findings_from_batch(&b)).map_err(|e| e.to_string());
        assert_eq!(back, Ok(vec![Finding { raised: false, ..f.clone() }]));
        let batch = findings_to_batch(&[f.clone(), f]).map_err(|e| e.to_string());
        let batch = batch.as_ref().map(|b| (b.num_rows(), b.num_columns()));
        assert_eq!(batch, Ok((2, 22)));
        assert_eq!("critical".parse::<Severity>().ok(), Some(Severity::Critical));
        assert!("urgent".parse::<Severity>().is_err());
    }
}
