//! Retention: remove whole days past their table's period (see
//! [`seedwatch_schemas::retention`]), never a day that holds evidence of a finding that is
//! still kept, and never the days of a finding that is not resolved.
//!
//! A finding is kept while its own day is within the findings' period (indefinite by
//! default) or while it is not resolved (open or acknowledged), whatever the period says.
//! A kept finding keeps, in its family's table, every day from its window's start to its
//! end and every day holding one of its evidence events. Removal is recorded in the
//! manifest (one `prune` entry naming every file) before any file goes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::arrow::record_batch::RecordBatch;
use seedwatch_schemas::retention::{Period, Retention};
use seedwatch_schemas::{Family, Table};

use crate::manifest::{file_sha256, recorded_files, relative_path, Action, FileRecord, ManifestLog, ManifestSigner};
use crate::query::{open_session, run_query};
use crate::writer::parquet_files;
use crate::{io_err, ArchiveError};

/// One day of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// The table.
    pub table: Table,
    /// The day (UTC).
    pub date: NaiveDate,
    /// Its data files.
    pub files: Vec<PathBuf>,
    /// Their bytes.
    pub bytes: u64,
    /// Their rows.
    pub rows: u64,
}

/// What a prune removes and what it keeps past retention.
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Each table's period and the first day it keeps (`None`: all).
    pub cutoffs: Vec<(Table, Period, Option<NaiveDate>)>,
    /// Days past retention that go.
    pub remove: Vec<Day>,
    /// Days past retention kept because they hold a kept finding or its evidence.
    pub kept_for_findings: Vec<Day>,
}

fn query_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Query(e.to_string())
}

/// The day partitions of `table` under `root`, oldest first.
fn days_of(root: &Path, table: Table) -> Result<Vec<NaiveDate>, ArchiveError> {
    let dir = root.join(table.name());
    let mut days = Vec::new();
    if !dir.is_dir() {
        return Ok(days);
    }
    for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
        let name = entry.map_err(io_err("listing", &dir))?.file_name();
        if let Some(date) = name.to_str().and_then(|n| n.strip_prefix("date=")).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) {
            days.push(date);
        }
    }
    days.sort();
    Ok(days)
}

fn day_dir(root: &Path, table: Table, date: NaiveDate) -> PathBuf {
    root.join(table.name()).join(format!("date={}", date.format("%Y-%m-%d")))
}

fn describe(root: &Path, table: Table, date: NaiveDate) -> Result<Day, ArchiveError> {
    let files = parquet_files(&day_dir(root, table, date))?;
    let (mut bytes, mut rows) = (0, 0);
    for path in &files {
        bytes += fs::metadata(path).map_err(io_err("reading metadata of", path))?.len();
        rows += parquet_rows(path)?;
    }
    Ok(Day { table, date, files, bytes, rows })
}

pub(crate) fn parquet_rows(path: &Path) -> Result<u64, ArchiveError> {
    let file = fs::File::open(path).map_err(io_err("opening", path))?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).map_err(|e| ArchiveError::Parquet { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows().max(0) as u64)
}

/// Column `i` of `batch` as dates (a `DATE` column).
fn dates(batch: &RecordBatch, i: usize) -> Result<Vec<Option<NaiveDate>>, ArchiveError> {
    let column = cast(batch.column(i), &DataType::Date32).map_err(query_err)?;
    Ok(column.as_primitive::<Date32Type>().iter().map(|d| d.and_then(Date32Type::to_naive_date_opt)).collect())
}

/// Column `i` of `batch` as strings.
fn strings(batch: &RecordBatch, i: usize) -> Result<Vec<Option<String>>, ArchiveError> {
    let column = cast(batch.column(i), &DataType::Utf8).map_err(query_err)?;
    Ok(column.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect())
}

/// `(table name, date)` of every day a kept finding needs. Only days before `before` are
/// looked at (the rest are kept anyway).
async fn finding_days(root: &Path, findings_cutoff: Option<NaiveDate>, before: NaiveDate) -> Result<BTreeSet<(&'static str, NaiveDate)>, ArchiveError> {
    let ctx = open_session(root).await?;
    let kept_by_age = match findings_cutoff {
        Some(cutoff) => format!("date >= '{}'", cutoff.format("%Y-%m-%d")),
        None => "TRUE".to_string(),
    };
    let kept = format!("SELECT finding_id, family, window_start, window_end, evidence FROM findings_latest WHERE status NOT IN ('resolved', 'false_positive') OR {kept_by_age}");
    let before = before.format("%Y-%m-%d");
    let mut days = BTreeSet::new();
    // The findings' own rows.
    let sql = format!("SELECT DISTINCT CAST(date AS DATE) FROM findings WHERE date < '{before}' AND finding_id IN (SELECT finding_id FROM ({kept}))");
    for batch in run_query(&ctx, &sql).await? {
        days.extend(dates(&batch, 0)?.into_iter().flatten().map(|d| (Table::Findings.name(), d)));
    }
    // Their windows, in their family's table. (All of them: findings are few, and a `WHERE` on
    // the window here trips DataFusion 55's filter statistics over the view's window function,
    // "Selectivity is out of limit", when the bound lies past the newest window.)
    let sql = format!("SELECT CAST(window_start AS DATE), CAST(window_end AS DATE), family FROM ({kept})");
    for batch in run_query(&ctx, &sql).await? {
        let (starts, ends, families) = (dates(&batch, 0)?, dates(&batch, 1)?, strings(&batch, 2)?);
        for ((start, end), family) in starts.into_iter().zip(ends).zip(families) {
            let (Some(mut day), Some(end), Some(family)) = (start, end, family) else { continue };
            let Some(family) = Family::ALL.into_iter().find(|f| f.as_str() == family) else { continue };
            while day <= end {
                days.insert((Table::Events(family).name(), day));
                let Some(next) = day.succ_opt() else { break };
                day = next;
            }
        }
    }
    // Their evidence events, wherever those are.
    for family in Family::ALL {
        let name = Table::Events(family).name();
        let sql = format!("SELECT DISTINCT CAST(e.date AS DATE) FROM {name} e JOIN (SELECT unnest(evidence) AS id FROM ({kept})) k ON e.event_id = k.id WHERE e.date < '{before}'");
        for batch in run_query(&ctx, &sql).await? {
            days.extend(dates(&batch, 0)?.into_iter().flatten().map(|d| (name, d)));
        }
    }
    Ok(days)
}

/// What a prune on `as_of` would remove under `retention`.
pub async fn plan(root: &Path, retention: &Retention, as_of: NaiveDate) -> Result<PrunePlan, ArchiveError> {
    if !root.is_dir() {
        return Err(ArchiveError::Query(format!("{} is not an archive directory", root.display())));
    }
    let mut plan = PrunePlan::default();
    let mut expired = Vec::new();
    for table in Table::ALL {
        let period = retention.period(table);
        let cutoff = period.cutoff(as_of);
        plan.cutoffs.push((table, period, cutoff));
        if let Some(cutoff) = cutoff {
            expired.extend(days_of(root, table)?.into_iter().filter(|d| *d < cutoff).map(|d| (table, d)));
        }
    }
    let Some(newest_expired) = expired.iter().map(|(_, d)| *d).max() else { return Ok(plan) };
    let findings_cutoff = retention.period(Table::Findings).cutoff(as_of);
    let needed = finding_days(root, findings_cutoff, newest_expired + chrono::Days::new(1)).await?;
    for (table, date) in expired {
        let day = describe(root, table, date)?;
        let needed_by_finding = table != Table::DeadLetter && needed.contains(&(table.name(), date));
        if needed_by_finding {
            plan.kept_for_findings.push(day);
        } else {
            plan.remove.push(day);
        }
    }
    Ok(plan)
}

/// Remove the plan's days: one manifest entry naming every file (when `signer` is given),
/// then the files, then their emptied day directories.
pub fn apply(root: &Path, plan: &PrunePlan, signer: Option<Arc<ManifestSigner>>) -> Result<(), ArchiveError> {
    let files: Vec<&PathBuf> = plan.remove.iter().flat_map(|d| &d.files).collect();
    if files.is_empty() {
        return Ok(());
    }
    let local = crate::store::ArchiveRoot::from(root);
    if let Some(signer) = signer {
        let recorded = recorded_files(&local)?;
        let mut removed = Vec::with_capacity(files.len());
        for path in &files {
            let relative = relative_path(root, path);
            match recorded.get(&relative) {
                Some((_, record)) => removed.push(record.clone()),
                None => {
                    // A file from before the manifest: recorded as it is now.
                    let (sha256, bytes) = file_sha256(path)?;
                    removed.push(FileRecord { path: relative, sha256, bytes, rows: parquet_rows(path)?, min_time: None, max_time: None });
                }
            }
        }
        let writer = format!("prune-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
        ManifestLog::open(&local, signer, &writer)?.append(Action::Prune, Vec::new(), removed)?;
    }
    // The days leave the tables' logs (queries stop reading them) before their bytes go; a
    // stop in between is finished by the next writer (`delta::reconcile`).
    for table in Table::ALL {
        let removed: Vec<String> = plan.remove.iter().filter(|d| d.table == table).flat_map(|d| &d.files).map(|path| relative_path(root, path)).collect();
        if !removed.is_empty() && root.join(table.name()).join(crate::delta::LOG_DIR).is_dir() {
            crate::delta::commit_blocking(&local, None, table, crate::delta::Change::Prune, Vec::new(), removed)?;
        }
    }
    for day in &plan.remove {
        for path in &day.files {
            fs::remove_file(path).map_err(io_err("removing", path))?;
        }
        let dir = day_dir(root, day.table, day.date);
        // A writer may have put a file there since the plan: then the directory stays.
        if fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
            fs::remove_dir(&dir).map_err(io_err("removing", &dir))?;
        }
        let table_dir = root.join(day.table.name());
        fs::File::open(&table_dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", &table_dir))?;
        tracing::info!(table = day.table.name(), date = %day.date, files = day.files.len(), rows = day.rows, bytes = day.bytes, "pruned a day past retention");
    }
    Ok(())
}
