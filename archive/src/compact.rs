//! Compaction: each day's files of a table rewritten as few large ones, sorted so that one
//! subject's rows sit together (`Table::compaction_order`: license, then the user, key,
//! integration or actor, then time), zstd throughout, as one atomic change.
//!
//! A day with fewer than [`CompactOptions::month_rows`] rows (a quiet site's logins) goes
//! into one file for its month, `month=YYYY-MM/`, with the month's other small days: a
//! Parquet file costs ~2.5 kB whatever it holds, and each day's file repeats the day's
//! users, addresses and licenses in its dictionaries, so a day of a few hundred rows was
//! half overhead. A busy day keeps a file (or a few) of its own in its day folder, so a
//! query over one day of a big table reads that day only. Compacting again folds newer small
//! days (and any late file) into the month's file.
//!
//! A streaming writer adds a file per day per commit (LZ4 when small); a month of a busy
//! archive is hundreds of small files, each with its own footer and dictionaries, read one
//! by one by every query. Sorted, a column of one user's rows is runs of the same values,
//! which the Parquet encodings and zstd shrink to little.
//!
//! The order of a compaction is the writer's: new files are encoded and synced in a temp
//! directory of its own (locked while it lives), recorded in the manifest (one `compact`
//! entry: the files added and the files removed), renamed into place, and then swapped in by
//! one Delta commit that removes the old files and adds the new; only then are the old
//! bytes deleted. Queries read through the log, so they see the day before or after, never
//! between. A stop before the manifest entry leaves the table as it was (the temp directory
//! goes with the next writer); a stop after it is finished by the next writer
//! (`writer::recover_recorded`, then `delta::reconcile`).
//!
//! In a bucket the new files are encoded on this host's temp disk and uploaded to
//! `_tmp/<run>/` before they are recorded; after the entry they are copied into place
//! (`writer::recover_staged` finishes that for a compaction that stopped in between).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Datelike as _, NaiveDate};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use seedwatch_schemas::arrow::array::{new_null_array, ArrayRef, RecordBatch};
use seedwatch_schemas::arrow::compute::{cast, concat_batches, lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use seedwatch_schemas::Table;

use crate::delta::{self, Change};
use crate::layout::Span;
use crate::manifest::{recorded_files, Action, FileRecord, ManifestLog, ManifestSigner};
use crate::store::ArchiveRoot;
use crate::writer::{encode_to, file_properties, WriterOptions, STAGED_DIR};
use crate::{io_err, ArchiveError};

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Tables to compact (all when empty).
    pub tables: Vec<Table>,
    /// Only days before this date [default: today, UTC: the day writers are still adding to].
    pub before: Option<NaiveDate>,
    /// Rows per output file, at most.
    pub max_file_rows: usize,
    /// A day with fewer rows goes into its month's file rather than a file of its own.
    pub month_rows: u64,
    /// Row groups, zstd level: as the writer's.
    pub writer: WriterOptions,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self { tables: Vec::new(), before: None, max_file_rows: 8 * 1024 * 1024, month_rows: MONTH_ROWS, writer: WriterOptions::default() }
    }
}

/// Below this many rows a day is compacted into its month's file (a day of a busy table,
/// ~2 rows in 3 of a row group, stays a file of its own).
pub const MONTH_ROWS: u64 = 64 * 1024;

/// One day of one table (or the small days of one month), before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCompacted {
    /// The table.
    pub table: Table,
    /// The day, `YYYY-MM-DD`, or the month, `YYYY-MM`, whose small days went into one file.
    pub date: String,
    /// The days of `date` rewritten.
    pub days: usize,
    /// Rows (the same before and after).
    pub rows: u64,
    /// Files and bytes before.
    pub files_before: usize,
    /// See `files_before`.
    pub bytes_before: u64,
    /// Files and bytes after.
    pub files_after: usize,
    /// See `files_after`.
    pub bytes_after: u64,
}

fn stop_here(point: &str) {
    crate::stop_for_tests("SEEDWATCH_TEST_STOP_COMPACTION", point);
}

/// A live file of a table: its path and the rows it holds.
#[derive(Debug, Clone)]
struct LiveFile {
    path: String,
    span: Span,
    rows: u64,
}

/// What one compaction step rewrites: a busy day's files into files of that day, or a
/// month's small days (and its month file, if any) into one file of the month.
#[derive(Debug, Clone)]
struct Group {
    /// `date=YYYY-MM-DD` or `month=YYYY-MM`: where the new files go.
    dir: String,
    /// The day or month it covers.
    label: String,
    days: usize,
    files: Vec<String>,
}

/// The groups of `table` to compact among its live files (days before `before` only). A day
/// of `month_rows` rows or more is a group of its own, rewritten unless it is one compacted
/// file already; the other days of a month go, with the month's file, into one group,
/// rewritten unless that is the month's file alone. So compacting again does nothing.
fn groups_to_compact(live: Vec<LiveFile>, before: NaiveDate, month_rows: u64) -> Vec<Group> {
    let mut days: BTreeMap<NaiveDate, Vec<LiveFile>> = BTreeMap::new();
    let mut months: BTreeMap<NaiveDate, Vec<LiveFile>> = BTreeMap::new();
    for file in live {
        match file.span.clone() {
            Span::Day(date) if date < before => days.entry(date).or_default().push(file),
            Span::Day(_) => {}
            Span::Month(first) => months.entry(first).or_default().push(file),
        }
    }
    let mut groups = Vec::new();
    let mut small: BTreeMap<NaiveDate, (usize, Vec<String>)> = months.into_iter().map(|(m, files)| (m, (0, files.into_iter().map(|f| f.path).collect()))).collect();
    for (date, files) in days {
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let paths: Vec<String> = files.into_iter().map(|f| f.path).collect();
        if rows >= month_rows {
            if paths.len() > 1 || !paths.iter().all(|p| is_compacted(p)) {
                let label = date.format("%Y-%m-%d").to_string();
                groups.push(Group { dir: format!("date={label}"), label, days: 1, files: paths });
            }
        } else {
            let entry = small.entry(date.with_day(1).unwrap_or(date)).or_default();
            entry.0 += 1;
            entry.1.extend(paths);
        }
    }
    for (first, (days, files)) in small {
        if days > 0 || files.len() > 1 {
            groups.push(Group { dir: crate::layout::month_dir(first), label: crate::layout::month_of(first), days, files });
        }
    }
    groups.sort_by(|a, b| a.label.cmp(&b.label));
    groups
}

/// Whether compaction wrote the file at `path` (its name: `part-compact-…`).
fn is_compacted(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with("part-compact-"))
}

/// Read `path` (under the root) as `table`'s files are stored (`layout::stored_schema`):
/// columns a file written before they existed read as null, and a file of the day layout
/// (no `date` column) gets its folder's day.
fn read_stored(root: &ArchiveRoot, path: &str, table: Table) -> Result<Vec<RecordBatch>, ArchiveError> {
    // The whole file at once: the day is held in memory to be sorted anyway.
    decode_stored(root.read(path)?, path, table)
}

/// [`read_stored`] of the bytes of `path`, read already.
pub(crate) fn decode_stored(bytes: bytes::Bytes, path: &str, table: Table) -> Result<Vec<RecordBatch>, ArchiveError> {
    let perr = |e: parquet::errors::ParquetError| ArchiveError::Parquet { path: PathBuf::from(path), message: e.to_string() };
    let schema_err = |e: seedwatch_schemas::arrow::error::ArrowError| ArchiveError::Schema { table: table.name(), message: format!("{path}: {e}") };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?.build().map_err(perr)?;
    let schema = crate::layout::stored_schema(table);
    let folder_day = match crate::layout::span_of(path) {
        Some(Span::Day(date)) => Some(date.format("%Y-%m-%d").to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| ArchiveError::Parquet { path: PathBuf::from(path), message: e.to_string() })?;
        let columns = schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
                Some(column) => cast(column, field.data_type()).map_err(schema_err),
                None if field.name() == crate::layout::DATE_COLUMN => match &folder_day {
                    Some(day) => Ok(crate::layout::date_column(day, batch.num_rows())),
                    None => Err(ArchiveError::Schema { table: table.name(), message: format!("{path}: no `date` column, and not in a day folder") }),
                },
                None => Ok(new_null_array(field.data_type(), batch.num_rows())),
            })
            .collect::<Result<Vec<ArrayRef>, ArchiveError>>()?;
        out.push(RecordBatch::try_new(schema.clone(), columns).map_err(schema_err)?);
    }
    Ok(out)
}

/// `batch` sorted by the table's compaction order (nulls first).
fn sorted(batch: &RecordBatch, table: Table) -> Result<RecordBatch, ArchiveError> {
    let schema_err = |e: seedwatch_schemas::arrow::error::ArrowError| ArchiveError::Schema { table: table.name(), message: e.to_string() };
    let columns: Vec<SortColumn> = table
        .compaction_order()
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn { values: values.clone(), options: Some(SortOptions { descending: false, nulls_first: true }) })
        .collect();
    if columns.is_empty() {
        return Ok(batch.clone());
    }
    let indices = lexsort_to_indices(&columns, None).map_err(schema_err)?;
    take_record_batch(batch, &indices).map_err(schema_err)
}

/// Compact the archive at `root` (a directory or a bucket prefix); returns what each
/// compacted day became.
pub fn compact(root: &ArchiveRoot, options: &CompactOptions, signer: Arc<ManifestSigner>) -> Result<Vec<DayCompacted>, ArchiveError> {
    let before = options.before.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let tables: Vec<Table> = if options.tables.is_empty() { Table::ALL.to_vec() } else { options.tables.clone() };
    // Finish what a stopped writer or compaction left (files recorded but not in place, or
    // not in the log) first: compacting its day again would record the same rows twice.
    drop(crate::ArchiveWriter::open(root.clone(), WriterOptions { signer: Some(signer.clone()), ..options.writer.clone() })?);
    let run_id = format!("compact-{}-{:08x}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), std::process::id());
    // A temp directory of our own, locked while we live, as a writer's (see `writer`).
    let tmp = crate::writer::temp_root(root).join(&run_id);
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let lock_path = tmp.join(crate::writer::WRITER_LOCK);
    let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
    lock.try_lock().map_err(|e| ArchiveError::Io { action: "locking", path: lock_path.clone(), error: e.into() })?;
    let mut manifest = ManifestLog::open(root, signer, &run_id)?;
    let recorded = recorded_files(root)?;
    let mut done = Vec::new();
    for table in tables {
        let Some(delta) = delta::block_on({
            let root = root.clone();
            async move { delta::open(&root, table).await }
        })??
        else {
            continue;
        };
        let mut live = Vec::new();
        for path in delta::live_paths(&delta, table)? {
            let Some(span) = crate::layout::span_of(&path) else { continue };
            let rows = crate::prune::rows_of(root, &path, &recorded)?;
            live.push(LiveFile { path, span, rows });
        }
        for group in groups_to_compact(live, before, options.month_rows) {
            done.push(compact_group(root, &tmp, &run_id, table, &group, &recorded, options, &mut manifest)?);
        }
    }
    drop(lock);
    fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))?;
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
fn compact_group(
    root: &ArchiveRoot,
    tmp: &std::path::Path,
    run_id: &str,
    table: Table,
    group: &Group,
    recorded: &BTreeMap<String, (u64, FileRecord)>,
    options: &CompactOptions,
    manifest: &mut ManifestLog,
) -> Result<DayCompacted, ArchiveError> {
    let (date, files) = (group.label.as_str(), &group.files);
    let mut batches = Vec::new();
    let mut removed = Vec::with_capacity(files.len());
    let mut rows_before = 0u64;
    for path in files {
        let read = read_stored(root, path, table)?;
        let rows: u64 = read.iter().map(|b| b.num_rows() as u64).sum();
        rows_before += rows;
        batches.extend(read);
        removed.push(match recorded.get(path) {
            Some((_, record)) => record.clone(),
            None => {
                let (sha256, bytes) = root.sha256(path)?;
                FileRecord { path: path.clone(), sha256, bytes, rows, min_time: None, max_time: None }
            }
        });
    }
    let all = concat_batches(&crate::layout::stored_schema(table), &batches).map_err(|e| ArchiveError::Schema { table: table.name(), message: e.to_string() })?;
    drop(batches);
    let all = sorted(&all, table)?;

    // New files, encoded and synced in our temp directory.
    let dir = format!("{}/{}", table.name(), group.dir);
    let mut written: Vec<(PathBuf, String, FileRecord)> = Vec::new();
    let mut offset = 0;
    while offset < all.num_rows() {
        let len = options.max_file_rows.min(all.num_rows() - offset);
        let part = all.slice(offset, len);
        offset += len;
        let name = format!("part-{run_id}-{:06}.parquet", written.len() + 1);
        let (tmp_file, target) = (tmp.join(&name), format!("{dir}/{name}"));
        // Compacted files are large: zstd whatever their size.
        let props = file_properties(&part, &options.writer, true, &tmp_file)?;
        let record = encode_to(table, &part, props, &tmp_file, target.clone())?;
        written.push((tmp_file, target, record));
    }
    let rows_after: u64 = written.iter().map(|(_, _, r)| r.rows).sum();
    if rows_after != rows_before {
        return Err(ArchiveError::Schema { table: table.name(), message: format!("compacting {date}: {rows_before} rows read, {rows_after} written") });
    }
    // In a bucket, staged there before they are recorded: whoever finishes a compaction that
    // stopped after its entry finds them (`writer::recover_staged`).
    let mut staged = Vec::new();
    if let ArchiveRoot::S3(_) = root {
        for (tmp_file, target, _) in &written {
            let key = format!("{STAGED_DIR}/{run_id}/{}", target.rsplit('/').next().unwrap_or(target));
            root.upload(tmp_file, &key)?;
            staged.push(key);
        }
    }
    stop_here("written");

    let added: Vec<FileRecord> = written.iter().map(|(_, _, r)| r.clone()).collect();
    manifest.append(Action::Compact, added.clone(), removed.clone())?;
    stop_here("recorded");
    match root {
        ArchiveRoot::Local(path) => {
            let folder = path.join(&dir);
            fs::create_dir_all(&folder).map_err(io_err("creating", &folder))?;
            for (tmp_file, target, _) in &written {
                let target = path.join(target);
                fs::rename(tmp_file, &target).map_err(io_err("renaming into", &target))?;
            }
            let dir = path.join(&dir);
            File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", &dir))?;
        }
        ArchiveRoot::S3(_) => {
            for ((tmp_file, target, _), key) in written.iter().zip(&staged) {
                root.copy(key, target)?;
                fs::remove_file(tmp_file).map_err(io_err("removing", tmp_file))?;
            }
        }
    }
    delta::commit_blocking(root, None, table, Change::Compact, added.clone(), removed.iter().map(|r| r.path.clone()).collect())?;
    for record in &removed {
        root.delete(&record.path)?;
        // A day folder whose files went into the month's leaves with them (a writer's new
        // file there since would keep it).
        if let (ArchiveRoot::Local(path), Some((folder, _))) = (root, record.path.rsplit_once('/')) {
            let folder = path.join(folder);
            if fs::read_dir(&folder).is_ok_and(|mut d| d.next().is_none()) {
                let _ = fs::remove_dir(&folder);
            }
        }
    }
    for key in &staged {
        root.delete(key)?;
    }
    let day = DayCompacted {
        table,
        date: date.to_string(),
        days: group.days.max(1),
        rows: rows_after,
        files_before: removed.len(),
        bytes_before: removed.iter().map(|r| r.bytes).sum(),
        files_after: added.len(),
        bytes_after: added.iter().map(|r| r.bytes).sum(),
    };
    tracing::info!(table = table.name(), date, rows = day.rows, files_before = day.files_before, files_after = day.files_after, bytes_before = day.bytes_before, bytes_after = day.bytes_after, "compacted a day");
    Ok(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, rows: u64) -> LiveFile {
        LiveFile { path: path.to_string(), span: crate::layout::span_of(path).expect("a data file's path"), rows }
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn summary(groups: &[Group]) -> Vec<(String, String, usize, usize)> {
        groups.iter().map(|g| (g.dir.clone(), g.label.clone(), g.days, g.files.len())).collect()
    }

    #[test]
    fn quiet_days_go_into_their_months_file_and_busy_days_keep_their_own() {
        let live = vec![
            file("login/date=2026-09-29/part-a.parquet", 10),
            file("login/date=2026-09-30/part-a.parquet", 10),
            file("login/date=2026-09-30/part-b.parquet", 10),
            // Busy: a day of its own, two files into one.
            file("login/date=2026-10-01/part-a.parquet", 60),
            file("login/date=2026-10-01/part-b.parquet", 60),
            // Busy and one compacted file already: left alone.
            file("login/date=2026-10-02/part-compact-x-000001.parquet", 500),
            file("login/date=2026-10-03/part-a.parquet", 10),
            // Today's (not before the cutoff): left for later.
            file("login/date=2026-10-04/part-a.parquet", 10),
        ];
        let groups = groups_to_compact(live, date("2026-10-04"), 100);
        assert_eq!(
            summary(&groups),
            vec![
                ("month=2026-09".into(), "2026-09".into(), 2, 3),
                ("month=2026-10".into(), "2026-10".into(), 1, 1),
                ("date=2026-10-01".into(), "2026-10-01".into(), 1, 2),
            ]
        );
    }

    #[test]
    fn a_months_file_alone_is_compacted_already_and_a_late_day_is_folded_into_it() {
        let compacted = file("login/month=2026-09/part-compact-x-000001.parquet", 3000);
        assert!(groups_to_compact(vec![compacted.clone()], date("2026-12-01"), 100).is_empty());
        let late = file("login/date=2026-09-03/part-late.parquet", 5);
        let groups = groups_to_compact(vec![compacted, late], date("2026-12-01"), 100);
        assert_eq!(summary(&groups), vec![("month=2026-09".into(), "2026-09".into(), 1, 2)]);
    }
}
