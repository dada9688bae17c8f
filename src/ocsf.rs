//! `seedwatch export ocsf`: archived findings and events as OCSF 1.2.0 NDJSON, for SIEMs
//! and data lakes that speak the Open Cybersecurity Schema Framework.
//!
//! | table | OCSF class |
//! | --- | --- |
//! | `findings` | Detection Finding (2004): one record per version (create, update, close) |
//! | `login` | Authentication (3002), activity Logon |
//! | `api` | API Activity (6003), activity from the HTTP method |
//! | `audit` | Account Change (3001): user-management actions only; the others are counted and left out |
//!
//! What OCSF has no attribute for (license, state, location, the tracking system, a key
//! id) goes in `unmapped`, so nothing is lost. Validated in `tests/ocsf.rs` against the
//! published 1.2.0 class schemas.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use futures::StreamExt;
use seedwatch_schemas::{Finding, Severity, Status};
use serde_json::{json, Map, Value};

/// The OCSF version the output follows.
pub const OCSF_VERSION: &str = "1.2.0";

/// A table `export ocsf` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportTable {
    /// Detection Finding (2004).
    Findings,
    /// Authentication (3002).
    Login,
    /// API Activity (6003).
    Api,
    /// Account Change (3001).
    Audit,
}

impl ExportTable {
    fn name(self) -> &'static str {
        match self {
            Self::Findings => "findings",
            Self::Login => "login",
            Self::Api => "api",
            Self::Audit => "audit",
        }
    }

    /// The OCSF class written.
    pub fn class(self) -> (u32, &'static str) {
        match self {
            Self::Findings => (2004, "Detection Finding"),
            Self::Login => (3002, "Authentication"),
            Self::Api => (6003, "API Activity"),
            Self::Audit => (3001, "Account Change"),
        }
    }

    /// The column a time range selects on.
    fn time_column(self) -> &'static str {
        match self {
            Self::Findings => "coalesce(updated_at, detected_at)",
            _ => "time",
        }
    }
}

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Exported {
    /// Records written.
    pub records: u64,
    /// Rows left out because their class does not cover them, by reason.
    pub skipped: BTreeMap<String, u64>,
}

/// Write `table` of `archive`, within `[from, to)` when given, to `out` as OCSF NDJSON.
pub async fn export(archive: &Path, table: ExportTable, from: Option<i64>, to: Option<i64>, out: &mut dyn Write, visibility: &seedwatch_archive::Visibility) -> Result<Exported> {
    let ctx = seedwatch_archive::open_session_for(archive, visibility).await?;
    let mut conditions = Vec::new();
    let time = table.time_column();
    if let Some(from) = from {
        conditions.push(format!("{time} >= to_timestamp_millis({from})"));
    }
    if let Some(to) = to {
        conditions.push(format!("{time} < to_timestamp_millis({to})"));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let order = match table {
        ExportTable::Findings => "detected_at, finding_id, version, updated_at",
        _ => "time, event_id",
    };
    let sql = format!("SELECT * FROM {}{filter} ORDER BY {order}", table.name());
    let df = ctx.sql(&sql).await.with_context(|| format!("reading the {} table", table.name()))?;
    let mut stream = df.execute_stream().await?;
    let mut exported = Exported::default();
    let product = product();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let records: Vec<Value> = match table {
            ExportTable::Findings => seedwatch_schemas::finding::findings_from_batch(&batch)?.iter().map(|f| detection_finding(f, &product)).collect(),
            _ => {
                let cols = Columns::new(&batch)?;
                let mut records = Vec::with_capacity(batch.num_rows());
                for row in 0..batch.num_rows() {
                    match event_record(table, &cols, row, &product) {
                        Ok(record) => records.push(record),
                        Err(skipped) => *exported.skipped.entry(skipped).or_default() += 1,
                    }
                }
                records
            }
        };
        for record in records {
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")?;
            exported.records += 1;
        }
    }
    out.flush()?;
    Ok(exported)
}

fn product() -> Value {
    json!({ "name": "seedwatch", "vendor_name": "seedwatch", "version": env!("CARGO_PKG_VERSION") })
}

fn metadata(product: &Value, uid: &str, extra: Option<(&str, Value)>) -> Value {
    let mut m = json!({ "version": OCSF_VERSION, "product": product, "uid": uid });
    if let Some((k, v)) = extra {
        m[k] = v;
    }
    m
}

/// The base attributes every class shares.
fn base(class_uid: u32, activity_id: u32, activity_name: &str, severity_id: u32, time: i64, metadata: Value) -> Map<String, Value> {
    let category_uid = class_uid / 1000;
    let mut m = Map::new();
    m.insert("class_uid".into(), json!(class_uid));
    m.insert("category_uid".into(), json!(category_uid));
    m.insert("activity_id".into(), json!(activity_id));
    m.insert("activity_name".into(), json!(activity_name));
    m.insert("type_uid".into(), json!(u64::from(class_uid) * 100 + u64::from(activity_id)));
    m.insert("severity_id".into(), json!(severity_id));
    m.insert("time".into(), json!(time));
    m.insert("metadata".into(), metadata);
    m
}

fn severity_id(s: Severity) -> u32 {
    match s {
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// One finding version as a Detection Finding: version 1 creates it, later versions update
/// it, a resolved or dismissed one closes it.
pub fn detection_finding(f: &Finding, product: &Value) -> Value {
    let (activity_id, activity) = match (f.status, f.version) {
        (Status::Resolved | Status::FalsePositive, _) => (3, "Close"),
        (_, 1) if f.changed_by.is_none() => (1, "Create"),
        _ => (2, "Update"),
    };
    let (status_id, status) = match f.status {
        Status::Open => (1, "New"),
        Status::Acknowledged => (2, "In Progress"),
        Status::Resolved => (4, "Resolved"),
        Status::FalsePositive => (3, "Suppressed"),
    };
    let updated = if f.updated_at > 0 { f.updated_at } else { f.detected_at };
    let mut m = base(2004, activity_id, activity, severity_id(f.severity), updated, metadata(product, &format!("{}:{}:{}", f.finding_id, f.version, f.status.as_str()), Some(("modified_time", json!(updated)))));
    let related: Vec<Value> = f.evidence.iter().map(|id| json!({ "uid": id })).collect();
    m.insert(
        "finding_info".into(),
        json!({
            "uid": f.finding_id,
            "title": f.title,
            "types": [f.rule],
            "analytic": { "name": f.rule, "uid": f.rule, "type_id": 1, "type": "Rule" },
            "created_time": f.detected_at,
            "modified_time": updated,
            "first_seen_time": f.window_start,
            "last_seen_time": f.window_end,
            "related_events": related,
        }),
    );
    m.insert("severity".into(), json!(title_case(f.severity.as_str())));
    m.insert("status_id".into(), json!(status_id));
    m.insert("status".into(), json!(status));
    if f.status == Status::FalsePositive {
        m.insert("status_detail".into(), json!("false positive"));
    }
    if let Some(note) = &f.note {
        m.insert("comment".into(), json!(note));
    }
    m.insert("count".into(), json!(f.event_count));
    m.insert("start_time".into(), json!(f.window_start));
    m.insert("end_time".into(), json!(f.window_end));
    let mut unmapped = json!({
        "license": f.license,
        "location": f.location,
        "state": f.state,
        "system": f.system,
        "family": f.family.as_str(),
        "subject": f.subject,
        "version": f.version,
        "details": serde_json::from_str::<Value>(&f.details).unwrap_or(Value::Null),
    });
    if let Some(actor) = &f.actor {
        unmapped["actor"] = json!(actor);
    }
    if let Some(by) = &f.changed_by {
        unmapped["changed_by"] = json!(by);
    }
    m.insert("unmapped".into(), unmapped);
    Value::Object(m)
}

fn title_case(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|first| first.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The columns of one batch of an event table, cast once to the types read here.
struct Columns {
    arrays: BTreeMap<String, ArrayRef>,
}

impl Columns {
    fn new(batch: &RecordBatch) -> Result<Self> {
        let mut arrays = BTreeMap::new();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let array = match field.data_type() {
                DataType::Int64 | DataType::Boolean => array.clone(),
                DataType::Timestamp(..) => cast(array, &DataType::Int64)?,
                _ => cast(array, &DataType::Utf8)?,
            };
            arrays.insert(field.name().clone(), array);
        }
        Ok(Self { arrays })
    }

    fn text(&self, name: &str, row: usize) -> Option<&str> {
        let a = self.arrays.get(name)?.as_string_opt::<i32>()?;
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn int(&self, name: &str, row: usize) -> Option<i64> {
        let a = self.arrays.get(name)?.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()?;
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn flag(&self, name: &str, row: usize) -> Option<bool> {
        let a = self.arrays.get(name)?.as_boolean_opt()?;
        (!a.is_null(row)).then(|| a.value(row))
    }

    /// Where the event happened, for `unmapped`.
    fn place(&self, row: usize) -> Map<String, Value> {
        let mut m = Map::new();
        for name in ["license", "location", "state", "system", "source"] {
            if let Some(v) = self.text(name, row) {
                m.insert(name.into(), json!(v));
            }
        }
        if let Some(line) = self.int("line", row) {
            m.insert("line".into(), json!(line));
        }
        m
    }
}

/// One event row as its OCSF class; `Err(reason)` for rows the class does not cover.
fn event_record(table: ExportTable, c: &Columns, row: usize, product: &Value) -> std::result::Result<Value, String> {
    let time = c.int("time", row).ok_or("no time")?;
    let uid = c.text("event_id", row).unwrap_or_default();
    let mut unmapped = c.place(row);
    let endpoint = |name: &str| c.text(name, row).map(|ip| json!({ "ip": ip }));
    let mut m = match table {
        ExportTable::Login => {
            let success = c.text("outcome", row) == Some("success");
            let mut m = base(3002, 1, "Logon", 1, time, metadata(product, uid, None));
            m.insert("user".into(), json!({ "name": c.text("user", row).unwrap_or_default() }));
            m.insert("service".into(), json!({ "name": c.text("system", row).unwrap_or_default() }));
            m.insert("status_id".into(), json!(if success { 1 } else { 2 }));
            m.insert("status".into(), json!(if success { "Success" } else { "Failure" }));
            if let Some(reason) = c.text("reason", row) {
                m.insert("status_detail".into(), json!(reason));
            }
            if let Some(ip) = endpoint("src_ip") {
                m.insert("src_endpoint".into(), ip);
            }
            if let Some(mfa) = c.flag("mfa", row) {
                m.insert("is_mfa".into(), json!(mfa));
            }
            if let Some(session) = c.text("session_id", row) {
                m.insert("session".into(), json!({ "uid": session }));
            }
            if let Some(agent) = c.text("user_agent", row) {
                m.insert("http_request".into(), json!({ "user_agent": agent }));
            }
            m
        }
        ExportTable::Api => {
            let method = c.text("method", row).unwrap_or_default();
            let (activity_id, activity) = match method {
                "POST" => (1, "Create"),
                "GET" | "HEAD" => (2, "Read"),
                "PUT" | "PATCH" => (3, "Update"),
                "DELETE" => (4, "Delete"),
                _ => (99, "Other"),
            };
            let status = c.int("status", row).unwrap_or(0);
            let endpoint_path = c.text("endpoint", row).unwrap_or_default();
            let mut m = base(6003, activity_id, activity, 1, time, metadata(product, uid, None));
            let mut actor = json!({ "app_name": c.text("integration", row).unwrap_or_default() });
            if let Some(user) = c.text("user", row) {
                actor["user"] = json!({ "name": user });
            }
            m.insert("actor".into(), actor);
            m.insert(
                "api".into(),
                json!({ "operation": format!("{method} {endpoint_path}"), "service": { "name": c.text("system", row).unwrap_or_default() }, "response": { "code": status } }),
            );
            m.insert("http_request".into(), json!({ "http_method": method, "url": { "path": endpoint_path } }));
            m.insert("src_endpoint".into(), endpoint("src_ip").unwrap_or_else(|| json!({})));
            m.insert("status_id".into(), json!(if status < 400 { 1 } else { 2 }));
            m.insert("status".into(), json!(if status < 400 { "Success" } else { "Failure" }));
            for name in ["key_id", "records", "bytes", "latency_ms"] {
                if let Some(v) = c.text(name, row).map(|v| json!(v)).or_else(|| c.int(name, row).map(|v| json!(v))) {
                    unmapped.insert(name.into(), v);
                }
            }
            m
        }
        ExportTable::Audit => {
            let action = c.text("action", row).unwrap_or_default();
            let (activity_id, activity) = match action {
                "user_created" => (1, "Create"),
                "password_reset" => (4, "Password Reset"),
                "user_deactivated" => (5, "Disable"),
                "mfa_enabled" => (10, "MFA Factor Enable"),
                "mfa_disabled" => (11, "MFA Factor Disable"),
                "role_changed" => (99, "Role Change"),
                other => return Err(format!("audit action {other} is not an account change")),
            };
            let actor = c.text("actor", row).unwrap_or_default();
            // The account changed: the target, or the actor acting on their own account.
            let account = c.text("target", row).unwrap_or(actor);
            let mut m = base(3001, activity_id, activity, 1, time, metadata(product, uid, None));
            m.insert("user".into(), json!({ "name": account }));
            m.insert("actor".into(), json!({ "user": { "name": actor } }));
            if let Some(ip) = endpoint("src_ip") {
                m.insert("src_endpoint".into(), ip);
            }
            unmapped.insert("action".into(), json!(action));
            for name in ["role_before", "role_after"] {
                if let Some(v) = c.text(name, row) {
                    unmapped.insert(name.into(), json!(v));
                }
            }
            m
        }
        ExportTable::Findings => return Err("findings are not events".into()),
    };
    m.insert("unmapped".into(), Value::Object(unmapped));
    Ok(Value::Object(m))
}
