//! The Parquet writer: partition by date, deduplicate on id, write atomically.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use chrono::Utc;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use seedwatch_schemas::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use seedwatch_schemas::arrow::compute::{concat_batches, filter_record_batch};
use seedwatch_schemas::arrow::datatypes::TimestampMillisecondType;
use seedwatch_schemas::Table;

use crate::manifest::{file_sha256, relative_path, Action, FileRecord, ManifestLog, ManifestSigner};
use crate::store::ArchiveRoot;
use crate::{io_err, ArchiveError, Sink, Written};

use crate::layout::DAY_MS;

/// Columns that a dictionary never helps, with the encoding that does (`benches/query.rs`
/// prints bytes per event per column). Event times and line numbers rise almost
/// monotonically in a file, so their deltas pack into a few bits; ids are unique, so a
/// dictionary only adds a page to throw away, and their lengths (all alike) pack to nothing
/// when stored apart from the bytes.
const COLUMN_ENCODINGS: &[(&str, Encoding)] = &[
    ("time", Encoding::DELTA_BINARY_PACKED),
    ("line", Encoding::DELTA_BINARY_PACKED),
    ("event_id", Encoding::DELTA_LENGTH_BYTE_ARRAY),
];

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Rows buffered per partition before a file is written.
    pub flush_rows: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level (1-22).
    pub zstd_level: i32,
    /// The key that signs the manifest (see [`crate::manifest`]); without one, no manifest
    /// is kept (library tests; every command that writes an archive gives one).
    pub signer: Option<std::sync::Arc<ManifestSigner>>,
    /// The Kafka consumer group whose partitions this writer claims ([`Sink::claim`]).
    pub consumer_group: String,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self { flush_rows: 512 * 1024, row_group_rows: 128 * 1024, zstd_level: 3, signer: None, consumer_group: String::new() }
    }
}

/// What a commit made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Rows written, by table name.
    pub rows: BTreeMap<&'static str, u64>,
}

impl CommitStats {
    /// Add another commit's counts.
    pub fn merge(&mut self, other: &CommitStats) {
        self.files += other.files;
        self.bytes += other.bytes;
        for (table, rows) in &other.rows {
            *self.rows.entry(table).or_default() += rows;
        }
    }
}

#[derive(Debug, Default)]
struct Partition {
    ids: HashSet<u128>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

/// Writes tables under an archive root. Implements [`Sink`].
#[derive(Debug)]
pub struct ArchiveWriter {
    root: ArchiveRoot,
    options: WriterOptions,
    /// This writer's temp directory; files move (or are uploaded) from here into place.
    tmp: PathBuf,
    /// Locked while this writer lives (see `stale_temp_dirs`).
    _alive: File,
    run_id: String,
    sequence: u64,
    partitions: HashMap<(Table, i64), Partition>,
    /// Dead letters are partitioned by arrival date, which differs between
    /// runs, so their ids are checked against the whole table.
    dead_letter_ids: Option<HashSet<u128>>,
    /// Newest day each table has been written: a day partition two days behind is closed.
    newest_day: HashMap<Table, i64>,
    /// Encodes files on a pool of threads; they are renamed into place in order.
    files: FilePool,
    stats: CommitStats,
}

/// One file to write: encoded, synced and renamed into place off the caller's thread.
#[derive(Debug)]
struct FileJob {
    table: Table,
    batch: RecordBatch,
    props: WriterProperties,
    tmp: PathBuf,
    place: Place,
    /// Its path under the archive root, as the manifest names it.
    path: String,
}

/// How an encoded file goes into place.
#[derive(Debug, Clone)]
enum Place {
    /// Renamed from the temp directory to `target` (in `dir`) on local disk.
    Rename { dir: PathBuf, target: PathBuf },
    /// Uploaded as soon as it is encoded to `staged` (under the bucket's `_tmp/<writer>/`,
    /// where recovery finds it), then copied into place at the commit.
    Upload { root: ArchiveRoot, staged: String },
}

/// A file encoded and synced in the temp directory (or uploaded), to be put into place.
#[derive(Debug)]
struct Encoded {
    table: Table,
    /// What the manifest records of it (its hash taken as it was written).
    record: FileRecord,
    tmp: PathBuf,
    place: Place,
}

/// Files with fewer rows have no page index (see `file_properties`).
const PAGE_INDEX_ROWS: usize = 20_000;

/// Files with fewer rows are compressed with LZ4 rather than zstd (see `write_file`).
const SMALL_FILE_ROWS: usize = 1024;

/// Files given to the pool and not yet encoded, at most (however few rows they hold).
const MAX_FILES_IN_FLIGHT: u64 = 64;

/// A file thread's report: the file's sequence number, its rows, and the file or why not;
/// with the job itself when the disk was full (to encode again once there is space).
type Report = (u64, u64, Result<Encoded, ArchiveError>, Option<FileJob>);

/// Threads that encode files. Parquet encoding and zstd are a third of `run`'s
/// work; here they run beside detection and decode, several files at once. At each
/// commit the files encoded since the last one are recorded in the manifest (one
/// entry) and renamed into place in the order they were given (findings before the
/// events they came from, see `flush_in_order`): a commit is what makes rows visible.
///
/// The writer waits for the pool only when the files being encoded hold more than a
/// budget of rows (the memory they keep). Waiting at a fixed count of files instead
/// (one per thread and one more) left a core idle whenever a day of the big table was
/// still encoding behind a few small files: the writer's thread waited for it, the
/// driver with it, and decoding behind both (`run` used 165-170% of two cores; 180-185%
/// with the budget).
#[derive(Debug)]
struct FilePool {
    pool: rayon::ThreadPool,
    threads: usize,
    root: ArchiveRoot,
    report: mpsc::Sender<Report>,
    reports: mpsc::Receiver<Report>,
    /// Sequence number of the next file given (files go into place in this order).
    next_given: u64,
    /// Files given and not yet encoded, and their rows (the batches the threads hold).
    encoding: u64,
    rows_in_flight: u64,
    max_rows_in_flight: u64,
    /// Files encoded and waiting for the commit that puts them in place.
    encoded: BTreeMap<u64, Encoded>,
    /// A file failed: no later file may go into place.
    failed: bool,
    /// Files that found the disk full, by sequence number: kept, batch and all, and encoded
    /// again (in order, before anything newer) at the next write or commit once there is
    /// space. Nothing of them is lost, and nothing after them goes into place before them.
    retry: BTreeMap<u64, FileJob>,
    /// A commit whose files are recorded in the manifest and in place, but whose Delta
    /// commits found the disk full: finished (the tables it had not reached) before the next.
    unlogged: Vec<Encoded>,
    /// Records the files of each commit before they go into place.
    manifest: Option<ManifestLog>,
    /// Each table's Delta log, at the version this writer last saw: a commit's files become
    /// visible to queries when they are added to it.
    deltas: std::collections::HashMap<Table, deltalake::DeltaTable>,
}

impl FilePool {
    fn start(root: &ArchiveRoot, max_rows_in_flight: u64, manifest: Option<ManifestLog>, deltas: std::collections::HashMap<Table, deltalake::DeltaTable>) -> Result<Self, ArchiveError> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("seedwatch-archive-{i}"))
            .build()
            .map_err(|e| ArchiveError::Io { action: "starting the file threads for", path: root.to_string().into(), error: std::io::Error::other(e) })?;
        let (report, reports) = mpsc::channel();
        let (next_given, encoding, rows_in_flight) = (0, 0, 0);
        Ok(Self {
            pool,
            threads,
            root: root.clone(),
            report,
            reports,
            next_given,
            encoding,
            rows_in_flight,
            max_rows_in_flight,
            encoded: BTreeMap::new(),
            failed: false,
            retry: BTreeMap::new(),
            unlogged: Vec::new(),
            manifest,
            deltas,
        })
    }

    fn check_failed(&self) -> Result<(), ArchiveError> {
        if self.failed {
            return Err(ArchiveError::Io { action: "writing files under", path: self.root.to_string().into(), error: std::io::Error::other("an earlier archive file failed") });
        }
        Ok(())
    }

    /// Encode `job` on the pool. Waits first while its rows would take the rows being
    /// encoded past the budget (but never while a thread could be idle), which bounds the
    /// batches held here, and while [`MAX_FILES_IN_FLIGHT`] are.
    ///
    /// The job is never lost: while files wait for space (see `retry`), they are tried
    /// first, and if the disk is still full this one waits with them (the error says so).
    fn send(&mut self, job: FileJob) -> Result<(), ArchiveError> {
        self.check_failed()?;
        let sequence = self.next_given;
        self.next_given += 1;
        if !self.retry.is_empty() {
            if let Err(e) = self.retry_full() {
                self.retry.insert(sequence, job);
                return Err(e);
            }
        }
        let rows = job.batch.num_rows() as u64;
        while self.encoding > self.threads as u64 && (self.rows_in_flight + rows > self.max_rows_in_flight || self.encoding >= MAX_FILES_IN_FLIGHT) {
            if let Err(e) = self.receive(true) {
                if self.failed {
                    return Err(e);
                }
                self.retry.insert(sequence, job);
                return Err(e);
            }
        }
        self.spawn(sequence, job);
        Ok(())
    }

    fn spawn(&mut self, sequence: u64, job: FileJob) {
        let rows = job.batch.num_rows() as u64;
        self.rows_in_flight += rows;
        self.encoding += 1;
        let report = self.report.clone();
        self.pool.spawn(move || {
            let path = job.tmp.clone();
            let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encode_file(&job)))
                .unwrap_or_else(|_| Err(ArchiveError::Parquet { path, message: "the file thread panicked while encoding".into() }));
            let again = matches!(&encoded, Err(e) if e.is_disk_full()).then_some(job);
            // The writer may be gone (the run failed); then the file stays in the temp directory.
            let _ = report.send((sequence, rows, encoded, again));
        });
    }

    /// Encode again the files that found the disk full, and wait for them: the error if
    /// it still is (they stay queued).
    fn retry_full(&mut self) -> Result<(), ArchiveError> {
        for (sequence, job) in std::mem::take(&mut self.retry) {
            self.spawn(sequence, job);
        }
        self.wait_all()
    }

    /// Wait for every file given. Every report is taken, so that each file that found the
    /// disk full is queued again; the first error is returned.
    fn wait_all(&mut self) -> Result<(), ArchiveError> {
        let mut first = None;
        while self.encoding > 0 {
            if let Err(e) = self.receive(true) {
                if self.failed {
                    return Err(e);
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Take one file thread's report, waiting for it (`wait`) or only if one is in;
    /// returns whether one was taken. A failed file is the error.
    fn receive(&mut self, wait: bool) -> Result<bool, ArchiveError> {
        // Every job sends its report (a panic becomes an error), and `self.report` keeps the channel open.
        let report = if wait { self.reports.recv().ok() } else { self.reports.try_recv().ok() };
        let Some((sequence, rows, encoded, again)) = report else { return Ok(false) };
        self.encoding = self.encoding.saturating_sub(1);
        self.rows_in_flight = self.rows_in_flight.saturating_sub(rows);
        match (encoded, again) {
            (Ok(encoded), _) => {
                self.encoded.insert(sequence, encoded);
                Ok(true)
            }
            (Err(e), Some(job)) => {
                // The disk is full: the file removed its partial self; it waits for space.
                self.retry.insert(sequence, job);
                Err(e)
            }
            (Err(e), None) => {
                self.failed = true;
                self.abandon_unrecorded();
                Err(e)
            }
        }
    }

    /// A file failed (a full disk, a failing device): nothing more goes in, so the files
    /// encoded but not yet recorded in a commit can never be, and go now, with those still
    /// being encoded. That frees their space and leaves the temp directory as the last
    /// commit left it; what they held is read again by the next run from the last commit.
    fn abandon_unrecorded(&mut self) {
        while self.encoding > 0 {
            let Ok((sequence, rows, encoded, _)) = self.reports.recv() else { break };
            self.encoding -= 1;
            self.rows_in_flight = self.rows_in_flight.saturating_sub(rows);
            if let Ok(encoded) = encoded {
                self.encoded.insert(sequence, encoded);
            }
        }
        // (Files of `unlogged` are recorded and in place: the next start adds them to the log.)
        self.retry.clear();
        let abandoned: Vec<Encoded> = std::mem::take(&mut self.encoded).into_values().collect();
        if let Err(e) = drop_encoded(&abandoned) {
            tracing::warn!(error = %e, "removing the files of a failed commit");
        }
    }

    /// Take the reports already in, so that a failed file surfaces at the next write
    /// rather than at the commit.
    fn collect_ready(&mut self) -> Result<(), ArchiveError> {
        self.check_failed()?;
        while self.receive(false)? {}
        Ok(())
    }

    /// Wait for every file given, record them in the manifest (one entry), rename them
    /// into place in order and add them to their tables' Delta logs (which makes them
    /// visible). A crash after the entry and before the renames leaves recorded files in
    /// the temp directory (see `recover_recorded`); one before the Delta commits leaves
    /// them in place but unread (see `delta::reconcile`).
    ///
    /// A full disk stops it where it is, and it carries on from there when called again:
    /// files not yet encoded are encoded again (see `retry`), a manifest entry not yet
    /// written is written, Delta commits not yet made are made (see `unlogged`).
    fn finish(&mut self, stats: &mut CommitStats) -> Result<(), ArchiveError> {
        self.check_failed()?;
        self.finish_unlogged(stats)?;
        if !self.retry.is_empty() {
            self.retry_full()?;
        }
        self.wait_all()?;
        if self.encoded.is_empty() {
            return Ok(());
        }
        // Set until every file is in place: after a failure below nothing more goes in.
        self.failed = true;
        let ready: Vec<Encoded> = std::mem::take(&mut self.encoded).into_values().collect();
        if let Some(manifest) = &mut self.manifest {
            hold_commit_for_tests();
            match manifest.append(Action::Write, ready.iter().map(|e| e.record.clone()).collect(), Vec::new()) {
                Ok(_) => {}
                Err(fenced @ ArchiveError::Fenced { .. }) => {
                    // Nothing of this commit was recorded: its files go, and the writer goes on.
                    drop_encoded(&ready)?;
                    self.failed = false;
                    return Err(fenced);
                }
                Err(e) if e.is_disk_full() => {
                    // Nothing was recorded (an entry appears whole or not at all): the
                    // files wait, encoded, for the next try.
                    self.encoded = (0..).zip(ready).collect();
                    self.failed = false;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        // A test hook: stop as a crash would, with the files recorded but not in place.
        if std::env::var_os("SEEDWATCH_TEST_STOP_WRITER").is_some_and(|v| v == "recorded") {
            tracing::error!("SEEDWATCH_TEST_STOP_WRITER=recorded: stopping after the manifest entry (a test hook)");
            std::process::exit(86);
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for Encoded { tmp, place, record, .. } in &ready {
            match place {
                Place::Rename { dir, target } => {
                    fs::rename(tmp, target).map_err(io_err("renaming into", target))?;
                    if !dirs.contains(&dir.as_path()) {
                        dirs.push(dir);
                    }
                }
                Place::Upload { root, staged } => root.copy(staged, &record.path)?,
            }
        }
        for dir in dirs {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))?;
        }
        self.unlogged = ready;
        self.failed = false;
        self.finish_unlogged(stats)
    }

    /// Add the files of the commit in progress, recorded and in place, to their tables' Delta
    /// logs, which makes them visible. Made again after a full disk, a table's commit adds
    /// only the files its log does not hold yet.
    fn finish_unlogged(&mut self, stats: &mut CommitStats) -> Result<(), ArchiveError> {
        while let Some(table) = self.unlogged.first().map(|e| e.table) {
            let (files, rest): (Vec<Encoded>, Vec<Encoded>) = std::mem::take(&mut self.unlogged).into_iter().partition(|e| e.table == table);
            self.unlogged = rest;
            let added: Vec<FileRecord> = files.iter().map(|e| e.record.clone()).collect();
            let delta = match self.deltas.remove(&table) {
                Some(cached) => crate::delta::commit_blocking(&self.root, Some(cached), table, crate::delta::Change::Append, added, Vec::new()),
                // A commit that failed took the table with it: read its log again, and add what it lacks.
                None => crate::delta::append_missing(&self.root, table, added),
            };
            match delta {
                Ok(delta) => {
                    self.deltas.insert(table, delta);
                }
                Err(e) => {
                    self.failed = !e.is_disk_full();
                    self.unlogged.extend(files);
                    return Err(e);
                }
            }
            for Encoded { table, record, place, .. } in &files {
                if let Place::Upload { root, staged } = place {
                    // Committed: the staged copy is no longer needed for recovery.
                    root.delete(staged)?;
                }
                tracing::debug!(table = table.name(), rows = record.rows, bytes = record.bytes, path = %record.path, "archive file written");
                stats.files += 1;
                stats.bytes += record.bytes;
                *stats.rows.entry(table.name()).or_default() += record.rows;
            }
        }
        Ok(())
    }
}

/// Remove the files of a commit that was refused: its temp files, and on object storage
/// their staged copies.
fn drop_encoded(ready: &[Encoded]) -> Result<(), ArchiveError> {
    for Encoded { tmp, place, .. } in ready {
        match fs::remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", tmp)(e)),
        }
        if let Place::Upload { root, staged } = place {
            root.delete(staged)?;
        }
    }
    Ok(())
}

/// A test hook: while the file `$SEEDWATCH_TEST_HOLD_COMMIT` exists, a commit with files
/// waits before its manifest entry (a stalled writer whose partitions move on meanwhile);
/// it says so by creating the same path with `.held` appended.
fn hold_commit_for_tests() {
    let Some(path) = std::env::var_os("SEEDWATCH_TEST_HOLD_COMMIT").map(PathBuf::from) else { return };
    if !path.exists() {
        return;
    }
    tracing::warn!(path = %path.display(), "SEEDWATCH_TEST_HOLD_COMMIT: holding a commit until the file is gone (a test hook)");
    let mut held = path.clone().into_os_string();
    held.push(".held");
    let _ = File::create(PathBuf::from(held));
    while path.exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A file that hashes what is written to it: the manifest's SHA-256 without reading the file again.
struct HashingFile {
    file: File,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Encode `job.batch` to its temp file and sync it (and upload it, to object storage).
fn encode_file(job: &FileJob) -> Result<Encoded, ArchiveError> {
    let FileJob { table, batch, props, tmp, place, path } = job;
    let (table, tmp, place) = (*table, tmp.clone(), place.clone());
    let record = match encode_to(table, batch, props.clone(), &tmp, path.clone()) {
        Ok(record) => record,
        Err(e) => {
            // Its own partial file goes at once (on a full disk, it holds the space).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Place::Upload { root, staged } = &place {
        root.upload(&tmp, staged)?;
        fs::remove_file(&tmp).map_err(io_err("removing", &tmp))?;
    }
    Ok(Encoded { table, record, tmp, place })
}

/// Encode `batch` of `table` to `file` and sync it; what the manifest records of it, as
/// `path` (under the archive root).
pub(crate) fn encode_to(table: Table, batch: &RecordBatch, props: WriterProperties, file: &Path, path: String) -> Result<FileRecord, ArchiveError> {
    let perr = |e: parquet::errors::ParquetError| ArchiveError::Parquet { path: file.to_path_buf(), message: e.to_string() };
    let out = File::create(file).map_err(io_err("creating", file))?;
    let sink = HashingFile { file: out, hasher: sha2::Digest::new(), bytes: 0 };
    // No embedded Arrow schema (1.1 kB a file, a sixth of a quiet day's login file): every
    // reader here reads with the table's schema, and the Parquet types say the rest.
    let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new().with_properties(props).with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(sink, batch.schema(), options).map_err(perr)?;
    writer.write(batch).map_err(perr)?;
    let HashingFile { file: out, hasher, bytes } = writer.into_inner().map_err(perr)?;
    out.sync_all().map_err(io_err("syncing", file))?;
    let times = batch.column_by_name(table.date_column()).and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let (min_time, max_time) = match times {
        Some(t) => (seedwatch_schemas::arrow::compute::min(t), seedwatch_schemas::arrow::compute::max(t)),
        None => (None, None),
    };
    Ok(FileRecord { path, sha256: hex::encode(sha2::Digest::finalize(hasher)), bytes, rows: batch.num_rows() as u64, min_time, max_time })
}

/// How a file of `batch` is written: zstd (LZ4 below [`SMALL_FILE_ROWS`] unless
/// `always_zstd`), the writer's row groups, and [`COLUMN_ENCODINGS`].
pub(crate) fn file_properties(batch: &RecordBatch, options: &WriterOptions, always_zstd: bool, file: &Path) -> Result<WriterProperties, ArchiveError> {
    let level = ZstdLevel::try_new(options.zstd_level).map_err(|e| ArchiveError::Parquet { path: file.to_path_buf(), message: e.to_string() })?;
    // A zstd column chunk costs a compression and a decompression context (parquet 59
    // makes both), and creating each runs `cpuid`, which traps to the hypervisor on VMs:
    // ~30 us per column, more than compressing a small file's columns takes. Small files
    // (a day of a quiet table) are written LZ4; compaction rewrites them as zstd.
    let compression = if batch.num_rows() < SMALL_FILE_ROWS && !always_zstd { Compression::LZ4_RAW } else { Compression::ZSTD(level) };
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        // A page index lets a scan skip pages inside a row group; a small file has a page or
        // two per column, and the index would be a tenth of its bytes.
        .set_statistics_enabled(if batch.num_rows() < PAGE_INDEX_ROWS { EnabledStatistics::Chunk } else { EnabledStatistics::Page })
        .set_offset_index_disabled(batch.num_rows() < PAGE_INDEX_ROWS)
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_created_by(format!("seedwatch {}", env!("CARGO_PKG_VERSION")));
    for (column, encoding) in COLUMN_ENCODINGS {
        if batch.schema().column_with_name(column).is_some() {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false).set_column_encoding(ColumnPath::from(*column), *encoding);
        }
    }
    Ok(props.build())
}

/// `date=YYYY-MM-DD` for a day number since the epoch: the folder of a writer's files.
pub fn partition_dir(day: i64) -> String {
    crate::layout::day_dir(day)
}

fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Every `*.parquet` data file under `dir`, recursively (not under `_`-folders such as
/// `_delta_log`).
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("listing", &d))? {
            let path = entry.map_err(io_err("listing", &d))?.path();
            if path.is_dir() {
                // `_delta_log` holds the table's checkpoints (Parquet too), not its data.
                if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')) {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The identity of each row of `batch`: a hash of its `key_columns` (see
/// [`Table::key_columns`]); a key column the batch lacks (a file written before it
/// existed) counts as null, as a query reads it.
fn row_keys(batch: &RecordBatch, key_columns: &[&str]) -> Result<Vec<u128>, String> {
    if let [only] = key_columns {
        let ids = batch.column_by_name(only).and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| format!("no string column `{only}`"))?;
        // A null id is never a duplicate (and never kept: see `write`).
        return Ok(ids.iter().map(|id| id.map_or(0, id_hash)).collect());
    }
    // All strings (an event's license and id): each value seeds the hash of the next, so
    // no bytes are copied; a null hashes as a byte no string value is.
    let strings: Option<Vec<_>> = key_columns.iter().map(|name| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>())).collect();
    if let Some((last, first)) = strings.as_deref().and_then(|s| s.split_last()) {
        use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};
        fn bytes(column: &seedwatch_schemas::arrow::array::StringArray, row: usize) -> &[u8] {
            if column.is_valid(row) { column.value(row).as_bytes() } else { &[0xff] }
        }
        return Ok((0..batch.num_rows()).map(|row| xxh3_128_with_seed(bytes(last, row), first.iter().fold(0, |seed, c| xxh3_64_with_seed(bytes(c, row), seed)))).collect());
    }
    let columns: Vec<_> = key_columns.iter().map(|name| batch.column_by_name(name)).collect();
    let options = seedwatch_schemas::arrow::util::display::FormatOptions::default().with_null("\u{0}");
    let formatters = columns
        .iter()
        .map(|c| c.map(|c| seedwatch_schemas::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut key = String::new();
    Ok((0..batch.num_rows())
        .map(|row| {
            key.clear();
            for f in &formatters {
                match f {
                    Some(f) => key.push_str(&f.value(row).to_string()),
                    None => key.push('\u{0}'),
                }
                key.push('\u{1f}');
            }
            id_hash(&key)
        })
        .collect())
}

/// Read the key columns of every data file under `dir` (a folder under the root) into `ids`;
/// with `date`, only those of rows of that day (a compacted month holds many).
fn load_ids(root: &ArchiveRoot, dir: &str, key_columns: &[&str], date: Option<&str>, ids: &mut HashSet<u128>) -> Result<(), ArchiveError> {
    match root {
        ArchiveRoot::Local(root) => {
            for path in parquet_files(&root.join(dir))? {
                let file = File::open(&path).map_err(io_err("opening", &path))?;
                read_ids(file, &path, key_columns, date, ids)?;
            }
        }
        ArchiveRoot::S3(_) => {
            for path in root.data_files(dir)? {
                read_ids(root.read(&path)?, Path::new(&path), key_columns, date, ids)?;
            }
        }
    }
    Ok(())
}

/// Read the key columns of one Parquet file into `ids` (of rows of `date` only, if given).
fn read_ids<R: parquet::file::reader::ChunkReader + 'static>(reader: R, path: &Path, key_columns: &[&str], date: Option<&str>, ids: &mut HashSet<u128>) -> Result<(), ArchiveError> {
    let perr = |e: parquet::errors::ParquetError| ArchiveError::Parquet { path: path.to_path_buf(), message: e.to_string() };
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(perr)?;
    let mut indices: Vec<usize> = key_columns.iter().filter_map(|c| builder.schema().index_of(c).ok()).collect();
    if indices.is_empty() {
        return Err(ArchiveError::Parquet { path: path.to_path_buf(), message: format!("none of the key columns {key_columns:?}") });
    }
    if date.is_some() {
        let column = builder.schema().index_of(crate::layout::DATE_COLUMN).map_err(|e| ArchiveError::Parquet { path: path.to_path_buf(), message: e.to_string() })?;
        indices.push(column);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    for batch in builder.with_projection(mask).build().map_err(perr)? {
        let mut batch = batch.map_err(|e| ArchiveError::Parquet { path: path.to_path_buf(), message: e.to_string() })?;
        if let Some(date) = date {
            let arrow_err = |e: seedwatch_schemas::arrow::error::ArrowError| ArchiveError::Parquet { path: path.to_path_buf(), message: e.to_string() };
            let dates = batch.column_by_name(crate::layout::DATE_COLUMN).ok_or_else(|| ArchiveError::Parquet { path: path.to_path_buf(), message: "no `date` column".into() })?;
            let keep = seedwatch_schemas::arrow::compute::kernels::cmp::eq(dates, &StringArray::new_scalar(date)).map_err(arrow_err)?;
            batch = filter_record_batch(&batch, &keep).map_err(arrow_err)?;
        }
        ids.extend(row_keys(&batch, key_columns).map_err(|message| ArchiveError::Parquet { path: path.to_path_buf(), message })?);
    }
    Ok(())
}

impl ArchiveWriter {
    /// A writer under `root` (created if missing): a directory, or a bucket prefix. Files
    /// a writer that stopped had recorded in the manifest but not yet put in place are put
    /// there; its other leftovers are removed (local disk) or left for vacuum (object storage:
    /// no lock there tells a dead writer's staged files from a live one's).
    pub fn open(root: impl Into<ArchiveRoot>, options: WriterOptions) -> Result<Self, ArchiveError> {
        let root: ArchiveRoot = root.into();
        let mut run = [0u8; 8];
        getrandom::fill(&mut run).map_err(|e| ArchiveError::Io {
            action: "seeding a run id for",
            path: root.to_string().into(),
            error: std::io::Error::other(e.to_string()),
        })?;
        let run_id = format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%S"), run.iter().map(|b| format!("{b:02x}")).collect::<String>());
        // Each writer has its own temp directory: several detectors may share one
        // archive, and one must not remove the file another is about to rename.
        let tmp_root = temp_root(&root);
        fs::create_dir_all(&tmp_root).map_err(io_err("creating", &tmp_root))?;
        // Taken once, their locks held until they are gone: putting recorded files into place
        // touches the directories they leave, and another writer starting now must not
        // clean them up too.
        let stale = stale_temp_dirs(&tmp_root)?;
        let mut deltas = crate::delta::open_all(&root)?;
        let manifest = match &options.signer {
            Some(signer) => {
                let mut manifest = ManifestLog::open(&root, signer.clone(), &run_id)?;
                match &root {
                    ArchiveRoot::Local(path) => {
                        recover_recorded(path, &stale)?;
                        adopt_unrecorded(path, &mut manifest)?;
                    }
                    ArchiveRoot::S3(_) => recover_staged(&root)?,
                }
                crate::delta::reconcile(&root, &mut deltas, &crate::manifest::recorded_files(&root)?)?;
                Some(manifest)
            }
            None => None,
        };
        remove_temp_dirs(&stale)?;
        let tmp = tmp_root.join(&run_id);
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let lock_path = tmp.join(WRITER_LOCK);
        let alive = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        alive.try_lock().map_err(|e| ArchiveError::Io { action: "locking", path: lock_path, error: e.into() })?;
        // Files in flight may hold as many rows as one full partition buffer.
        let files = FilePool::start(&root, options.flush_rows as u64, manifest, deltas)?;
        Ok(Self {
            root,
            tmp,
            _alive: alive,
            options,
            run_id,
            sequence: 0,
            partitions: HashMap::new(),
            dead_letter_ids: None,
            newest_day: HashMap::new(),
            files,
            stats: CommitStats::default(),
        })
    }

    /// The archive root.
    pub fn root(&self) -> &ArchiveRoot {
        &self.root
    }

    fn partition(&mut self, table: Table, day: i64) -> Result<&mut Partition, ArchiveError> {
        if !self.partitions.contains_key(&(table, day)) {
            let mut partition = Partition::default();
            if table != Table::DeadLetter {
                let dir = format!("{}/{}", table.name(), partition_dir(day));
                load_ids(&self.root, &dir, table.key_columns(), None, &mut partition.ids)?;
                // A compacted month holds days of a quiet table too (see `layout`).
                if let Some(date) = crate::layout::day_date(day) {
                    let month = format!("{}/{}", table.name(), crate::layout::month_dir(date));
                    load_ids(&self.root, &month, table.key_columns(), Some(&crate::layout::day_string(day)), &mut partition.ids)?;
                }
            }
            self.partitions.insert((table, day), partition);
        }
        self.partitions.get_mut(&(table, day)).ok_or_else(|| ArchiveError::Schema { table: table.name(), message: "partition vanished".into() })
    }

    /// Queue `batch` as a new file of `table` on `day` for the file thread.
    fn write_file(&mut self, table: Table, day: i64, batch: RecordBatch) -> Result<(), ArchiveError> {
        self.sequence += 1;
        let name = format!("part-{}-{:06}.parquet", self.run_id, self.sequence);
        let path = format!("{}/{}/{name}", table.name(), partition_dir(day));
        let place = match &self.root {
            ArchiveRoot::Local(root) => {
                let dir = root.join(table.name()).join(partition_dir(day));
                fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
                Place::Rename { target: dir.join(&name), dir }
            }
            ArchiveRoot::S3(_) => Place::Upload { root: self.root.clone(), staged: format!("{STAGED_DIR}/{}/{name}", self.run_id) },
        };
        let tmp = self.tmp.join(&name);
        let props = file_properties(&batch, &self.options, false, &tmp)?;
        self.files.send(FileJob { table, batch, props, tmp, place, path })?;
        // Errors of files encoded meanwhile surface here rather than at the commit.
        self.files.collect_ready()
    }

    fn flush_partition(&mut self, table: Table, day: i64) -> Result<(), ArchiveError> {
        let Some(partition) = self.partitions.get_mut(&(table, day)) else { return Ok(()) };
        if partition.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut partition.pending);
        partition.pending_rows = 0;
        let batch = concat_batches(&table.schema(), &pending)
            .map_err(|e| ArchiveError::Schema { table: table.name(), message: e.to_string() })?;
        // Each file holds its day as a column: compaction may put a month's days in one file.
        let batch = crate::layout::with_date(table, &batch, day)?;
        self.write_file(table, day, batch)
    }
}

impl Sink for ArchiveWriter {
    fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<Written, ArchiveError> {
        let schema_err = |message: String| ArchiveError::Schema { table: table.name(), message };
        if batch.num_rows() == 0 {
            return Ok(Written::default());
        }
        if batch.schema().fields() != table.schema().fields() {
            return Err(schema_err(format!("batch schema differs from the table schema: {:?}", batch.schema())));
        }
        let times = batch
            .column_by_name(table.date_column())
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
            .ok_or_else(|| schema_err(format!("no timestamp column `{}`", table.date_column())))?;
        let ids = batch
            .column_by_name(table.id_column())
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| schema_err(format!("no string column `{}`", table.id_column())))?;
        let keys = row_keys(batch, table.key_columns()).map_err(schema_err)?;

        let mut days: Vec<i64> = Vec::with_capacity(2);
        for t in times.values().iter() {
            let day = t.div_euclid(DAY_MS);
            if !days.contains(&day) {
                days.push(day);
            }
        }
        if let Some(&newest) = days.iter().max() {
            let day = self.newest_day.entry(table).or_insert(newest);
            *day = (*day).max(newest);
        }
        if table == Table::DeadLetter && self.dead_letter_ids.is_none() {
            let mut all = HashSet::new();
            load_ids(&self.root, table.name(), table.key_columns(), None, &mut all)?;
            self.dead_letter_ids = Some(all);
        }
        let (mut kept, mut duplicates) = (0u64, 0u64);
        let mut new_rows = vec![false; batch.num_rows()];
        for day in days {
            let mut table_ids = if table == Table::DeadLetter { self.dead_letter_ids.take() } else { None };
            let partition = self.partition(table, day)?;
            let ids_seen = table_ids.as_mut().unwrap_or(&mut partition.ids);
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|i| {
                    let in_day = times.value(i).div_euclid(DAY_MS) == day;
                    Some(in_day && !ids.is_null(i) && ids_seen.insert(keys[i]))
                })
                .collect();
            let in_day = times.values().iter().filter(|t| t.div_euclid(DAY_MS) == day).count() as u64;
            let rows = keep.true_count();
            for (i, k) in keep.values().iter().enumerate() {
                new_rows[i] |= k;
            }
            kept += rows as u64;
            duplicates += in_day - rows as u64;
            if rows > 0 {
                let part = if rows == batch.num_rows() { batch.clone() } else { filter_record_batch(batch, &keep).map_err(|e| schema_err(e.to_string()))? };
                partition.pending.push(part);
                partition.pending_rows += rows;
            }
            if table == Table::DeadLetter {
                self.dead_letter_ids = table_ids;
            }
        }
        let new_rows = (duplicates > 0).then(|| BooleanArray::from(new_rows));
        Ok(Written { kept, duplicates, new_rows })
    }

    fn flush_full(&mut self) -> Result<(), ArchiveError> {
        let flush_rows = self.options.flush_rows;
        // A day the table's data has moved two days past is closed: written out now rather than
        // held to the commit, so a long run over sorted history holds about two days per table.
        let closed = |(table, day): &(Table, i64)| *table != Table::Findings && self.newest_day.get(table).is_some_and(|newest| day + 1 < *newest);
        let full: Vec<(Table, i64)> = self.partitions.iter().filter(|(k, p)| p.pending_rows >= flush_rows || (p.pending_rows > 0 && closed(k))).map(|(k, _)| *k).collect();
        if full.is_empty() {
            return Ok(());
        }
        self.flush_in_order(full)
    }

    fn commit(&mut self) -> Result<CommitStats, ArchiveError> {
        let keys: Vec<(Table, i64)> = self.partitions.keys().copied().collect();
        self.flush_in_order(keys)?;
        self.files.finish(&mut self.stats)?;
        Ok(std::mem::take(&mut self.stats))
    }

    fn discard(&mut self) -> Result<(), ArchiveError> {
        // Findings go out (see the trait); files already given to the file threads go into
        // place; pending events go, and the ids are re-read from disk on the next write. A
        // fenced writer writes nothing: the new owner evaluates those events again.
        let fenced = self.files.manifest.as_ref().is_some_and(ManifestLog::is_fenced);
        let findings: Vec<(Table, i64)> = self.partitions.keys().filter(|(table, _)| *table == Table::Findings && !fenced).copied().collect();
        self.flush_in_order(findings)?;
        match self.files.finish(&mut self.stats) {
            Ok(()) | Err(ArchiveError::Fenced { .. }) => {}
            Err(e) => return Err(e),
        }
        self.partitions.clear();
        self.dead_letter_ids = None;
        Ok(())
    }

    fn claim(&mut self, partitions: &[u32]) -> Result<(), ArchiveError> {
        let Some(manifest) = self.files.manifest.as_mut() else { return Ok(()) };
        let seq = manifest.claim(&self.options.consumer_group, partitions)?;
        tracing::info!(group = %self.options.consumer_group, ?partitions, entry = seq, "partitions claimed in the archive manifest");
        Ok(())
    }
}

impl ArchiveWriter {
    /// Write out `keys`, and every pending finding before any of them: a
    /// finding must be durable no later than the events it came from, or a
    /// crash in between would leave events whose findings a restart never
    /// emits again (replayed history produces no findings).
    ///
    /// A finding's day (its `window_start`) is never after the events it came from, so the
    /// findings of days up to the newest day written out are enough.
    fn flush_in_order(&mut self, mut keys: Vec<(Table, i64)>) -> Result<(), ArchiveError> {
        let last_day = keys.iter().map(|(_, day)| *day).max().unwrap_or(i64::MIN);
        keys.extend(self.partitions.keys().filter(|(t, day)| *t == Table::Findings && *day <= last_day).copied());
        keys.sort_by_key(|(table, day)| (*table != Table::Findings, *table, *day));
        keys.dedup();
        for (table, day) in keys {
            self.flush_partition(table, day)?;
        }
        Ok(())
    }
}

/// The file in a writer's temp directory that it holds locked while it lives. The lock goes
/// with the process, so a writer that crashed or was killed is known at once; a live one's
/// directory is never touched, however long it is quiet.
pub(crate) const WRITER_LOCK: &str = ".writer.lock";

/// A temp directory without a lock file (a seedwatch before the locks) idle this long
/// belongs to a writer that stopped.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// A temp directory whose writer stopped, and its lock, held by us until it is removed.
type StaleDir = (PathBuf, Option<File>);

/// Entries of `tmp_root` whose writer stopped: their lock file is not locked (or, without
/// one, they have been idle longer than [`STALE_TEMP`]).
fn stale_temp_dirs(tmp_root: &Path) -> Result<Vec<StaleDir>, ArchiveError> {
    let mut stale = Vec::new();
    for entry in fs::read_dir(tmp_root).map_err(io_err("listing", tmp_root))? {
        let entry = entry.map_err(io_err("listing", tmp_root))?;
        let path = entry.path();
        match File::open(path.join(WRITER_LOCK)) {
            Ok(lock) => match lock.try_lock() {
                Ok(()) => stale.push((path, Some(lock))),
                Err(std::fs::TryLockError::WouldBlock) => {} // its writer lives
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err("locking", path.join(WRITER_LOCK))(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok());
                if age.is_some_and(|a| a > STALE_TEMP) {
                    stale.push((path, None));
                }
            }
            Err(e) => return Err(io_err("opening", path.join(WRITER_LOCK))(e)),
        }
    }
    Ok(stale)
}

/// Remove the temp directories of writers that stopped.
fn remove_temp_dirs(stale: &[StaleDir]) -> Result<(), ArchiveError> {
    for (path, _lock) in stale {
        let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
        removed.map_err(io_err("removing stale temp files in", path))?;
    }
    Ok(())
}

/// Finish what a writer that stopped between recording files in the manifest and renaming
/// them into place left in its temp directory: each recorded file whose bytes still match
/// goes where the manifest says it is. Anything else there was never recorded and is removed
/// with the directory.
fn recover_recorded(root: &Path, stale: &[StaleDir]) -> Result<(), ArchiveError> {
    let leftovers: Vec<PathBuf> = stale.iter().map(|(d, _)| d).filter(|d| d.is_dir()).map(|d| parquet_files(d)).collect::<Result<Vec<_>, _>>()?.concat();
    if leftovers.is_empty() {
        return Ok(());
    }
    let recorded = crate::manifest::recorded_files(&ArchiveRoot::from(root))?;
    let by_name: HashMap<&str, &FileRecord> = recorded.values().filter_map(|(_, r)| r.path.rsplit('/').next().map(|name| (name, r))).collect();
    for file in leftovers {
        let Some(record) = file.file_name().and_then(|n| n.to_str()).and_then(|name| by_name.get(name)) else { continue };
        let target = root.join(&record.path);
        if target.exists() || file_sha256(&file)?.0 != record.sha256 {
            continue;
        }
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            fs::rename(&file, &target).map_err(io_err("renaming into", &target))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))?;
            tracing::info!(path = %record.path, "put a file recorded in the manifest into place (its writer stopped before it could)");
        }
    }
    Ok(())
}

/// Where writers (and compactions) encode files before they go into place, each in a
/// folder of its own: `_tmp/` under a local archive, this host's temp disk for a bucket.
pub(crate) fn temp_root(root: &ArchiveRoot) -> PathBuf {
    match root {
        ArchiveRoot::Local(path) => path.join("_tmp"),
        ArchiveRoot::S3(_) => std::env::temp_dir().join("seedwatch-staging"),
    }
}

/// Where a writer to object storage stages its files under the bucket prefix until they are
/// recorded and copied into place.
pub(crate) const STAGED_DIR: &str = "_tmp";

/// The object-storage twin of `recover_recorded`: each file recorded in the manifest but
/// missing from its place whose staged copy (any writer's) still hashes as recorded is
/// copied into place. Staged files are never deleted here: their writer may be alive.
fn recover_staged(root: &ArchiveRoot) -> Result<(), ArchiveError> {
    let staged = root.list(STAGED_DIR)?;
    if staged.is_empty() {
        return Ok(());
    }
    let recorded = crate::manifest::recorded_files(root)?;
    let by_name: HashMap<&str, &FileRecord> = recorded.values().filter_map(|(_, r)| r.path.rsplit('/').next().map(|name| (name, r))).collect();
    for (path, _) in staged {
        let Some(record) = path.rsplit('/').next().and_then(|name| by_name.get(name)) else { continue };
        if root.is_file(&record.path)? || root.sha256(&path)?.0 != record.sha256 {
            continue;
        }
        root.copy(&path, &record.path)?;
        tracing::info!(path = %record.path, "put a file recorded in the manifest into place (its writer stopped before it could)");
    }
    Ok(())
}

/// Start the manifest of an archive written before it had one: its files are recorded, as
/// found, in an `adopt` entry; from then on they are checked like any other.
fn adopt_unrecorded(root: &Path, manifest: &mut ManifestLog) -> Result<(), ArchiveError> {
    if !manifest.is_empty() {
        return Ok(());
    }
    let files: Vec<PathBuf> = Table::ALL.iter().map(|t| parquet_files(&root.join(t.name()))).collect::<Result<Vec<_>, _>>()?.concat();
    if files.is_empty() {
        return Ok(());
    }
    tracing::warn!(files = files.len(), root = %root.display(), "the archive has no manifest yet: recording its files as found (an `adopt` entry)");
    use rayon::prelude::*;
    let records = files
        .par_iter()
        .map(|path| {
            let (sha256, bytes) = file_sha256(path)?;
            let file = File::open(path).map_err(io_err("opening", path))?;
            let rows = parquet::file::serialized_reader::SerializedFileReader::new(file)
                .map(|r| parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows().max(0) as u64)
                .map_err(|e| ArchiveError::Parquet { path: path.clone(), message: e.to_string() })?;
            Ok(FileRecord { path: relative_path(root, path), sha256, bytes, rows, min_time: None, max_time: None })
        })
        .collect::<Result<Vec<_>, ArchiveError>>()?;
    manifest.append(Action::Adopt, records, Vec::new())?;
    Ok(())
}

/// Total size of the Parquet files of each table under `root`.
pub fn table_sizes(root: &Path) -> Result<Vec<(Table, u64, usize)>, ArchiveError> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let files = parquet_files(&root.join(table.name()))?;
        let mut bytes = 0;
        for f in &files {
            bytes += fs::metadata(f).map_err(io_err("reading metadata of", f))?.len();
        }
        out.push((table, bytes, files.len()));
    }
    Ok(out)
}

/// On-disk bytes of one column of a table, summed over its files (from the Parquet footers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSize {
    /// Column name.
    pub column: String,
    /// Compressed bytes of its column chunks (data, dictionary and page headers).
    pub bytes: u64,
}

/// Per-column compressed size and the row count of `table` under `root`, largest column
/// first: where a table's bytes per event go.
pub fn column_sizes(root: &Path, table: Table) -> Result<(Vec<ColumnSize>, u64), ArchiveError> {
    let mut sizes: Vec<ColumnSize> = Vec::new();
    let mut rows = 0u64;
    for path in parquet_files(&root.join(table.name()))? {
        let perr = |e: parquet::errors::ParquetError| ArchiveError::Parquet { path: path.clone(), message: e.to_string() };
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).map_err(perr)?;
        let metadata = parquet::file::reader::FileReader::metadata(&reader);
        rows += metadata.file_metadata().num_rows().max(0) as u64;
        for group in metadata.row_groups() {
            for chunk in group.columns() {
                let name = chunk.column_path().string();
                let bytes = chunk.compressed_size().max(0) as u64;
                match sizes.iter_mut().find(|s| s.column == name) {
                    Some(s) => s.bytes += bytes,
                    None => sizes.push(ColumnSize { column: name, bytes }),
                }
            }
        }
    }
    sizes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.column.cmp(&b.column)));
    Ok((sizes, rows))
}


#[cfg(test)]
mod tests {
    use super::*;
    use seedwatch_schemas::finding::findings_to_batch;
    use seedwatch_schemas::{Family, Finding, Severity, Status};

    fn finding(id: &str, day: i64) -> Finding {
        Finding {
            finding_id: id.into(),
            version: 1,
            rule: "login.failed_burst".into(),
            title: "t".into(),
            severity: Severity::High,
            status: Status::Open,
            family: Family::Login,
            system: "metrc".into(),
            state: "CA".into(),
            license: "L1".into(),
            location: "loc".into(),
            subject: "u".into(),
            actor: None,
            window_start: day * DAY_MS + 1,
            window_end: day * DAY_MS + 2,
            event_count: 3,
            evidence: vec!["e1".into()],
            detected_at: day * DAY_MS + 3,
            updated_at: day * DAY_MS + 3,
            note: None,
            changed_by: None,
            details: "{}".into(),
            raised: true,
        }
    }

    fn ids_of(mask: &Option<BooleanArray>) -> Option<Vec<bool>> {
        mask.as_ref().map(|m| m.values().iter().collect())
    }

    #[test]
    fn new_rows_marks_what_was_kept_across_days_runs_and_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = |f: &[Finding]| findings_to_batch(f).expect("batch");
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        let first = w.write(Table::Findings, &batch(&[finding("a", 0), finding("b", 1)])).expect("write");
        assert_eq!((first.kept, first.duplicates, ids_of(&first.new_rows)), (2, 0, None));
        // Same run: "a" (day 0) is pending, "c" is new on day 1, "b" repeats on day 1.
        let second = w.write(Table::Findings, &batch(&[finding("a", 0), finding("c", 1), finding("b", 1)])).expect("write");
        assert_eq!((second.kept, second.duplicates, ids_of(&second.new_rows)), (1, 2, Some(vec![false, true, false])));
        assert_eq!(w.commit().expect("commit").files, 2);
        // A later run reads the ids back from the files.
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("reopen");
        let third = w.write(Table::Findings, &batch(&[finding("d", 0), finding("c", 1)])).expect("write");
        assert_eq!((third.kept, third.duplicates, ids_of(&third.new_rows)), (1, 1, Some(vec![true, false])));
        let again = batch(&[finding("d", 0), finding("c", 1)]);
        assert_eq!(third.new_rows_of(&again).expect("filter").num_rows(), 1);
    }

    fn dead_letters(ids: &[&str], day: i64) -> RecordBatch {
        let lines: String = ids
            .iter()
            .map(|id| format!(r#"{{"dead_letter_id":"{id}","received_at":{},"source":"s","line":1,"reason_code":"not_json","reason":"r","raw":"x","raw_bytes":1}}"#, day * DAY_MS + 5) + "\n")
            .collect();
        let schema = seedwatch_schemas::dead_letter::dead_letter_schema();
        let mut reader = seedwatch_schemas::arrow::json::ReaderBuilder::new(schema).build(std::io::Cursor::new(lines)).expect("reader");
        reader.next().expect("a batch").expect("rows")
    }

    #[test]
    fn a_day_two_days_behind_is_written_out_with_the_findings_up_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        let files = |table: Table| parquet_files(&dir.path().join(table.name())).expect("files").len();
        w.write(Table::DeadLetter, &dead_letters(&["a", "b"], 10)).expect("write");
        w.write(Table::Findings, &findings_to_batch(&[finding("f10", 10), finding("f12", 12)]).expect("batch")).expect("write");
        w.write(Table::DeadLetter, &dead_letters(&["c"], 11)).expect("write");
        w.flush_full().expect("flush");
        assert_eq!((files(Table::DeadLetter), files(Table::Findings)), (0, 0), "day 10 is one day behind: still open");
        w.write(Table::DeadLetter, &dead_letters(&["d"], 12)).expect("write");
        w.flush_full().expect("flush");
        w.files.finish(&mut w.stats).expect("files in place"); // flush_full queues; the pool encodes
        // Day 10 closed: its rows are written, and the day-10 finding before them; day 12's finding waits.
        assert_eq!((files(Table::DeadLetter), files(Table::Findings)), (1, 1));
        let stats = w.commit().expect("commit");
        assert_eq!((files(Table::DeadLetter), files(Table::Findings)), (3, 2));
        assert_eq!(stats.rows.get("dead_letter"), Some(&4));
    }

    #[test]
    fn a_discard_writes_the_findings_out_and_drops_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        let files = |table: Table| parquet_files(&dir.path().join(table.name())).expect("files").len();
        w.write(Table::DeadLetter, &dead_letters(&["a"], 10)).expect("write");
        w.write(Table::Findings, &findings_to_batch(&[finding("f10", 10), finding("f11", 11)]).expect("batch")).expect("write");
        w.discard().expect("discard");
        // The findings are durable (their events may be, by an earlier commit); the dead letter is read again.
        assert_eq!((files(Table::DeadLetter), files(Table::Findings)), (0, 2));
        let again = w.write(Table::DeadLetter, &dead_letters(&["a"], 10)).expect("write");
        assert_eq!(again.kept, 1, "a discarded row is new again");
        let f = w.write(Table::Findings, &findings_to_batch(&[finding("f10", 10)]).expect("batch")).expect("write");
        assert_eq!((f.kept, f.duplicates), (0, 1), "a finding written out at the discard is known");
    }

    #[test]
    fn small_files_are_lz4_and_the_rest_zstd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let findings = |day: i64, n: usize| -> Vec<Finding> { (0..n).map(|i| finding(&format!("f{day}-{i}"), day)).collect() };
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        w.write(Table::Findings, &findings_to_batch(&findings(0, SMALL_FILE_ROWS - 1)).expect("batch")).expect("write");
        w.write(Table::Findings, &findings_to_batch(&findings(1, SMALL_FILE_ROWS)).expect("batch")).expect("write");
        w.commit().expect("commit");
        for (day, expected) in [("date=1970-01-01", "LZ4_RAW"), ("date=1970-01-02", "ZSTD")] {
            let files = parquet_files(&dir.path().join("findings").join(day)).expect("files");
            assert_eq!(files.len(), 1, "{day}");
            let file = File::open(&files[0]).expect("open file");
            let meta = parquet::file::reader::SerializedFileReader::new(file).expect("footer");
            let codecs: std::collections::BTreeSet<String> = parquet::file::reader::FileReader::metadata(&meta)
                .row_groups()
                .iter()
                .flat_map(|g| g.columns().iter().map(|c| format!("{:?}", c.compression())))
                .collect();
            assert!(codecs.iter().all(|c| c.starts_with(expected)), "{day}: {codecs:?}");
        }
    }

    #[test]
    fn column_sizes_cover_every_column_and_fit_in_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let findings: Vec<Finding> = (0..500).map(|i| finding(&format!("f{i}"), i % 3)).collect();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        w.write(Table::Findings, &findings_to_batch(&findings).expect("batch")).expect("write");
        w.commit().expect("commit");
        let (sizes, rows) = column_sizes(dir.path(), Table::Findings).expect("sizes");
        assert_eq!(rows, 500);
        let schema = Table::Findings.schema();
        let names: Vec<&str> = sizes.iter().map(|s| s.column.split('.').next().unwrap_or("")).collect();
        for field in schema.fields() {
            assert!(names.contains(&field.name().as_str()), "no size for {}", field.name());
        }
        assert!(sizes.windows(2).all(|w| w[0].bytes >= w[1].bytes), "largest first");
        let files: u64 = table_sizes(dir.path()).expect("table sizes").iter().map(|(_, b, _)| b).sum();
        let columns: u64 = sizes.iter().map(|s| s.bytes).sum();
        assert!(columns > 0 && columns < files, "columns {columns} vs files {files}");
    }

    #[test]
    fn an_event_id_is_a_duplicate_only_under_the_same_license() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = |license: &str, id: &str| {
            format!(r#"{{"event_id":"{id}","time":1793973600000,"system":"metrc","state":"CA","license":"{license}","location":"x","user":"u","outcome":"success","src_ip":"203.0.113.10","source":"s","line":1}}"#)
        };
        let batch = |lines: &[String]| {
            let schema = Table::Events(Family::Login).schema();
            let mut reader = seedwatch_schemas::arrow::json::ReaderBuilder::new(schema).build(std::io::Cursor::new(lines.join("\n"))).expect("reader");
            reader.next().expect("a batch").expect("rows")
        };
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        let first = w.write(Table::Events(Family::Login), &batch(&[line("L1", "1"), line("L2", "1")])).expect("write");
        assert_eq!((first.kept, first.duplicates), (2, 0), "the same id under two licenses is two events");
        let again = w.write(Table::Events(Family::Login), &batch(&[line("L2", "1"), line("L2", "2")])).expect("write");
        assert_eq!((again.kept, again.duplicates), (1, 1));
        w.commit().expect("commit");
        // Read back from the files by the next writer.
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("reopen");
        let third = w.write(Table::Events(Family::Login), &batch(&[line("L1", "1"), line("L3", "1")])).expect("write");
        assert_eq!((third.kept, third.duplicates), (1, 1));
    }

    #[test]
    fn a_writer_whose_partition_was_claimed_since_cannot_commit_what_it_holds() {
        use crate::manifest::{verify, ManifestSigner, VerifyOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("archive");
        let signer = std::sync::Arc::new(ManifestSigner::load_or_create(&dir.path().join("signing.pem")).expect("key"));
        let options = || WriterOptions { signer: Some(signer.clone()), consumer_group: "detectors".into(), ..WriterOptions::default() };
        let line = |id: &str| format!(r#"{{"event_id":"{id}","time":1793973600000,"system":"metrc","state":"CA","license":"L1","location":"x","user":"u","outcome":"success","src_ip":"203.0.113.10","source":"s","line":1}}"#);
        let batch = |ids: &[&str]| {
            let lines: Vec<String> = ids.iter().map(|id| line(id)).collect();
            let mut reader = seedwatch_schemas::arrow::json::ReaderBuilder::new(Table::Events(Family::Login).schema()).build(std::io::Cursor::new(lines.join("\n"))).expect("reader");
            reader.next().expect("a batch").expect("rows")
        };
        let login = Table::Events(Family::Login);
        // `a` owns partition 0 and reads events 1 and 2, but stalls before its commit.
        let mut a = ArchiveWriter::open(&root, options()).expect("open a");
        a.claim(&[0]).expect("a claims");
        a.write(login, &batch(&["1", "2"])).expect("a writes");
        a.flush_in_order(vec![(login, 1793973600000 / DAY_MS)]).expect("a encodes its file");
        // Meanwhile `b` got partition 0, read the same events from the committed offset and one more.
        let mut b = ArchiveWriter::open(&root, options()).expect("open b");
        b.claim(&[0]).expect("b claims");
        b.write(login, &batch(&["1", "2", "3"])).expect("b writes");
        b.commit().expect("b commits");
        let refused = a.commit().expect_err("a is fenced");
        assert!(matches!(refused, ArchiveError::Fenced { partition: 0, .. }), "{refused}");
        assert!(a.write(login, &batch(&["4"])).is_ok() && a.commit().is_err(), "a stays fenced until it claims again");
        // Nothing of a's is left behind: no temp file, no entry, no row.
        let temp_files: Vec<_> = fs::read_dir(&a.tmp).expect("a's temp dir").filter_map(Result::ok).filter(|e| e.file_name() != WRITER_LOCK).collect();
        assert!(temp_files.is_empty(), "{temp_files:?}");
        let ids = query_rows(&root, "SELECT event_id FROM login ORDER BY event_id");
        assert_eq!(ids, vec![text_row(&["1"]), text_row(&["2"]), text_row(&["3"])]);
        // Given the partition back, a commits again (the discard drops what it held).
        a.discard().expect("discard");
        a.claim(&[0]).expect("a claims again");
        a.write(login, &batch(&["3", "5"])).expect("a writes");
        a.commit().expect("a commits under its new claim");
        assert_eq!(query_rows(&root, "SELECT count(*) FROM login"), vec![text_row(&["4"])]);
        let report = verify(&ArchiveRoot::from(&root), &[signer.verifying_key()], &VerifyOptions::default()).expect("verify");
        assert_eq!(report.problems, vec![]);
    }

    #[test]
    fn files_recorded_but_not_yet_in_place_when_a_writer_stopped_are_put_in_place_by_the_next() {
        use crate::manifest::{verify, ManifestSigner, VerifyOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("archive");
        let signer = std::sync::Arc::new(ManifestSigner::load_or_create(&dir.path().join("key.pem")).expect("key"));
        let options = WriterOptions { signer: Some(signer.clone()), ..WriterOptions::default() };
        let mut w = ArchiveWriter::open(&root, options.clone()).expect("open");
        w.write(Table::Findings, &findings_to_batch(&[finding("a", 0)]).expect("batch")).expect("write");
        w.commit().expect("commit");
        // A writer that stopped after recording a file and before renaming it: the entry
        // names the file, which is still in its (now stale) temp directory.
        let stale = root.join("_tmp").join("crashed-run");
        fs::create_dir_all(&stale).expect("stale dir");
        let name = "part-crashed-run-000001.parquet";
        let mut writer = ArrowWriter::try_new(File::create(stale.join(name)).expect("file"), Table::Findings.schema(), None).expect("writer");
        writer.write(&findings_to_batch(&[finding("b", 0)]).expect("batch")).expect("write");
        writer.close().expect("close");
        let (sha256, bytes) = file_sha256(&stale.join(name)).expect("hash");
        let path = format!("findings/{}/{name}", partition_dir(0));
        let mut log = ManifestLog::open(&ArchiveRoot::from(&root), signer.clone(), "crashed-run").expect("log");
        log.append(Action::Write, vec![FileRecord { path: path.clone(), sha256, bytes, rows: 1, min_time: None, max_time: None }], Vec::new()).expect("append");
        let key = signer.verifying_key();
        let problems = verify(&ArchiveRoot::from(&root), std::slice::from_ref(&key), &VerifyOptions::default()).expect("verify").problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        // Its lock file is there, no longer locked: the writer is gone, the next one knows at once.
        File::create(stale.join(WRITER_LOCK)).expect("lock file");
        // A live writer's directory, however long quiet, is left alone.
        let live = ArchiveWriter::open(&root, options.clone()).expect("a live writer");
        assert!(root.join(&path).exists(), "the recorded file is in place");
        assert!(!stale.exists(), "the stale temp directory is gone");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::open(&live.tmp).and_then(|d| d.set_modified(two_hours_ago)).expect("age the live writer's temp dir");
        drop(ArchiveWriter::open(&root, options).expect("reopen"));
        assert!(live.tmp.exists(), "a live writer's temp directory is not removed");
        let live_tmp = live.tmp.clone();
        drop(live);
        drop(ArchiveWriter::open(&root, WriterOptions::default()).expect("reopen after the live writer ended"));
        assert!(!live_tmp.exists(), "once its writer is gone, so is its directory");
        assert_eq!(verify(&ArchiveRoot::from(&root), std::slice::from_ref(&key), &VerifyOptions::default()).expect("verify").problems, vec![]);
        assert_eq!(query_rows(&root, "SELECT finding_id FROM findings ORDER BY finding_id"), vec![text_row(&["a"]), text_row(&["b"])]);
    }

    /// A tmpfs of `size` at `at` (needs root, as the test script has), unmounted when dropped.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(at: &Path, size: &str) -> Self {
            fs::create_dir_all(at).expect("mkdir");
            let out = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().expect("mount");
            assert!(out.status.success(), "mounting a tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr));
            Self(at.to_path_buf())
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// Fill the disk under `dir` with one file, then free `leave` bytes of it.
    fn fill(dir: &Path, leave: u64) -> PathBuf {
        use std::io::Write as _;
        let path = dir.join("filler");
        let mut file = File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let len = file.metadata().expect("len").len();
        file.set_len(len.saturating_sub(leave)).expect("free some");
        path
    }

    #[test]
    fn a_commit_that_finds_the_disk_full_at_its_manifest_entry_or_its_delta_log_carries_on_where_it_stopped() {
        use crate::manifest::{verify, ManifestSigner, VerifyOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Tmpfs::mount(&dir.path().join("disk"), "16m");
        let root = disk.0.join("archive");
        let signer = std::sync::Arc::new(ManifestSigner::load_or_create(&dir.path().join("key.pem")).expect("key"));
        let options = WriterOptions { signer: Some(signer.clone()), flush_rows: 1, ..WriterOptions::default() };
        let mut w = ArchiveWriter::open(&root, options).expect("open");
        w.write(Table::Findings, &findings_to_batch(&[finding("first", 0)]).expect("batch")).expect("write");
        w.commit().expect("commit");
        let count = || query_rows(&root, "SELECT count(*) FROM findings")[0][0].clone();
        // A free page fits the manifest entry but not the Delta commit after it; none fits neither.
        for (n, (stage, leave)) in [("manifest", 0), ("delta log", 4096)].into_iter().enumerate() {
            w.write(Table::Findings, &findings_to_batch(&[finding(&format!("at the {stage}"), 0)]).expect("batch")).expect("write");
            w.flush_full().expect("flush");
            w.files.wait_all().expect("encoded");
            let filler = fill(&disk.0, leave);
            let error = w.commit().expect_err("a full disk");
            assert!(error.is_disk_full(), "{stage}: {error}");
            let at_the_delta_log = matches!(error, ArchiveError::Delta { .. });
            assert_eq!(at_the_delta_log, stage == "delta log", "{stage}: stopped elsewhere: {error}");
            assert_eq!(count(), Some((n + 1).to_string()), "{stage}: nothing of the stopped commit is visible");
            fs::remove_file(filler).expect("free the disk");
            let stats = w.commit().expect("the same commit, once there is space");
            assert_eq!(stats.rows.get("findings"), Some(&1), "{stage}: {stats:?}");
            assert_eq!(count(), Some((n + 2).to_string()), "{stage}");
        }
        let key = signer.verifying_key();
        assert_eq!(verify(&ArchiveRoot::from(&root), std::slice::from_ref(&key), &VerifyOptions::default()).expect("verify").problems, vec![]);
        let staged: Vec<PathBuf> = parquet_files(&root.join("_tmp")).expect("list");
        assert!(staged.is_empty(), "{staged:?}");
    }

    /// The pool's threads all busy (held at a gate), files are given to it.
    fn pool_with_threads_held(root: &Path, max_rows_in_flight: u64) -> (FilePool, mpsc::Sender<()>) {
        let pool = FilePool::start(&ArchiveRoot::from(root), max_rows_in_flight, None, std::collections::HashMap::new()).expect("pool");
        let (open, gate) = mpsc::channel::<()>();
        let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
        for _ in 0..pool.threads {
            let gate = gate.clone();
            pool.pool.spawn(move || {
                let _ = gate.lock().map(|g| g.recv());
            });
        }
        (pool, open)
    }

    fn job(dir: &Path, n: usize) -> FileJob {
        let findings: Vec<Finding> = (0..3).map(|i| finding(&format!("f{n}-{i}"), 0)).collect();
        let batch = findings_to_batch(&findings).expect("batch");
        let name = format!("part-{n}.parquet");
        let day = dir.join("findings").join(partition_dir(0));
        fs::create_dir_all(&day).expect("day dir");
        let path = format!("findings/{}/{name}", partition_dir(0));
        FileJob { table: Table::Findings, batch, props: WriterProperties::builder().build(), tmp: dir.join("tmp").join(&name), place: Place::Rename { target: day.join(&name), dir: day }, path }
    }

    /// Gives `files` jobs from another thread; returns how many were given after `wait`.
    fn given_while_held(max_rows_in_flight: u64, files: usize) -> (usize, usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("tmp")).expect("tmp dir");
        let (mut pool, open) = pool_with_threads_held(dir.path(), max_rows_in_flight);
        let given = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (root, counter) = (dir.path().to_path_buf(), given.clone());
        let sender = std::thread::spawn(move || {
            let mut stats = CommitStats::default();
            for n in 0..files {
                pool.send(job(&root, n)).expect("send");
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            pool.finish(&mut stats).expect("finish");
            stats.files
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let while_held = given.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..16 {
            let _ = open.send(());
        }
        let placed = sender.join().expect("sender thread") as usize;
        (while_held, placed)
    }

    #[test]
    fn files_queue_behind_a_busy_pool_up_to_the_row_budget() {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        // Within the budget, small files queue behind a busy pool: the writer does not wait.
        assert_eq!(given_while_held(1_000, 12), (12, 12));
        // Past it, the writer waits for the pool once a file per thread and one more are in flight.
        assert_eq!(given_while_held(6, 12), (threads + 1, 12));
    }


    /// `sql` over the archive at `root`, each row's columns as text (`None`: null).
    fn query_rows(root: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let batches = runtime
            .block_on(async {
                let ctx = crate::open_session(root).await?;
                crate::query::run_query(&ctx, sql).await
            })
            .expect("query");
        batches
            .iter()
            .flat_map(|b| {
                let text = |c: usize, i: usize| b.column(c).is_valid(i).then(|| seedwatch_schemas::arrow::util::display::array_value_to_string(b.column(c), i).expect("text"));
                (0..b.num_rows()).map(|i| (0..b.num_columns()).map(|c| text(c, i)).collect::<Vec<_>>()).collect::<Vec<_>>()
            })
            .collect()
    }

    fn text_row(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| (*v != "null").then(|| v.to_string())).collect()
    }

    #[test]
    fn findings_written_before_the_actor_and_version_columns_read_as_null_and_as_version_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file as seedwatch wrote them before 2026-12-03: no actor, version or status columns.
        let old = findings_to_batch(&[finding("old", 0)]).expect("batch");
        let added = ["actor", "version", "status", "updated_at", "note", "changed_by"];
        let keep: Vec<usize> = (0..old.num_columns()).filter(|i| !added.contains(&old.schema().field(*i).name().as_str())).collect();
        let old = old.project(&keep).expect("project");
        let day_dir = dir.path().join("findings").join(partition_dir(0));
        fs::create_dir_all(&day_dir).expect("dir");
        let mut writer = ArrowWriter::try_new(File::create(day_dir.join("part-old.parquet")).expect("file"), old.schema(), None).expect("writer");
        writer.write(&old).expect("write");
        writer.close().expect("close");
        let mut new = finding("new", 0);
        new.actor = Some("admin.oak".into());
        // An archive from before the table format: migrated first (the old file keeps its schema).
        let root = dir.path().to_path_buf();
        let migrated = crate::delta::block_on(async move { crate::delta::migrate(&ArchiveRoot::from(root.as_path()), None).await }).expect("runtime").expect("migrate");
        assert_eq!((migrated.len(), migrated[0].rows_in_table), (1, 1));
        // The writer reads the old file's keys (without the newer key columns) as it opens the day.
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        w.write(Table::Findings, &findings_to_batch(&[new]).expect("batch")).expect("write");
        w.commit().expect("commit");
        let rows = query_rows(dir.path(), "SELECT finding_id, actor, version, status FROM findings ORDER BY finding_id");
        assert_eq!(rows, vec![text_row(&["new", "admin.oak", "1", "open"]), text_row(&["old", "null", "null", "null"])]);
        let rows = query_rows(dir.path(), "SELECT finding_id, version, status FROM findings_latest ORDER BY finding_id");
        assert_eq!(rows, vec![text_row(&["new", "1", "open"]), text_row(&["old", "1", "open"])]);
    }

    #[test]
    fn every_version_and_status_change_is_a_row_and_the_latest_view_shows_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let version = |v: i64, at: i64, status: Status, by: Option<&str>| {
            let mut f = finding("f", 0);
            (f.version, f.updated_at, f.status, f.changed_by) = (v, at, status, by.map(str::to_string));
            f
        };
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        let first = w.write(Table::Findings, &findings_to_batch(&[version(1, 10, Status::Open, None), version(2, 20, Status::Open, None)]).expect("batch")).expect("write");
        assert_eq!((first.kept, first.duplicates), (2, 0));
        // A replay writes the same versions again: duplicates. A person's acknowledgement of
        // version 2 is a row of its own.
        let ack = version(2, 30, Status::Acknowledged, Some("dana"));
        let second = w.write(Table::Findings, &findings_to_batch(&[version(2, 25, Status::Open, None), ack.clone()]).expect("batch")).expect("write");
        assert_eq!((second.kept, second.duplicates), (1, 1));
        w.commit().expect("commit");
        let latest = "SELECT version, status, changed_by FROM findings_latest";
        assert_eq!(query_rows(dir.path(), latest), vec![text_row(&["2", "acknowledged", "dana"])]);
        // After a restart the same acknowledgement is still a duplicate; the detector's next
        // version (the finding grew) is newer than it.
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).expect("open");
        let third = w.write(Table::Findings, &findings_to_batch(&[ack, version(3, 40, Status::Open, None)]).expect("batch")).expect("write");
        assert_eq!((third.kept, third.duplicates), (1, 1));
        w.commit().expect("commit");
        assert_eq!(query_rows(dir.path(), latest), vec![text_row(&["3", "open", "null"])]);
        assert_eq!(query_rows(dir.path(), "SELECT count(*) FROM findings"), vec![text_row(&["4"])]);
    }
}
