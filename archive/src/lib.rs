//! Archive: events, findings and dead letters as Delta Lake tables of Parquet files, each
//! holding its rows' `date`, and a DataFusion session to query them.
//!
//! Layout (see `layout`): `<root>/<table>/date=YYYY-MM-DD/part-<run>-<seq>.parquet` as
//! written, `<root>/<table>/month=YYYY-MM/part-compact-….parquet` for a quiet table's
//! compacted month; zstd
//! compressed (LZ4 below 1,024 rows, where creating zstd contexts costs more than
//! compressing: see `writer::write_file`). Files are written to `<root>/_tmp/`, fsynced, renamed into
//! place and the directory fsynced, so a crash never leaves a half file where
//! queries look. Rows are deduplicated on the table's id column against what
//! the partition already holds, so re-running the same input adds nothing.
#![deny(missing_docs)]

pub mod compact;
pub mod delta;
pub mod layout;
pub mod manifest;
pub mod printable;
pub mod prune;
pub mod query;
pub mod store;
pub mod writer;

use std::path::PathBuf;

pub use query::{newest_event_time, open_session, open_session_for, run_query, run_user_query, OutputFormat, Visibility};
pub use store::ArchiveRoot;
pub use writer::{ArchiveWriter, CommitStats, WriterOptions};

use seedwatch_schemas::arrow::array::BooleanArray;
use seedwatch_schemas::arrow::record_batch::RecordBatch;
use seedwatch_schemas::Table;

/// A stop point for the tests of an interrupted compaction or migration: the environment
/// variable `variable` (`SEEDWATCH_TEST_STOP_COMPACTION`, `SEEDWATCH_TEST_STOP_MIGRATION`) set
/// to `point` (`written`: new files encoded, nothing recorded; `recorded`: the manifest entry
/// written, the log not yet switched) ends the process there, as a crash would.
pub(crate) fn stop_for_tests(variable: &str, point: &str) {
    if std::env::var(variable).is_ok_and(|p| p == point) {
        eprintln!("stopping after `{point}` ({variable})");
        std::process::exit(86);
    }
}

/// Writes rows to durable storage. `write` may buffer; `commit` makes
/// everything written so far durable and reports what it did.
///
/// An error for which [`ArchiveError::is_disk_full`] holds loses nothing: the sink keeps
/// every row it took, and the same call made again once there is space carries on where
/// the last one stopped (the driver pauses and retries, see `seedwatch-runtime`). Any
/// other error leaves the sink unusable: what was not committed is read again by the
/// next start.
pub trait Sink: Send + std::fmt::Debug {
    /// Accept a batch for `table`, dropping rows whose id it already holds.
    fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<Written, ArchiveError>;
    /// Make every accepted row durable.
    fn commit(&mut self) -> Result<CommitStats, ArchiveError>;
    /// Write out what has grown large enough for a file of its own, without
    /// the cost of a full commit. Callers invoke it between batches, once the
    /// findings of the events written so far have been written too.
    fn flush_full(&mut self) -> Result<(), ArchiveError> {
        Ok(())
    }
    /// Drop every event and dead letter accepted since the last commit and forget the
    /// ids known, so they are read again from what is durable: a Kafka rebalance hands
    /// the uncommitted tail to whoever owns the partitions now, and their rows may be in
    /// the archive by the time this member reads them again.
    ///
    /// Findings are written out instead: they came from events this member evaluated,
    /// some of which a commit may already have made durable. Whoever reads those events
    /// next restores them as history and does not emit their findings again.
    fn discard(&mut self) -> Result<(), ArchiveError> {
        Ok(())
    }
    /// Take over these partitions of a consumer group (a new assignment): a writer that still
    /// holds one of them under an older claim is fenced, its next commit refused with
    /// [`ArchiveError::Fenced`] (see [`manifest::ManifestLog`]). Sinks without a shared log
    /// need not do anything.
    fn claim(&mut self, _partitions: &[u32]) -> Result<(), ArchiveError> {
        Ok(())
    }
}

/// What [`Sink::write`] did with a batch.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Rows accepted.
    pub kept: u64,
    /// Rows dropped because their id was already in the archive (or earlier in this run).
    pub duplicates: u64,
    /// Which rows were accepted, when some were not (`None`: all were). The
    /// pipeline detects on these rows only, so a replayed event never counts twice.
    pub new_rows: Option<BooleanArray>,
}

impl Written {
    /// The accepted rows of `batch`: the batch itself when all were new.
    pub fn new_rows_of<'a>(&self, batch: &'a RecordBatch) -> Result<std::borrow::Cow<'a, RecordBatch>, ArchiveError> {
        match &self.new_rows {
            None => Ok(std::borrow::Cow::Borrowed(batch)),
            Some(mask) => seedwatch_schemas::arrow::compute::filter_record_batch(batch, mask)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| ArchiveError::Query(e.to_string())),
        }
    }
}

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file system operation failed.
    #[error("{action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Reading or writing Parquet failed.
    #[error("parquet {}: {message}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A batch did not have the table's shape.
    #[error("table {table}: {message}")]
    Schema {
        /// The table.
        table: &'static str,
        /// Why.
        message: String,
    },
    /// The manifest's signing or public key could not be used.
    #[error("key {}: {message}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A Delta Lake operation on a table failed.
    #[error("table {table}: {source}")]
    Delta {
        /// The table.
        table: &'static str,
        /// Why.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// The archive is laid out as an older seedwatch wrote it.
    #[error("{}: {message}", root.display())]
    Layout {
        /// The archive root.
        root: PathBuf,
        /// What to do about it.
        message: String,
    },
    /// An operation on object storage failed.
    #[error("{action} {path}: {source}")]
    Object {
        /// What was being done.
        action: &'static str,
        /// The object's key.
        path: String,
        /// Why.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The archive's location or its settings are wrong.
    #[error("{at}: {message}")]
    Settings {
        /// The URL, or the settings file and line.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A newer claim took a partition this writer held (it was evicted from its consumer
    /// group, or a rebalance overtook its commit): what it has not committed is the new
    /// owner's to write, and it writes nothing more until it claims again.
    #[error("fenced: partition {partition} of consumer group {group} was claimed by writer {by} (manifest entry {seq}) after this writer's claim (entry {claim}); its uncommitted rows are left to the new owner")]
    Fenced {
        /// The consumer group.
        group: String,
        /// The partition taken.
        partition: u32,
        /// This writer's claim.
        claim: u64,
        /// The writer that claimed it.
        by: String,
        /// The newer claim's entry.
        seq: u64,
    },
    /// A query failed (bad SQL, missing column, ...).
    #[error("{0}")]
    Query(String),
}

impl ArchiveError {
    /// Whether the disk the archive (or a bucket writer's staging) is written to is full.
    /// Parquet and Delta keep only the text of the I/O error, so it is read there too.
    pub fn is_disk_full(&self) -> bool {
        match self {
            ArchiveError::Io { error, .. } => error.kind() == std::io::ErrorKind::StorageFull || error.raw_os_error() == Some(28),
            other => {
                let text = other.to_string();
                text.contains("(os error 28)") || text.contains("No space left on device")
            }
        }
    }
}

/// Map an I/O error with context.
pub(crate) fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.into();
    move |error| ArchiveError::Io { action, path, error }
}
