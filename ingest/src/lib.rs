//! Ingest: from raw lines to validated, redacted Arrow record batches.
//!
//! - [`source`]: where lines come from (files, stdin; Kafka and HTTP later),
//!   as chunks of lines in reusable buffers.
//! - [`decode`]: NDJSON to one Arrow batch per family, validated against the
//!   field table in `seedwatch_schemas::fields`; bad lines become dead letters.
//! - [`redact`]: raw credentials replaced by keyed fingerprints before anything
//!   is stored.
#![deny(missing_docs)]

pub mod decode;
mod json;
pub mod redact;
pub mod nginx;
pub mod source;
pub mod tail;
pub mod tenancy;

use std::path::PathBuf;

pub use decode::{DecodeStats, DecodedChunk, Decoder};
pub use redact::{Fingerprinter, Redactor};
pub use source::{file_source, stdin_source, ChunkLimits, LineChunk, Source};
pub use tail::{TailOptions, TailPosition, TailSource};
pub use tenancy::Tenancy;

/// Errors of the ingest stage. Bad lines are not errors (they are dead letters);
/// these are failures to read input at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// An input file could not be opened.
    #[error("cannot open {}: {error}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Reading from a source failed midway.
    #[error("reading {source_name}: {error}")]
    Read {
        /// The source's name.
        source_name: String,
        /// Why.
        error: std::io::Error,
    },
    /// The fingerprint secret could not be loaded or created.
    #[error("fingerprint secret {path}: {message}")]
    FingerprintKey {
        /// The secret file.
        path: String,
        /// Why.
        message: String,
    },
    /// A bug: an invariant of the decoder did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}
