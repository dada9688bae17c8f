//! Archive: events, findings and dead letters as Hive-partitioned Parquet,
//! and a DataFusion session to query them.
//!
//! Layout: `<root>/<table>/date=YYYY-MM-DD/part-<run>-<seq>.parquet`, zstd
//! compressed. Files are written to `<root>/_tmp/`, fsynced, renamed into
//! place and the directory fsynced, so a crash never leaves a half file where
//! queries look. Rows are deduplicated on the table's id column against what
//! the partition already holds, so re-running the same input adds nothing.
#![deny(missing_docs)]

pub mod query;
pub mod writer;

use std::path::PathBuf;

pub use query::{open_session, OutputFormat};
pub use writer::{ArchiveWriter, CommitStats, WriterOptions};

use seedwatch_schemas::arrow::record_batch::RecordBatch;
use seedwatch_schemas::Table;

/// Writes rows to durable storage. `write` may buffer; `commit` makes
/// everything written so far durable and reports what it did.
pub trait Sink: Send + std::fmt::Debug {
    /// Accept a batch for `table`; returns (rows kept, duplicates dropped).
    fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<(u64, u64), ArchiveError>;
    /// Make every accepted row durable.
    fn commit(&mut self) -> Result<CommitStats, ArchiveError>;
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
    /// A query failed (bad SQL, missing column, ...).
    #[error("{0}")]
    Query(String),
}

/// Map an I/O error with context.
pub(crate) fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.into();
    move |error| ArchiveError::Io { action, path, error }
}
