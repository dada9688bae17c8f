//! `seedwatch findings ack|resolve|false-positive`: a person's status change on a
//! finding, appended to the archive as a row of its own. Nothing is rewritten: the
//! finding's rows are its history, and `findings_latest` shows where it stands.

use std::path::Path;

use anyhow::{bail, Context, Result};
use seedwatch_archive::query::run_query;
use seedwatch_archive::Sink;
use seedwatch_schemas::finding::{findings_from_batch, findings_to_batch};
use seedwatch_schemas::{Finding, Status, Table};

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
    /// The row appended: the finding's newest version with the new status, note and name.
    pub row: Finding,
    /// The status before.
    pub was: Status,
    /// False when the same change was already recorded (nothing written).
    pub written: bool,
}

/// Append `change` to the archive at `root` as a row of the finding's newest version.
/// The finding must be one `visibility` shows (another tenant's is "no finding").
pub async fn change_status(root: &Path, change: &StatusChange, now_ms: i64, signing_key: &Path, visibility: &seedwatch_archive::Visibility) -> Result<Changed> {
    let id = change.finding_id.as_str();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{id}` is not a finding id (16 hex digits, as in the finding_id column)");
    }
    if change.by.trim().is_empty() {
        bail!("name who made the change with --by NAME");
    }
    let ctx = seedwatch_archive::open_session_for(root, visibility).await?;
    let batches = run_query(&ctx, &format!("SELECT * FROM findings_latest WHERE finding_id = '{id}'")).await?;
    let mut latest = Vec::new();
    for batch in &batches {
        latest.extend(findings_from_batch(batch).context("reading the finding's newest version")?);
    }
    let Some(mut row) = latest.into_iter().next() else {
        bail!("no finding {id} in {} (see: seedwatch query --archive {} \"SELECT finding_id, rule, status FROM findings_latest\")", root.display(), root.display());
    };
    let was = row.status;
    (row.status, row.note, row.changed_by, row.updated_at) = (change.status, Some(change.note.clone()), Some(change.by.clone()), now_ms);
    let mut writer = crate::archive_admin::open_writer(root, signing_key)?;
    let written = writer.write(Table::Findings, &findings_to_batch(std::slice::from_ref(&row)).context("building the status row")?)?;
    writer.commit()?;
    Ok(Changed { row, was, written: written.kept > 0 })
}
