//! The archive's table format: each table directory (`<root>/login/`, ...) is a Delta Lake
//! table, its log in `_delta_log/` beside the `date=YYYY-MM-DD/` folders.
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
use std::path::Path;
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

/// The partition column of every table: the day of its time column, `YYYY-MM-DD`.
pub const PARTITION_COLUMN: &str = "date";

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

/// The table's schema as Delta stores it: its columns plus the `date` partition column.
fn delta_schema(table: Table) -> Result<StructType, ArchiveError> {
    let mut fields: Vec<_> = table.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(seedwatch_schemas::arrow::datatypes::Field::new(PARTITION_COLUMN, seedwatch_schemas::arrow::datatypes::DataType::Utf8, false));
    let schema = seedwatch_schemas::arrow::datatypes::Schema::new(fields);
    (&schema).try_into_kernel().map_err(|e| delta_err(table)(e.into()))
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
        .with_partition_columns([PARTITION_COLUMN])
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

/// The day folder of a file path under the table (`date=2026-09-01/part-….parquet`).
fn partition_value(path_in_table: &str) -> Option<String> {
    path_in_table.split('/').find_map(|part| part.strip_prefix("date=")).map(str::to_string)
}

/// A file's path inside its table's directory, from its path under the archive root.
fn path_in_table(table: Table, path: &str) -> String {
    path.strip_prefix(table.name()).map(|p| p.trim_start_matches('/')).unwrap_or(path).to_string()
}

fn add_action(table: Table, record: &FileRecord, modified_ms: i64) -> Result<Action, ArchiveError> {
    let path = path_in_table(table, &record.path);
    if partition_value(&path).is_none() {
        return Err(ArchiveError::Schema { table: table.name(), message: format!("{}: not in a date=YYYY-MM-DD folder", record.path) });
    }
    let partition_values = HashMap::from([(PARTITION_COLUMN.to_string(), partition_value(&path))]);
    // The row count lets `count(*)` answer from the log; the time column's range lets a scan
    // with a time filter skip files without opening them (a month out of years). Both are
    // taken as the file was written (see `writer::encode_to`); a file without them (adopted
    // or migrated as found) has the count only. A wrong range would hide rows:
    // tests/table_format.rs checks filtered counts at every file's edges.
    let mut stats = serde_json::json!({ "numRecords": record.rows });
    if let (Some(min), Some(max)) = (record.min_time.and_then(stat_time), record.max_time.and_then(stat_time)) {
        let column = table.date_column();
        stats["minValues"] = serde_json::json!({ column: min });
        stats["maxValues"] = serde_json::json!({ column: max });
    }
    let stats = stats.to_string();
    Ok(Action::Add(Add {
        path,
        partition_values,
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
    let path = path_in_table(table, path);
    let partition_values = HashMap::from([(PARTITION_COLUMN.to_string(), partition_value(&path))]);
    Action::Remove(Remove {
        path,
        data_change: true,
        deletion_timestamp: Some(deleted_ms),
        extended_file_metadata: Some(true),
        partition_values: Some(partition_values),
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
        Change::Append => DeltaOperation::Write { mode: SaveMode::Append, partition_by: Some(vec![PARTITION_COLUMN.to_string()]), predicate: None },
        Change::Prune => DeltaOperation::Delete { predicate: Some(format!("{PARTITION_COLUMN} past retention")) },
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

/// Open every table under `root`, creating those without a log. A table that holds files
/// but no log was written by a seedwatch before the table format: that is an error
/// naming `seedwatch archive migrate`.
pub fn open_all(root: &ArchiveRoot) -> Result<HashMap<Table, DeltaTable>, ArchiveError> {
    let root = root.clone();
    block_on(async move {
        for table in Table::ALL {
            if !is_delta(&root, table).await? && root.list_async(table.name()).await?.iter().any(|(path, _)| path.ends_with(".parquet")) {
                return Err(ArchiveError::Layout {
                    root: root.to_string().into(),
                    message: format!(
                        "table `{}` is in the layout of seedwatch before Delta Lake (Parquet files, no _delta_log): run `seedwatch archive migrate --archive {}` once",
                        table.name(),
                        root
                    ),
                });
            }
        }
        let mut deltas = HashMap::new();
        for table in Table::ALL {
            deltas.insert(table, open_or_create(&root, table).await?);
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

/// What `migrate` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The table.
    pub table: Table,
    /// Data files added to its new log.
    pub files: usize,
    /// Rows in those files (their footers).
    pub rows_in_files: u64,
    /// Rows a query over the new table reads.
    pub rows_in_table: u64,
}

/// Convert an archive written before the table format: each table that holds Parquet files
/// and no log gets a log adding every file as it is (no data is rewritten), then a query over
/// it must read as many rows as the files' footers hold, or this fails naming the table.
/// Tables already converted are left alone, so it can run again after a stop.
pub async fn migrate(root: &Path) -> Result<Vec<Migrated>, ArchiveError> {
    let local = ArchiveRoot::from(root);
    let recorded = if root.join(crate::manifest::MANIFEST_DIR).is_dir() { crate::manifest::recorded_files(&local)? } else { Default::default() };
    let mut migrated = Vec::new();
    for table in Table::ALL {
        let files = crate::writer::parquet_files(&root.join(table.name()))?;
        if is_delta(&local, table).await? || files.is_empty() {
            continue;
        }
        let mut records = Vec::with_capacity(files.len());
        let mut rows_in_files = 0;
        for path in &files {
            let rows = crate::prune::parquet_rows(path)?;
            rows_in_files += rows;
            let relative = crate::manifest::relative_path(root, path);
            let record = match recorded.get(&relative) {
                Some((_, record)) => FileRecord { rows, ..record.clone() },
                None => {
                    let bytes = std::fs::metadata(path).map_err(crate::io_err("reading metadata of", path))?.len();
                    FileRecord { path: relative, sha256: String::new(), bytes, rows, min_time: None, max_time: None }
                }
            };
            records.push(record);
        }
        let mut delta = open_or_create(&local, table).await?;
        commit(&mut delta, table, Change::Append, &records, &[]).await?;
        migrated.push(Migrated { table, files: files.len(), rows_in_files, rows_in_table: 0 });
    }
    if migrated.is_empty() {
        return Ok(migrated);
    }
    let ctx = crate::query::open_session(root).await?;
    for m in &mut migrated {
        // A filter, so the count is read from the files rather than from the log's statistics.
        let column = m.table.date_column();
        let sql = format!("SELECT count(*) FROM {} WHERE \"{column}\" IS NOT NULL OR \"{column}\" IS NULL", m.table.name());
        let batches = crate::query::run_query(&ctx, &sql).await?;
        use seedwatch_schemas::arrow::array::AsArray as _;
        m.rows_in_table = batches.first().and_then(|b| b.column(0).as_primitive_opt::<seedwatch_schemas::arrow::datatypes::Int64Type>()).map_or(0, |c| c.value(0).max(0) as u64);
        if m.rows_in_table != m.rows_in_files {
            return Err(ArchiveError::Layout {
                root: root.to_path_buf(),
                message: format!("table `{}`: its files hold {} rows but the migrated table reads {}", m.table.name(), m.rows_in_files, m.rows_in_table),
            });
        }
    }
    Ok(migrated)
}
