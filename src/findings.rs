//! `seedwatch findings ack|resolve|false-positive`: a person's status change on a
//! finding, appended to the archive as a row of its own. Nothing is rewritten: the
//! finding's rows are its history, and `findings_latest` shows where it stands.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use seedwatch_archive::query::run_query;
use seedwatch_archive::{open_session, ArchiveWriter, Sink, WriterOptions};
use seedwatch_schemas::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use seedwatch_schemas::arrow::compute::cast;
use seedwatch_schemas::finding::findings_schema;
use seedwatch_schemas::{Status, Table};

/// A status change someone makes.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// The finding's id (16 hex digits).
    pub finding_id: String,
    /// Where it stands now.
    pub status: Status,
    /// Why.
    pub note: String,
    /// Who.
    pub by: String,
}

/// What was appended.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// The version the change was made on.
    pub version: i64,
    /// The status before.
    pub was: String,
    /// The rule of the finding.
    pub rule: String,
    /// False when the same change was already recorded (nothing written).
    pub written: bool,
    /// The row appended, as a finding version (for Alertmanager).
    pub row: Option<seedwatch_schemas::Finding>,
}

/// Append `change` to the archive at `root` as a row of the finding's newest version.
pub async fn change_status(root: &Path, change: &StatusChange, now_ms: i64) -> Result<Changed> {
    let id = change.finding_id.as_str();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{id}` is not a finding id (16 hex digits, as in the finding_id column)");
    }
    if change.by.trim().is_empty() {
        bail!("name who made the change with --by NAME");
    }
    let ctx = open_session(root).await?;
    let batches = run_query(&ctx, &format!("SELECT * FROM findings_latest WHERE finding_id = '{id}'")).await?;
    let Some(latest) = batches.into_iter().find(|b| b.num_rows() > 0) else {
        bail!("no finding {id} in {} (see: seedwatch query --archive {} \"SELECT finding_id, rule, status FROM findings_latest\")", root.display(), root.display());
    };
    let latest = latest.slice(0, 1);
    // The newest row's content, in the table's own types (SQL hands strings back as views).
    let schema = findings_schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match field.name().as_str() {
            "status" => Arc::new(StringArray::from(vec![change.status.as_str()])) as ArrayRef,
            "note" => Arc::new(StringArray::from(vec![Some(change.note.as_str())])),
            "changed_by" => Arc::new(StringArray::from(vec![Some(change.by.as_str())])),
            "updated_at" => Arc::new(TimestampMillisecondArray::from(vec![now_ms]).with_timezone("UTC")),
            name => {
                let column = latest.column_by_name(name).with_context(|| format!("findings_latest has no column {name}"))?;
                cast(column, field.data_type()).with_context(|| format!("reading column {name}"))?
            }
        };
        columns.push(column);
    }
    let row = RecordBatch::try_new(schema, columns).context("building the status row")?;
    let text = |name: &str| -> String {
        row.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>()).map(|c| c.value(0).to_string()).unwrap_or_default()
    };
    let was = latest
        .column_by_name("status")
        .and_then(|c| cast(c, &seedwatch_schemas::arrow::datatypes::DataType::Utf8).ok())
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().map(|s| s.value(0).to_string()))
        .unwrap_or_default();
    let version = row
        .column_by_name("version")
        .and_then(|c| c.as_any().downcast_ref::<seedwatch_schemas::arrow::array::Int64Array>())
        .map_or(1, |v| v.value(0));
    let mut writer = ArchiveWriter::open(root, WriterOptions::default())?;
    let written = writer.write(Table::Findings, &row)?;
    writer.commit()?;
    let row_finding = seedwatch_schemas::finding::findings_from_batch(&row).context("reading the status row back")?.into_iter().next();
    Ok(Changed { version, was, rule: text("rule"), written: written.kept > 0, row: row_finding })
}
