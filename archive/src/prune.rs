//! Retention: remove whole days past their table's period (see
//! [`seedwatch_schemas::retention`]), never a day that holds evidence of a finding that is
//! still kept, and never the days of a finding that is not resolved.
//!
//! A finding is kept while its own day is within the findings' period (indefinite by
//! default) or while it is not resolved (open or acknowledged), whatever the period says.
//! A kept finding keeps, in its family's table, every day from its window's start to its
//! end and every day holding one of its evidence events. Removal is recorded in the
//! manifest (one `prune` entry naming every file) before any file goes.
//!
//! A compacted month's file (a quiet table's small days, see `compact`) goes as a whole,
//! once its last day is past retention and none of its days is kept for a finding; until
//! then its days past retention stay with it (listed as such), so a quiet table's days can
//! outlive their period by up to a month, never the other way round.

use std::collections::{BTreeMap, BTreeSet};
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

use crate::layout::Span;
use crate::manifest::{recorded_files, Action, FileRecord, ManifestLog, ManifestSigner};
use crate::query::{open_session, run_query};
use crate::store::ArchiveRoot;
use crate::{io_err, ArchiveError};

/// One day of one table (or the days of a compacted month's file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// The table.
    pub table: Table,
    /// The day (UTC); a compacted month's file: its first day.
    pub date: NaiveDate,
    /// The last day: `date` for a day, the file's last day for a compacted month's.
    pub last: NaiveDate,
    /// Its data files (paths under the archive root).
    pub files: Vec<String>,
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
    /// Compacted months with days past retention and days not yet: kept whole for now.
    pub kept_with_their_month: Vec<Day>,
}

impl Day {
    /// Days from `date` to `last`.
    pub fn days(&self) -> usize {
        (self.last - self.date).num_days().max(0) as usize + 1
    }

    /// `YYYY-MM-DD`, or `YYYY-MM-DD..YYYY-MM-DD` for a compacted month's file.
    pub fn label(&self) -> String {
        if self.last == self.date {
            self.date.format("%Y-%m-%d").to_string()
        } else {
            format!("{}..{}", self.date.format("%Y-%m-%d"), self.last.format("%Y-%m-%d"))
        }
    }
}

fn query_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Query(e.to_string())
}

/// The data files of `table` under `root` with the days they hold (first, last), oldest
/// first: a day folder's files together; each compacted month's file alone, its days from
/// the time range the manifest recorded (else the whole month).
fn files_by_day(root: &ArchiveRoot, table: Table, recorded: &BTreeMap<String, (u64, FileRecord)>) -> Result<Vec<(NaiveDate, NaiveDate, Vec<(String, u64)>)>, ArchiveError> {
    let mut days: BTreeMap<NaiveDate, Vec<(String, u64)>> = BTreeMap::new();
    let mut out = Vec::new();
    for (path, bytes) in root.list(table.name())? {
        // `table/date=YYYY-MM-DD/part-….parquet` or `table/month=YYYY-MM/part-….parquet`;
        // not the log, not a temp folder.
        if path.split('/').count() != 3 {
            continue;
        }
        match crate::layout::span_of(&path) {
            Some(Span::Day(date)) => days.entry(date).or_default().push((path, bytes)),
            Some(span @ Span::Month(_)) => {
                let day = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.date_naive());
                let range = recorded.get(&path).and_then(|(_, r)| Some((day(r.min_time?)?, day(r.max_time?)?)));
                let (first, last) = range.unwrap_or_else(|| span.days());
                out.push((first, last, vec![(path, bytes)]));
            }
            None => {}
        }
    }
    out.extend(days.into_iter().map(|(date, files)| (date, date, files)));
    out.sort_by_key(|(first, last, _)| (*first, *last));
    Ok(out)
}

/// Rows of the file at `path`: as the manifest recorded them, else from its footer.
pub(crate) fn rows_of(root: &ArchiveRoot, path: &str, recorded: &BTreeMap<String, (u64, FileRecord)>) -> Result<u64, ArchiveError> {
    if let Some((_, record)) = recorded.get(path) {
        return Ok(record.rows);
    }
    // On disk the footer alone is read; from a bucket, the object.
    if let ArchiveRoot::Local(dir) = root {
        return parquet_rows(&dir.join(path));
    }
    let bytes = root.read(path)?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(bytes).map_err(|e| ArchiveError::Parquet { path: PathBuf::from(path), message: e.to_string() })?;
    Ok(parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows().max(0) as u64)
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
async fn finding_days(root: &ArchiveRoot, findings_cutoff: Option<NaiveDate>, before: NaiveDate) -> Result<BTreeSet<(&'static str, NaiveDate)>, ArchiveError> {
    let ctx = open_session(root.clone()).await?;
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

/// What a prune on `as_of` would remove under `retention`, in the archive at `root` (a
/// directory or a bucket prefix).
pub async fn plan(root: &ArchiveRoot, retention: &Retention, as_of: NaiveDate) -> Result<PrunePlan, ArchiveError> {
    if !root.exists()? {
        return Err(ArchiveError::Query(format!("{root}: no archive there")));
    }
    let mut plan = PrunePlan::default();
    let mut expired = Vec::new();
    let recorded = recorded_files(root)?;
    for table in Table::ALL {
        let period = retention.period(table);
        let cutoff = period.cutoff(as_of);
        plan.cutoffs.push((table, period, cutoff));
        if let Some(cutoff) = cutoff {
            let days = files_by_day(root, table, &recorded)?;
            expired.extend(days.into_iter().filter(|(first, _, _)| *first < cutoff).map(|(first, last, files)| (table, cutoff, first, last, files)));
        }
    }
    let Some(newest_expired) = expired.iter().map(|(_, _, _, last, _)| *last).max() else { return Ok(plan) };
    let findings_cutoff = retention.period(Table::Findings).cutoff(as_of);
    let needed = finding_days(root, findings_cutoff, newest_expired + chrono::Days::new(1)).await?;
    for (table, cutoff, date, last, files) in expired {
        let mut day = Day { table, date, last, files: Vec::with_capacity(files.len()), bytes: 0, rows: 0 };
        for (path, bytes) in files {
            day.rows += rows_of(root, &path, &recorded)?;
            day.bytes += bytes;
            day.files.push(path);
        }
        let needed_by_finding = table != Table::DeadLetter && date.iter_days().take_while(|d| *d <= last).any(|d| needed.contains(&(table.name(), d)));
        if last >= cutoff {
            plan.kept_with_their_month.push(day);
        } else if needed_by_finding {
            plan.kept_for_findings.push(day);
        } else {
            plan.remove.push(day);
        }
    }
    Ok(plan)
}

/// Remove the plan's days: one manifest entry naming every file (when `signer` is given),
/// then one Delta commit per table, then the files (and, on disk, their emptied folders).
pub fn apply(root: &ArchiveRoot, plan: &PrunePlan, signer: Option<Arc<ManifestSigner>>) -> Result<(), ArchiveError> {
    let files: Vec<&String> = plan.remove.iter().flat_map(|d| &d.files).collect();
    if files.is_empty() {
        return Ok(());
    }
    if let Some(signer) = signer {
        let recorded = recorded_files(root)?;
        let mut removed = Vec::with_capacity(files.len());
        for path in &files {
            match recorded.get(path.as_str()) {
                Some((_, record)) => removed.push(record.clone()),
                None => {
                    // A file from before the manifest: recorded as it is now.
                    let (sha256, bytes) = root.sha256(path)?;
                    removed.push(FileRecord { path: path.to_string(), sha256, bytes, rows: rows_of(root, path, &recorded)?, min_time: None, max_time: None });
                }
            }
        }
        let writer = format!("prune-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
        ManifestLog::open(root, signer, &writer)?.append(Action::Prune, Vec::new(), removed)?;
    }
    // The days leave the tables' logs (queries stop reading them) before their bytes go; a
    // stop in between is finished by the next writer (`delta::reconcile`).
    for table in Table::ALL {
        let removed: Vec<String> = plan.remove.iter().filter(|d| d.table == table).flat_map(|d| d.files.iter().cloned()).collect();
        let is_delta = crate::delta::block_on({
            let root = root.clone();
            async move { crate::delta::is_delta(&root, table).await }
        })??;
        if !removed.is_empty() && is_delta {
            crate::delta::commit_blocking(root, None, table, crate::delta::Change::Prune, Vec::new(), removed)?;
        }
    }
    for day in &plan.remove {
        for path in &day.files {
            root.delete(path)?;
        }
        if let ArchiveRoot::Local(local) = root {
            let folders: BTreeSet<&str> = day.files.iter().filter_map(|f| f.rsplit_once('/').map(|(folder, _)| folder)).collect();
            for folder in folders {
                let dir = local.join(folder);
                // A writer may have put a file there since the plan: then the directory stays.
                if fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
                    fs::remove_dir(&dir).map_err(io_err("removing", &dir))?;
                }
            }
            let table_dir = local.join(day.table.name());
            fs::File::open(&table_dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", &table_dir))?;
        }
        tracing::info!(table = day.table.name(), date = %day.label(), files = day.files.len(), rows = day.rows, bytes = day.bytes, "pruned a day past retention");
    }
    Ok(())
}
