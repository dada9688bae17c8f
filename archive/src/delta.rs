//! The archive's table format: each table directory (`<root>/login/`, ...) is a Delta Lake
//! table, its log in `_delta_log/` beside the `date=YYYY-MM-DD/` and `month=YYYY-MM/`
//! folders (see `layout`). The tables have no partition column: each file holds its rows'
//! `date`, and its Delta statistics give its `date` and time ranges, by which scans skip it.
//!
//! The writer encodes files itself (its encodings and row groups, hashed as they are written,
//! see `writer`), records them in the signed manifest, puts them in place, and then makes them
//! visible with one Delta commit per table that adds them. Queries read through the Delta
//! log, so they see whole commits or nothing: a file in place but not yet committed (or left
//! by a writer that died in between) is not read. Removing files (retention, compaction) is
//! a Delta commit too, before the bytes go.
//!
//! Why Delta and not Iceberg: delta-rs 1.1 is built against the DataFusion, Arrow and
//! object_store versions we use; iceberg-rust 0.10 needs Arrow 58 / DataFusion 53, whose
//! types cannot mix with ours. Delta commits by a conditional put (a local rename-if-absent,
//! S3's `If-None-Match`), so writers on several hosts need no lock service; appends by
//! several writers never conflict. See ARCHITECTURE.md.
//!
//! Delta's API is async; the writer runs on plain threads, so calls go through
//! [`block_on`] onto a small runtime of the archive's own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, Remove, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use seedwatch_schemas::Table;

use crate::manifest::FileRecord;
use crate::store::ArchiveRoot;
use crate::ArchiveError;

/// The partition column of the day layout (`date`, not stored in the files), which
/// `migrate` rewrites; today's tables have none.
pub const DAY_LAYOUT_PARTITION: &str = "date";

/// Where the Delta log of a table lives, under its directory.
pub const LOG_DIR: &str = "_delta_log";

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fn runtime() -> Result<&'static tokio::runtime::Runtime, ArchiveError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("seedwatch-delta")
        .enable_all()
        .build()
        .map_err(|error| ArchiveError::Io { action: "starting the table-format runtime for", path: ".".into(), error })?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Run `future` on the archive's runtime and wait for it, from any thread (inside another
/// runtime too: the future never runs on the caller's).
pub fn block_on<F>(future: F) -> Result<F::Output, ArchiveError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = runtime()?.spawn(future);
    futures::executor::block_on(task).map_err(|e| ArchiveError::Io { action: "waiting for a table-format task of", path: ".".into(), error: std::io::Error::other(e) })
}

/// The error of a Delta operation on `table`.
pub(crate) fn delta_err(table: Table) -> impl FnOnce(deltalake::DeltaTableError) -> ArchiveError {
    move |source| ArchiveError::Delta { table: table.name(), source: Box::new(source) }
}

/// The URL of `table`'s directory under `root` (on local disk it must exist: resolved to
/// an absolute path).
pub fn table_url(root: &ArchiveRoot, table: Table) -> Result<url::Url, ArchiveError> {
    root.url_of(table.name())
}

/// Whether `table` under `root` is a Delta table (has a log).
pub async fn is_delta(root: &ArchiveRoot, table: Table) -> Result<bool, ArchiveError> {
    match root {
        ArchiveRoot::Local(path) => Ok(path.join(table.name()).join(LOG_DIR).is_dir()),
        ArchiveRoot::S3(_) => root.any_under(&format!("{}/{LOG_DIR}", table.name())).await,
    }
}

/// delta-rs finds its S3 store by URL scheme once told about it.
fn register_object_stores() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| deltalake::aws::register_handlers(None));
}

fn table_builder(root: &ArchiveRoot, table: Table) -> Result<DeltaTableBuilder, ArchiveError> {
    register_object_stores();
    let url = table_url(root, table)?;
    Ok(DeltaTableBuilder::from_url(url).map_err(delta_err(table))?.with_storage_options(root.storage_options()))
}

/// The table's schema as Delta stores it: what its files hold, `date` last.
fn delta_schema(table: Table) -> Result<StructType, ArchiveError> {
    crate::layout::stored_schema(table).as_ref().try_into_kernel().map_err(|e| delta_err(table)(e.into()))
}

/// Open `table` under `root`, creating it (empty) if it has no log yet. Several writers may
/// create it at once: the loser of the race opens the winner's.
pub async fn open_or_create(root: &ArchiveRoot, table: Table) -> Result<DeltaTable, ArchiveError> {
    if let Some(delta) = open(root, table).await? {
        return Ok(delta);
    }
    if let ArchiveRoot::Local(path) = root {
        let dir = path.join(table.name());
        std::fs::create_dir_all(&dir).map_err(crate::io_err("creating", &dir))?;
    }
    register_object_stores();
    let url = table_url(root, table)?;
    let schema = delta_schema(table)?;
    // Version 0 or nothing: retried at a later version, a second creation would change the
    // metadata under the first writer's appends and fail them.
    let created = deltalake::operations::create::CreateBuilder::new()
        .with_location(url.to_string())
        .with_storage_options(root.storage_options())
        .with_table_name(table.name())
        .with_columns(schema.fields().cloned())
        .with_save_mode(SaveMode::Ignore)
        .with_commit_properties(deltalake::kernel::transaction::CommitProperties::default().with_max_retries(0))
        .await;
    match created {
        Ok(table) => Ok(table),
        // Another writer created it between our look and our commit.
        Err(_) if is_delta(root, table).await? => open(root, table).await?.ok_or_else(|| delta_err(table)(deltalake::DeltaTableError::NotInitialized)),
        Err(e) => Err(delta_err(table)(e)),
    }
}

/// Open `table` under `root` if it is a Delta table.
pub async fn open(root: &ArchiveRoot, table: Table) -> Result<Option<DeltaTable>, ArchiveError> {
    if !is_delta(root, table).await? {
        return Ok(None);
    }
    let mut delta = table_builder(root, table)?.build().map_err(delta_err(table))?;
    match delta.load().await {
        Ok(()) => Ok(Some(delta)),
        // Another writer is creating it: its log folder is there, its first commit not yet
        // (two detectors starting at once hit this).
        Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_err(table)(e)),
    }
}

/// A file's path inside its table's directory, from its path under the archive root.
fn path_in_table(table: Table, path: &str) -> String {
    path.strip_prefix(table.name()).map(|p| p.trim_start_matches('/')).unwrap_or(path).to_string()
}

fn add_action(table: Table, record: &FileRecord, modified_ms: i64) -> Result<Action, ArchiveError> {
    let path = path_in_table(table, &record.path);
    if crate::layout::span_of(&path).is_none() {
        return Err(ArchiveError::Schema { table: table.name(), message: format!("{}: not in a date=YYYY-MM-DD or month=YYYY-MM folder", record.path) });
    }
    // The row count lets `count(*)` answer from the log; the time column's range, and the
    // `date` range that follows from it, let a scan with a time or date filter skip files
    // without opening them (a month out of years). Both are taken as the file was written
    // (see `writer::encode_to`); a file without them (adopted as found) has the count only.
    // A wrong range would hide rows: tests/table_format.rs checks filtered counts at every
    // file's edges.
    let mut stats = serde_json::json!({ "numRecords": record.rows });
    if let (Some(min), Some(max)) = (record.min_time, record.max_time) {
        if let (Some(min_time), Some(max_time)) = (stat_time(min), stat_time(max)) {
            let (column, date) = (table.date_column(), crate::layout::DATE_COLUMN);
            let day = |ms: i64| crate::layout::day_string(ms.div_euclid(crate::layout::DAY_MS));
            stats["minValues"] = serde_json::json!({ column: min_time, date: day(min) });
            stats["maxValues"] = serde_json::json!({ column: max_time, date: day(max) });
        }
    }
    let stats = stats.to_string();
    Ok(Action::Add(Add {
        path,
        partition_values: HashMap::new(),
        size: record.bytes as i64,
        modification_time: modified_ms,
        data_change: true,
        stats: Some(stats),
        ..Default::default()
    }))
}

/// A time as Delta's statistics write it (ISO 8601 UTC, milliseconds).
fn stat_time(ms: i64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// A Remove needs only the path; its optional size is left out rather than guessed.
fn remove_action(table: Table, path: &str, deleted_ms: i64) -> Action {
    Action::Remove(Remove {
        path: path_in_table(table, path),
        data_change: true,
        deletion_timestamp: Some(deleted_ms),
        extended_file_metadata: Some(true),
        partition_values: Some(HashMap::new()),
        ..Default::default()
    })
}

/// What a commit to one table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New files (a writer's commit, or files found in place that the log lacks).
    Append,
    /// Whole days removed (retention).
    Prune,
    /// A day's files replaced by others holding the same rows.
    Compact,
}

/// Commit `added` and `removed` (paths under the archive root) to `delta` as one version.
/// Concurrent appends by other writers are retried over by Delta; a concurrent removal of
/// a file this commit removes too fails it.
pub async fn commit(delta: &mut DeltaTable, table: Table, change: Change, added: &[FileRecord], removed: &[String]) -> Result<u64, ArchiveError> {
    if added.is_empty() && removed.is_empty() {
        return Ok(delta.version().unwrap_or(0));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions: Vec<Action> = removed.iter().map(|r| remove_action(table, r, now)).collect();
    for record in added {
        actions.push(add_action(table, record, now)?);
    }
    let operation = match change {
        Change::Append => DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None },
        Change::Prune => DeltaOperation::Delete { predicate: Some("date past retention".to_string()) },
        Change::Compact => DeltaOperation::Optimize { predicate: None, target_size: 0 },
    };
    let snapshot = delta.snapshot().map_err(delta_err(table))?;
    let finalized = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), delta.log_store(), operation)
        .await
        .map_err(delta_err(table))?;
    let version = finalized.version();
    delta.update_incremental(None).await.map_err(delta_err(table))?;
    Ok(version)
}

/// Paths under the archive root of every file `delta`'s current version holds.
pub fn live_paths(delta: &DeltaTable, table: Table) -> Result<Vec<String>, ArchiveError> {
    let snapshot = delta.snapshot().map_err(delta_err(table))?;
    let mut paths: Vec<String> = snapshot.log_data().into_iter().map(|file| format!("{}/{}", table.name(), file.path())).collect();
    paths.sort();
    Ok(paths)
}

/// A provider that reads `delta` with `schema` (the table's columns as the archive's
/// queries want them: strings as views, times in milliseconds, plus `date`).
pub fn provider(delta: &DeltaTable, table: Table, schema: Arc<seedwatch_schemas::arrow::datatypes::Schema>) -> Result<Arc<dyn datafusion::catalog::TableProvider>, ArchiveError> {
    let snapshot = delta.snapshot().map_err(delta_err(table))?.snapshot().clone();
    let config = deltalake::delta_datafusion::DeltaScanConfig::new().with_schema(schema);
    let scan = deltalake::delta_datafusion::DeltaScanNext::new(snapshot, config).map_err(|e| ArchiveError::Query(e.to_string()))?;
    Ok(Arc::new(scan))
}

/// Commit to `table` on the archive's runtime, opening (or creating) it first if `cached`
/// is none; returns the table at its new version for the next commit.
pub fn commit_blocking(root: &ArchiveRoot, cached: Option<DeltaTable>, table: Table, change: Change, added: Vec<FileRecord>, removed: Vec<String>) -> Result<DeltaTable, ArchiveError> {
    let root = root.clone();
    block_on(async move {
        let mut delta = match cached {
            Some(delta) => delta,
            None => open_or_create(&root, table).await?,
        };
        commit(&mut delta, table, change, &added, &removed).await?;
        Ok(delta)
    })?
}

/// Add to `table`'s log, read afresh, those of `added` it does not hold yet: a commit that
/// failed (a full disk) may still have landed, or landed and then failed its checkpoint.
pub fn append_missing(root: &ArchiveRoot, table: Table, added: Vec<FileRecord>) -> Result<DeltaTable, ArchiveError> {
    let root = root.clone();
    block_on(async move {
        let mut delta = open_or_create(&root, table).await?;
        let live: std::collections::BTreeSet<String> = live_paths(&delta, table)?.into_iter().collect();
        let missing: Vec<FileRecord> = added.into_iter().filter(|r| !live.contains(&r.path)).collect();
        if !missing.is_empty() {
            commit(&mut delta, table, Change::Append, &missing, &[]).await?;
        }
        Ok(delta)
    })?
}

/// Open every table under `root`, creating those without a log. A table of an earlier
/// seedwatch's layout (files but no log: before the table format; `date` a partition
/// column: the day layout) is an error naming `seedwatch archive migrate`.
pub fn open_all(root: &ArchiveRoot) -> Result<HashMap<Table, DeltaTable>, ArchiveError> {
    let root = root.clone();
    block_on(async move {
        let needs_migration = |table: Table, layout: &str| ArchiveError::Layout {
            root: root.to_string().into(),
            message: format!("table `{}` is in the layout of seedwatch {layout}: run `seedwatch archive migrate --archive {root}` once", table.name()),
        };
        for table in Table::ALL {
            if !is_delta(&root, table).await? && root.list_async(table.name()).await?.iter().any(|(path, _)| path.ends_with(".parquet")) {
                return Err(needs_migration(table, "before Delta Lake (Parquet files, no _delta_log)"));
            }
        }
        let mut deltas = HashMap::new();
        for table in Table::ALL {
            let delta = open_or_create(&root, table).await?;
            if is_day_layout(&delta) {
                return Err(needs_migration(table, "before month files, the day layout (`date` a partition column, not in the files)"));
            }
            deltas.insert(table, delta);
        }
        Ok(deltas)
    })?
}

/// Make each table's log hold exactly the files the manifest says are in place (`recorded`):
/// files a writer recorded and put in place but died before committing are added; files the
/// manifest removed (a prune or compaction that stopped before its Delta commit) are removed
/// from the log and from disk. Another writer committing the same files meanwhile is harmless:
/// the log keeps one entry per path.
pub fn reconcile(root: &ArchiveRoot, deltas: &mut HashMap<Table, DeltaTable>, recorded: &std::collections::BTreeMap<String, (u64, FileRecord)>) -> Result<(), ArchiveError> {
    for table in Table::ALL {
        let Some(delta) = deltas.remove(&table) else { continue };
        let live: std::collections::BTreeSet<String> = live_paths(&delta, table)?.into_iter().collect();
        let prefix = format!("{}/", table.name());
        let wanted: Vec<&FileRecord> = recorded.iter().filter(|(path, _)| path.starts_with(&prefix)).map(|(_, (_, r))| r).collect();
        let mut added = Vec::new();
        for record in wanted.iter().filter(|r| !live.contains(&r.path)) {
            if root.is_file(&record.path)? {
                added.push((*record).clone());
            }
        }
        let wanted_paths: std::collections::BTreeSet<&str> = wanted.iter().map(|r| r.path.as_str()).collect();
        let removed: Vec<String> = live.iter().filter(|path| !wanted_paths.contains(path.as_str())).cloned().collect();
        if added.is_empty() && removed.is_empty() {
            deltas.insert(table, delta);
            continue;
        }
        tracing::info!(table = table.name(), added = added.len(), removed = removed.len(), "bringing the table's log in line with the manifest (a writer stopped between them)");
        let delta = commit_blocking(root, Some(delta), table, Change::Append, added, removed.clone())?;
        for path in &removed {
            root.delete(path)?;
        }
        deltas.insert(table, delta);
    }
    Ok(())
}

fn stop_here(point: &str) {
    crate::stop_for_tests("SEEDWATCH_TEST_STOP_MIGRATION", point);
}

/// Whether `delta` is in the day layout: `date` a partition column, taken from the folder
/// and not stored in the files.
pub fn is_day_layout(delta: &DeltaTable) -> bool {
    delta.snapshot().is_ok_and(|s| s.metadata().partition_columns().iter().any(|c| c == DAY_LAYOUT_PARTITION))
}

/// What `migrate` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The table.
    pub table: Table,
    /// Data files its new log holds.
    pub files: usize,
    /// Of those, files rewritten to hold their `date` (the rest are as they were).
    pub rewritten: usize,
    /// Rows in the table's files before (their footers).
    pub rows_in_files: u64,
    /// Rows a query over the new table reads.
    pub rows_in_table: u64,
}

/// Whether `bytes`, the Parquet file at `path`, store a `date` column.
fn stores_date(bytes: bytes::Bytes, path: &str) -> Result<bool, ArchiveError> {
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(bytes).map_err(|e| ArchiveError::Parquet { path: path.into(), message: e.to_string() })?;
    let schema = parquet::file::reader::FileReader::metadata(&reader).file_metadata().schema_descr_ptr();
    Ok(schema.columns().iter().any(|c| c.name() == crate::layout::DATE_COLUMN))
}

/// Convert the tables of an archive written by an earlier seedwatch, each as one atomic
/// change: a table with no log (before the table format) gets one; a table of the day layout
/// (`date` a partition column) loses the partition column. Each file that does not store its
/// `date` is rewritten beside itself with it (`part-migrate-…`), recorded in the manifest
/// (one `compact` entry: same rows, other files) before the table's log switches to it; the
/// old file goes after. Then a query over the table must read as many rows as the old files'
/// footers held, or this fails naming the table.
///
/// Tables already converted are left alone, so it can run again after a stop: a run that
/// stopped after its manifest entry is finished from the entry, and files a run wrote but
/// never recorded are removed first.
pub async fn migrate(root: &ArchiveRoot, signer: Option<Arc<crate::manifest::ManifestSigner>>) -> Result<Vec<Migrated>, ArchiveError> {
    use crate::manifest::{recorded_files, Action as Entry, ManifestLog, MANIFEST_DIR};
    use std::collections::BTreeSet;
    let has_manifest = root.any_under(MANIFEST_DIR).await?;
    // Refused before anything is written: migrating rewrites files, and a signed manifest
    // records every file.
    let signer = match (has_manifest, signer) {
        (true, None) => {
            return Err(ArchiveError::Layout {
                root: root.to_string().into(),
                message: "the archive has a signed manifest: migrating it rewrites files, which needs the signing key (--signing-key or $SEEDWATCH_SIGNING_KEY)".into(),
            })
        }
        (_, signer) => signer,
    };
    let run_id = format!("migrate-{}-{:08x}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), std::process::id());
    let mut migrated = Vec::new();
    for table in Table::ALL {
        let existing = open(root, table).await?;
        if existing.as_ref().is_some_and(|d| !is_day_layout(d)) {
            continue;
        }
        let on_disk: Vec<String> = root.data_files(table.name())?;
        // What the table holds now: its log's files, or every file in place (no log).
        let live: BTreeSet<String> = match &existing {
            Some(delta) => live_paths(delta, table)?.into_iter().collect(),
            None => on_disk.iter().cloned().collect(),
        };
        if existing.is_none() && live.is_empty() {
            continue;
        }
        let recorded = if has_manifest { recorded_files(root)? } else { Default::default() };
        let prefix = format!("{}/", table.name());
        let active: BTreeSet<String> = recorded.keys().filter(|p| p.starts_with(&prefix)).cloned().collect();
        let is_ours = |path: &str| path.rsplit('/').next().is_some_and(|name| name.starts_with("part-migrate-"));
        let record_of = |path: &str| -> Result<FileRecord, ArchiveError> {
            Ok(match recorded.get(path) {
                Some((_, record)) => record.clone(),
                None => {
                    let (sha256, bytes) = root.sha256(path)?;
                    FileRecord { path: path.to_string(), sha256, bytes, rows: crate::prune::rows_of(root, path, &recorded)?, min_time: None, max_time: None }
                }
            })
        };
        // A run that stopped after its manifest entry: the entry says what the table holds.
        let finishing = has_manifest && active.iter().any(|p| !live.contains(p) && is_ours(p)) && active.iter().all(|p| on_disk.contains(p));
        let (kept, added, removed): (Vec<FileRecord>, Vec<FileRecord>, Vec<String>) = if finishing {
            let kept = active.iter().filter(|p| live.contains(*p)).map(|p| record_of(p)).collect::<Result<_, _>>()?;
            let added = active.iter().filter(|p| !live.contains(*p)).map(|p| record_of(p)).collect::<Result<_, _>>()?;
            (kept, added, live.iter().filter(|p| !active.contains(*p)).cloned().collect())
        } else {
            // Files a stopped run wrote but never recorded.
            for path in on_disk.iter().filter(|p| is_ours(p) && !live.contains(*p) && !active.contains(*p)) {
                root.delete(path)?;
            }
            // New files are encoded here first: in place on disk, on this host's temp disk
            // for a bucket (then uploaded under their name).
            let staging = crate::writer::temp_root(root).join(&run_id);
            let (mut kept, mut added, mut removed, mut removed_records) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for path in &live {
                // Read once: most files (all of a day-layout table's) are rewritten.
                let bytes = root.read(path)?;
                if stores_date(bytes.clone(), path)? {
                    kept.push(record_of(path)?);
                    continue;
                }
                let old = record_of(path)?;
                let batches = crate::compact::decode_stored(bytes, path, table)?;
                let batch = seedwatch_schemas::arrow::compute::concat_batches(&crate::layout::stored_schema(table), &batches)
                    .map_err(|e| ArchiveError::Schema { table: table.name(), message: e.to_string() })?;
                let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
                let new_path = format!("{folder}/part-{run_id}-{:06}.parquet", added.len() + 1);
                let target = match root {
                    ArchiveRoot::Local(dir) => dir.join(&new_path),
                    ArchiveRoot::S3(_) => {
                        std::fs::create_dir_all(&staging).map_err(crate::io_err("creating", &staging))?;
                        staging.join(new_path.rsplit('/').next().unwrap_or(&new_path))
                    }
                };
                let props = crate::writer::file_properties(&batch, &crate::WriterOptions::default(), true, &target)?;
                let record = crate::writer::encode_to(table, &batch, props, &target, new_path.clone())?;
                if record.rows != old.rows {
                    return Err(ArchiveError::Schema { table: table.name(), message: format!("migrating {path}: {} rows read, {} written", old.rows, record.rows) });
                }
                match root {
                    ArchiveRoot::Local(dir) => {
                        let dir = dir.join(folder);
                        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(crate::io_err("syncing", &dir))?;
                    }
                    ArchiveRoot::S3(_) => {
                        root.upload(&target, &new_path)?;
                        std::fs::remove_file(&target).map_err(crate::io_err("removing", &target))?;
                    }
                }
                added.push(record);
                removed.push(path.clone());
                removed_records.push(old);
            }
            stop_here("written");
            // (An archive without a manifest gets one from its next writer, which adopts its files.)
            if let (true, false, Some(signer)) = (has_manifest, added.is_empty(), &signer) {
                ManifestLog::open(root, signer.clone(), &run_id)?.append(Entry::Compact, added.clone(), removed_records)?;
            }
            stop_here("recorded");
            (kept, added, removed)
        };
        let rows_in_files: u64 = kept.iter().chain(&added).map(|r| r.rows).sum();
        match existing {
            // (A day-layout table's files never store their date: all of them are rewritten.)
            Some(mut delta) => commit_relayout(&mut delta, table, &added, &removed).await?,
            None => {
                let mut delta = open_or_create(root, table).await?;
                let all: Vec<FileRecord> = kept.iter().cloned().chain(added.iter().cloned()).collect();
                commit(&mut delta, table, Change::Append, &all, &[]).await?;
            }
        }
        for path in &removed {
            root.delete(path)?;
        }
        migrated.push(Migrated { table, files: kept.len() + added.len(), rewritten: added.len(), rows_in_files, rows_in_table: 0 });
    }
    if let ArchiveRoot::S3(_) = root {
        let staging = crate::writer::temp_root(root).join(&run_id);
        if staging.is_dir() {
            std::fs::remove_dir_all(&staging).map_err(crate::io_err("removing", &staging))?;
        }
    }
    if migrated.is_empty() {
        return Ok(migrated);
    }
    let ctx = crate::query::open_session(root.clone()).await?;
    for m in &mut migrated {
        // A filter, so the count is read from the files rather than from the log's statistics.
        let column = m.table.date_column();
        let sql = format!("SELECT count(*) FROM {} WHERE \"{column}\" IS NOT NULL OR \"{column}\" IS NULL", m.table.name());
        let batches = crate::query::run_query(&ctx, &sql).await?;
        use seedwatch_schemas::arrow::array::AsArray as _;
        m.rows_in_table = batches.first().and_then(|b| b.column(0).as_primitive_opt::<seedwatch_schemas::arrow::datatypes::Int64Type>()).map_or(0, |c| c.value(0).max(0) as u64);
        if m.rows_in_table != m.rows_in_files {
            return Err(ArchiveError::Layout {
                root: root.to_string().into(),
                message: format!("table `{}`: its files hold {} rows but the migrated table reads {}", m.table.name(), m.rows_in_files, m.rows_in_table),
            });
        }
    }
    Ok(migrated)
}

/// One commit taking `delta` out of the day layout: the metadata without the partition
/// column, the old files removed and their rewrites (which store `date`) added.
async fn commit_relayout(delta: &mut DeltaTable, table: Table, added: &[FileRecord], removed: &[String]) -> Result<(), ArchiveError> {
    let snapshot = delta.snapshot().map_err(delta_err(table))?;
    let old = snapshot.metadata();
    let schema = delta_schema(table)?;
    let value = serde_json::json!({
        "id": old.id(),
        "name": old.name(),
        "description": old.description(),
        "format": { "provider": "parquet", "options": {} },
        "schemaString": serde_json::to_string(&schema).map_err(|e| delta_err(table)(e.into()))?,
        "partitionColumns": Vec::<String>::new(),
        "configuration": old.configuration(),
        "createdTime": old.created_time(),
    });
    let metadata: deltalake::kernel::Metadata = serde_json::from_value(value).map_err(|e| delta_err(table)(e.into()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions = vec![Action::Metadata(metadata)];
    actions.extend(removed.iter().map(|r| {
        let mut remove = remove_action(table, r, now);
        if let Action::Remove(remove) = &mut remove {
            remove.partition_values = None;
        }
        remove
    }));
    for record in added {
        actions.push(add_action(table, record, now)?);
    }
    let operation = DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by: None, predicate: None };
    CommitBuilder::default().with_actions(actions).build(Some(snapshot), delta.log_store(), operation).await.map_err(delta_err(table))?;
    delta.update_incremental(None).await.map_err(delta_err(table))?;
    Ok(())
}
