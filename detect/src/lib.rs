//! Detection: rules, read from YAML, evaluated over Arrow record batches.
//!
//! A rule ([`rule::RuleConfig`]) names a family, a SQL boolean filter over
//! that family's columns, and a type ([`rule::RuleType`]): `match`,
//! `threshold`, `schedule`, `reference`, `absence`, `new_value`, `baseline`
//! or `trend`, each a module of [`kinds`] with its own fields. [`exception`]s
//! drop known-good rows after the filter. [`resume`] rebuilds the engine's state
//! from archived events.
//!
//! Filters are compiled once with DataFusion and evaluated on whole batches;
//! only the rows that pass reach per-key state. Findings are held open while
//! the rule's suppression window lasts, so a repeat updates one finding
//! instead of adding rows.
#![deny(missing_docs)]

pub mod duration;
pub mod engine;
mod event_time;
pub mod exception;
pub mod kinds;
pub mod limits;
pub mod policy;
pub mod reference;
pub mod resume;
pub mod rule;

use seedwatch_schemas::{EventBatch, Finding};

pub use engine::RuleEngine;
pub use rule::{load_rules, CompiledRule, RuleConfig};

/// Errors of the detect stage. Configuration errors name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A configuration file is unusable.
    #[error("{file}:{line}: {message}")]
    Config {
        /// The file.
        file: String,
        /// 1-based line (0 when the whole file is at fault).
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Evaluating a rule over a batch failed.
    #[error("rule {rule}: {message}")]
    Evaluate {
        /// The rule id.
        rule: String,
        /// Why.
        message: String,
    },
}

/// Turns batches of events into findings.
///
/// `process` may keep state between batches (windows, open findings); `flush`
/// closes what is still open at the end of input or at shutdown. Findings come out
/// as versions (see [`Finding::version`]): when they open, as they change, and when
/// they close.
pub trait Detector: Send + std::fmt::Debug {
    /// Evaluate one batch; push findings that are complete onto `out`.
    fn process(&mut self, batch: &EventBatch, out: &mut Vec<Finding>) -> Result<DetectStats, DetectError>;

    /// Event time has reached `watermark` across every family (called after
    /// all batches of a chunk): rules that fire on silence judge it now, and push
    /// what they open or escalate onto `out`. Returns findings opened.
    fn advance(&mut self, watermark: i64, out: &mut Vec<Finding>) -> u64 {
        let _ = (watermark, out);
        0
    }

    /// Emit every finding still open.
    fn flush(&mut self, out: &mut Vec<Finding>);
}

/// Counts from evaluating one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectStats {
    /// Rows evaluated (once per rule of the batch's family).
    pub rows_evaluated: u64,
    /// Rows that passed a rule's filter.
    pub rows_matched: u64,
    /// Findings opened (repeats that update an open finding are not counted).
    pub findings_opened: u64,
    /// Events older than the watermark minus the allowed lateness: archived, not evaluated.
    pub late_events: u64,
    /// Rows that passed a rule's filter and were dropped by one of its exceptions.
    pub suppressed: Vec<Suppressed>,
    /// Entries rules forgot for lack of room (see [`limits`]).
    pub evicted: Vec<Evicted>,
}

/// Entries one rule forgot in one batch because its state was at a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// The rule.
    pub rule: std::sync::Arc<str>,
    /// Keys and values forgotten.
    pub entries: u64,
}

/// Rows one exception dropped from one rule in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// The rule.
    pub rule: std::sync::Arc<str>,
    /// The exception.
    pub exception: std::sync::Arc<str>,
    /// How many rows.
    pub rows: u64,
}
