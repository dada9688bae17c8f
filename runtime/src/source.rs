//! Sources: what the driver reads from.
//!
//! A source yields decoded rows, each chunk from one *input* (a file, stdin, a
//! Kafka topic partition) and for one *scope* (every partition, or one), and
//! says how far in event time each scope is complete (its *bound*). It takes
//! feedback: which positions are durable (Kafka offsets to commit) and when the
//! tasks of a new assignment are warm.
//!
//! The driver runs the source on a thread of its own, so a source that must keep
//! talking to its server (a Kafka consumer's poll) does so while the driver
//! works; `Assigned` and the shared generation counter fence off what was read
//! under an assignment that no longer holds.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use seedwatch_ingest::DecodedChunk;

use crate::RuntimeError;

/// One input of a source (its index, or a Kafka topic and partition packed together).
pub type InputId = u64;

/// Where a chunk's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Rows of any license, routed to the tasks by license (murmur2): files, stdin, the archive.
    AllPartitions,
    /// Rows of one partition, routed already (a Kafka topic partition; the producer keyed by license).
    Partition(u32),
}

/// A decoded chunk of one input.
#[derive(Debug)]
pub struct Rows {
    /// Which input.
    pub input: InputId,
    /// Which task(s) its rows go to.
    pub scope: Scope,
    /// Events and dead letters.
    pub chunk: DecodedChunk,
    /// `file`, `stdin`, `archive`, `kafka`: a bounded metric label.
    pub source_kind: &'static str,
    /// Where `input` resumes once everything up to this chunk is durable (the next Kafka offset).
    pub resume_at: Option<i64>,
    /// Bytes read so far over all inputs, for progress.
    pub bytes_done: u64,
    /// Seconds spent reading and decoding the chunk.
    pub seconds: f64,
}

/// What a source says happened.
#[derive(Debug)]
pub enum Polled {
    /// Rows of one input.
    Rows(Rows),
    /// Rows of `scope` at or before `bound` may be released: every input of the scope has
    /// been read this far in event time (`i64::MAX`: nothing more is there to read now).
    Bound {
        /// The scope.
        scope: Scope,
        /// The bound.
        bound: i64,
    },
    /// This member owns these partitions now (of `count`): what was not committed is void,
    /// and each partition's task is rebuilt. `generation` is the source's fence value.
    Assigned {
        /// Partitions owned.
        partitions: Vec<u32>,
        /// Partitions of the topics.
        count: u32,
        /// The generation these belong to.
        generation: u64,
    },
    /// Nothing new; the driver does its periodic work (commits, idle snapshots).
    Quiet,
}

/// What the driver tells a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// Everything read before these positions is durable in the sink (offsets to commit).
    Durable {
        /// The generation the positions belong to.
        generation: u64,
        /// Per input, where it resumes.
        positions: Vec<(InputId, i64)>,
    },
    /// The tasks of `generation` are rebuilt: reading may go on.
    Warm {
        /// The generation.
        generation: u64,
    },
}

/// A stream of decoded rows. See the module docs.
pub trait Source: Send + 'static {
    /// The next thing that happened; `None` when the source has nothing more to give
    /// (its inputs ended, or it was asked to stop).
    fn poll(&mut self) -> Result<Option<Polled>, RuntimeError>;
    /// Feedback from the driver, on the source's thread between polls.
    fn feedback(&mut self, _feedback: Feedback) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Called once the driver has finished, after the last feedback (leave a group, close files).
    fn close(&mut self) {}
    /// Total bytes to read, when known, for progress.
    fn total_bytes(&self) -> Option<u64> {
        None
    }
    /// Whether the source ends by itself (files, stdin, archived history), rather than
    /// running until stopped (Kafka).
    fn ends(&self) -> bool {
        false
    }
    /// The generation counter: bumped by the source the moment an assignment is lost, so
    /// the driver stops using what was read under it before the `Assigned` that follows.
    fn fence(&self) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }
}
