//! The runtime: one driver that every command configures.
//!
//! ```text
//!  inputs ──▶ reader ──▶ driver ──────────────────────────────▶ tasks ──▶ findings
//!  (a stream  (decode,    archive first (dedup: a re-read row    (one RuleEngine
//!   per file)  frontier    is never evaluated twice), hold rows   per partition,
//!              per input)  until every live input has reached     on its own thread)
//!                          them, route by license (murmur2)
//! ```
//!
//! - [`input`]: each input is its own stream with its own frontier (newest event
//!   time read). The reader always reads next from the input furthest behind, so
//!   files exported one per log family, or cut anywhere and given in any order,
//!   are merged in event time with one chunk per input in memory.
//! - [`partition`]: rows are routed by license with Kafka's murmur2, the function
//!   the collectors' producer uses, so a license's state lives in one task whether
//!   the partitions are in-process or a topic's.
//! - [`tasks`]: a task owns a `RuleEngine` and runs on its own thread; every task
//!   hears every release's watermark, so silence is judged alike in any number of
//!   partitions.
//! - [`driver`]: the loop. The sink (the archive, or [`driver::MemorySink`] for
//!   fixtures) takes each batch first and says which rows are new; findings are
//!   written before the sink may write out the events they cite.
//! - [`internal_events`]: every log line and metric, per batch, bounded labels.
#![deny(missing_docs)]

pub mod driver;
pub mod input;
pub mod internal_events;
pub mod partition;
pub mod source;
pub mod tasks;

pub use driver::{Driver, DriverOptions, DriverReport, MemorySink, Publish, Rebuild};
pub use input::{DecodePool, Input, LineInput, Reader};
pub use source::{Feedback, InputId, Polled, Rows, Scope, Source};

/// An error from code the runtime calls back (a warm-up, a publisher), kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

use seedwatch_archive::ArchiveError;
use seedwatch_detect::DetectError;
use seedwatch_ingest::IngestError;
use seedwatch_schemas::arrow::error::ArrowError;

/// Errors of the runtime; each keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Reading or decoding input failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A rule failed on a batch.
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The sink failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An Arrow kernel failed while holding or routing rows.
    #[error("routing rows: {0}")]
    Arrow(#[from] ArrowError),
    /// A runtime thread could not be started.
    #[error("starting the {what} thread")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The decode threads could not be started.
    #[error("starting the decode threads")]
    DecodePool(#[source] rayon::ThreadPoolBuildError),
    /// An input other than lines failed (the archive's SQL, for backfill).
    #[error("reading {what}")]
    Input {
        /// Which input.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Rows were routed to a partition no task owns (a routing bug: the count and the tasks disagree).
    #[error("rows for partition {0}, which no task owns")]
    NotOwned(u32),
    /// The source reported a new assignment, but the driver was given no way to build tasks.
    #[error("the source reassigned partitions but the driver has no rebuild step")]
    NoRebuild,
    /// Building the tasks of a new assignment failed (the warm-up from the archive).
    #[error("rebuilding the tasks of a new assignment")]
    Rebuild(#[source] BoxError),
    /// Handing findings on failed (the findings topic).
    #[error("publishing findings")]
    Publish(#[source] BoxError),
    /// A runtime thread stopped without an answer (it panicked).
    #[error("the {0} thread stopped unexpectedly")]
    ThreadLost(&'static str),
}
