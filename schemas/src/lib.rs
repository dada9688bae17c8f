//! The seedwatch event contract.
//!
//! Every stage speaks in the types defined here: the four event families
//! ([`Family`]), the field table each family is decoded and validated against
//! ([`fields`]), the Arrow schemas of the archive tables ([`arrow_schema`]),
//! the [`Finding`] a detector produces, and the dead-letter record that keeps
//! every line seedwatch could not use ([`dead_letter`]).
//!
//! The field table is the single source of truth: the decoder in `ingest`
//! walks it, the Arrow schemas are derived from it, and the JSON Schema files
//! under `schemas/json/` are generated from it (and a test fails when they
//! drift apart).
#![deny(missing_docs)]

pub mod arrow_schema;
pub mod dead_letter;
pub mod fields;
pub mod finding;
pub mod json_schema;
pub mod partition;
pub mod retention;
pub mod secret_file;
pub mod sql_functions;

use std::fmt;
use std::str::FromStr;

pub use datafusion::arrow;
pub use finding::{Finding, Severity, Status};

use arrow::record_batch::RecordBatch;

/// The event families: one archive table and one Kafka topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Interactive logins to the tracking system.
    Login,
    /// API calls made by POS and vendor integrations.
    Api,
    /// POS-to-tracking-system sync runs.
    Sync,
    /// Account, key and inventory audit events.
    Audit,
}

impl Family {
    /// All families, in table order.
    pub const ALL: [Family; 4] = [Family::Login, Family::Api, Family::Sync, Family::Audit];

    /// The family's name as it appears in events, tables and topics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Login => "login",
            Family::Api => "api",
            Family::Sync => "sync",
            Family::Audit => "audit",
        }
    }

    /// Index into arrays ordered like [`Family::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_string()))
    }
}

/// A name that is not one of the accepted values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown name `{0}`")]
pub struct UnknownName(pub String);

/// The archive tables: one per family plus findings and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Events of one family.
    Events(Family),
    /// Detector findings.
    Findings,
    /// Lines that could not be decoded, with the reason.
    DeadLetter,
}

impl Table {
    /// Every table, in a stable order.
    pub const ALL: [Table; 6] = [
        Table::Events(Family::Login),
        Table::Events(Family::Api),
        Table::Events(Family::Sync),
        Table::Events(Family::Audit),
        Table::Findings,
        Table::DeadLetter,
    ];

    /// Table name in SQL and directory name in the archive.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Events(f) => f.as_str(),
            Table::Findings => "findings",
            Table::DeadLetter => "dead_letter",
        }
    }

    /// The column whose value (a string) is unique per row and deduplicates re-runs.
    pub const fn id_column(self) -> &'static str {
        match self {
            Table::Events(_) => "event_id",
            Table::Findings => "finding_id",
            Table::DeadLetter => "dead_letter_id",
        }
    }

    /// The columns that together identify a row, so that writing it again (a replay, a
    /// re-run) is a duplicate: an event's license and id (ids are the sender's: one
    /// operator's ids must never hide another's events as "duplicates"), a dead letter's
    /// id, and for findings each version and each person's status change.
    pub const fn key_columns(self) -> &'static [&'static str] {
        match self {
            Table::Events(_) => &["license", "event_id"],
            Table::Findings => &["finding_id", "version", "status", "changed_by", "note"],
            Table::DeadLetter => &["dead_letter_id"],
        }
    }

    /// The timestamp column whose UTC date names the row's partition.
    pub const fn date_column(self) -> &'static str {
        match self {
            Table::Events(_) => "time",
            Table::Findings => "window_start",
            Table::DeadLetter => "received_at",
        }
    }

    /// The order compaction sorts a day's rows in: a subject's rows together (the license,
    /// then the user, key, integration or actor), then by time. Runs of equal values are
    /// what the Parquet encodings and zstd shrink best, and a query for one subject reads
    /// few pages.
    pub const fn compaction_order(self) -> &'static [&'static str] {
        match self {
            Table::Events(Family::Login) => &["license", "user", "time"],
            Table::Events(Family::Api) => &["license", "key_id", "time"],
            Table::Events(Family::Sync) => &["license", "integration", "time"],
            Table::Events(Family::Audit) => &["license", "actor", "time"],
            Table::Findings => &["license", "finding_id", "version"],
            Table::DeadLetter => &["received_at"],
        }
    }

    /// The Arrow schema of the table's Parquet files (without the `date` partition column).
    pub fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            Table::Events(f) => arrow_schema::event_schema(f),
            Table::Findings => finding::findings_schema(),
            Table::DeadLetter => dead_letter::dead_letter_schema(),
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The tracking systems seedwatch knows.
pub const SYSTEMS: &[&str] = &["metrc", "biotrack"];

/// Two-letter codes accepted in `state`: the 50 states, DC and the territories.
pub const STATE_CODES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "PR", "VI", "GU", "AS", "MP",
];

/// A decoded, validated batch of events of one family, in the family's Arrow schema.
#[derive(Debug, Clone)]
pub struct EventBatch {
    /// Which family (and so which schema) the rows belong to.
    pub family: Family,
    /// The rows.
    pub batch: RecordBatch,
}
