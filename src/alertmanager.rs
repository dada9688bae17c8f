//! Findings as Alertmanager alerts (`run`/`detect --alertmanager URL`, and
//! `findings resolve|false-positive --alertmanager URL`). Each published version
//! is posted to Alertmanager's v2 API (`POST /api/v2/alerts`); Alertmanager does
//! the grouping, silencing, inhibition and delivery (Slack, PagerDuty, e-mail).
//!
//! An alert is identified by its labels, so every version of a finding updates
//! the same alert: `finding_id` is a label, and so are rule, severity, state,
//! license and location for routing. A resolved or dismissed finding is posted
//! with `endsAt` now, which resolves the alert; an open one with `endsAt` a
//! `hold` after its last version (Alertmanager would otherwise resolve an alert
//! nobody re-sent after its `resolve_timeout`, five minutes by default).

use std::time::Duration;

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use seedwatch_schemas::{Finding, Severity, Status};
use serde_json::{json, Value};

/// Where alerts go, and how long an open finding stays firing without news.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    alerts_url: String,
    hold: Duration,
    agent: ureq::Agent,
    /// The severity each finding's alert was last posted with. Severity is a label (routes
    /// page on it), so an escalated finding is a new alert, and the one it replaces is
    /// resolved. (After a restart this is empty: a replaced alert then ends at its hold.)
    posted: HashMap<String, Severity>,
}

/// Posting to Alertmanager failed.
#[derive(Debug, thiserror::Error)]
#[error("posting {alerts} alert(s) to {url}")]
pub struct PostError {
    url: String,
    /// Alerts in the failed post.
    pub alerts: usize,
    #[source]
    source: ureq::Error,
}

impl Alertmanager {
    /// Alertmanager at `base` (e.g. `http://127.0.0.1:9093`).
    pub fn new(base: &str, hold: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
        Self { alerts_url: format!("{}/api/v2/alerts", base.trim_end_matches('/')), hold, agent, posted: HashMap::new() }
    }

    /// Post, and on failure log and count it (`AlertsNotPosted`) rather than stop: the
    /// versions are archived, and `findings_latest` is the record to re-post from.
    pub fn post_or_count(&mut self, findings: &[Finding]) {
        if let Err(e) = self.post(findings) {
            seedwatch_runtime::internal_events::AlertsNotPosted { alerts: e.alerts, error: &e }.emit();
        }
    }

    /// Post one alert per finding version (the newest version of a finding last); a version
    /// whose severity changed also resolves the alert of the previous severity.
    pub fn post(&mut self, findings: &[Finding]) -> Result<(), PostError> {
        if findings.is_empty() {
            return Ok(());
        }
        let mut alerts: Vec<Value> = Vec::with_capacity(findings.len());
        for f in findings {
            if let Some(previous) = self.posted.insert(f.finding_id.clone(), f.severity).filter(|s| *s != f.severity) {
                let replaced = Finding { severity: previous, status: Status::Resolved, ..f.clone() };
                alerts.push(alert(&replaced, self.hold));
            }
            alerts.push(alert(f, self.hold));
        }
        let count = alerts.len();
        let body = Value::Array(alerts).to_string();
        self.agent
            .post(&self.alerts_url)
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .map(|_| ())
            .map_err(|source| PostError { url: self.alerts_url.clone(), alerts: count, source })
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The alert of one finding version.
pub fn alert(f: &Finding, hold: Duration) -> Value {
    let ends = match f.status {
        // Never later than now: a finding stamped ahead of this host's clock (skew, or a
        // version a few ms after the one it replaces) would otherwise stay firing until then.
        Status::Resolved | Status::FalsePositive => f.updated_at.min(Utc::now().timestamp_millis()),
        Status::Open | Status::Acknowledged => f.updated_at.saturating_add(hold.as_millis() as i64),
    };
    let table = f.family.as_str();
    json!({
        "labels": {
            "alertname": "SeedwatchFinding",
            "rule": f.rule,
            "severity": f.severity.as_str(),
            "state": f.state,
            "license": f.license,
            "location": f.location,
            "finding_id": f.finding_id,
        },
        "annotations": {
            "title": f.title,
            "subject": f.subject,
            "actor": f.actor.clone().unwrap_or_default(),
            "status": f.status.as_str(),
            "version": f.version.to_string(),
            "events": f.event_count.to_string(),
            "evidence_sql": format!(
                "SELECT e.* FROM {table} e JOIN (SELECT unnest(evidence) AS id FROM findings_latest WHERE finding_id = '{}') f ON e.event_id = f.id ORDER BY e.time",
                f.finding_id
            ),
        },
        "startsAt": rfc3339(f.detected_at.min(f.updated_at)),
        "endsAt": rfc3339(ends),
    })
}
