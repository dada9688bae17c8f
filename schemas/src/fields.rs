//! The field table: what each family's NDJSON line may and must contain.
//!
//! The decoder validates against this table, the Arrow schemas are built from
//! it and the JSON Schema files are generated from it, so the three cannot
//! disagree without a test noticing.

use crate::Family;

/// Actions accepted in the `audit` family.
pub const AUDIT_ACTIONS: &[&str] = &[
    "user_created",
    "user_deactivated",
    "role_changed",
    "mfa_disabled",
    "mfa_enabled",
    "password_reset",
    "api_key_created",
    "api_key_revoked",
    "inventory_adjusted",
    "data_exported",
    "security_setting_changed",
];

/// Accepted outcomes of logins and sync runs.
pub const OUTCOMES: &[&str] = &["success", "failure"];

/// Raw credential fields. Their values never reach a table: the decoder
/// replaces them with a keyed fingerprint (see `ingest::redact`).
pub const SECRET_FIELDS: &[&str] = &["api_key", "user_key", "vendor_key", "password", "authorization"];

/// Secret fields whose fingerprint identifies an API key (`key_id`), in order of preference.
pub const KEY_FIELDS: &[&str] = &["api_key", "user_key", "vendor_key", "authorization"];

/// How a field's JSON value is checked and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string of at most `max_len` bytes, stored as given.
    Str {
        /// Longest accepted value in bytes.
        max_len: usize,
    },
    /// A string normalised to lower case (names of integrations, systems).
    Lower {
        /// Longest accepted value in bytes.
        max_len: usize,
    },
    /// A string normalised to upper case (HTTP methods).
    Upper {
        /// Longest accepted value in bytes.
        max_len: usize,
    },
    /// One of a closed set of lower-case strings.
    Enum(&'static [&'static str]),
    /// A two-letter state or territory code (see [`crate::STATE_CODES`]), upper-cased.
    State,
    /// A 64-bit integer within `[min, max]`; numeric strings are accepted too.
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// `true` or `false`.
    Bool,
    /// An IPv4 or IPv6 address, stored in canonical text form.
    Ip,
    /// RFC 3339 with an offset, or integer epoch milliseconds; stored as UTC milliseconds.
    Time,
}

/// When a field must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The line is dead-lettered without it.
    Required,
    /// May be absent or null.
    Optional,
    /// Required unless a raw key field (see [`KEY_FIELDS`]) is present to fingerprint.
    RequiredUnlessRawKey,
}

/// One field of the contract.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The JSON key and the column name.
    pub name: &'static str,
    /// How the value is checked and stored.
    pub kind: Kind,
    /// Whether it must be present.
    pub presence: Presence,
    /// Value used when absent, for integer fields (`records` defaults to 0).
    pub default_int: Option<i64>,
    /// One line for the JSON Schema's `description`.
    pub doc: &'static str,
}

const fn field(name: &'static str, kind: Kind, presence: Presence, doc: &'static str) -> Field {
    Field { name, kind, presence, default_int: None, doc }
}

const ID: Kind = Kind::Str { max_len: 256 };
const TEXT: Kind = Kind::Str { max_len: 4096 };
const COUNT: Kind = Kind::Int { min: 0, max: i64::MAX };
use Presence::{Optional, Required, RequiredUnlessRawKey};

/// Fields common to every family, in column order. `family` itself selects the
/// table and is not stored as a column.
pub const COMMON: &[Field] = &[
    field("event_id", Kind::Str { max_len: 128 }, Optional, "Dedup key; when absent, derived from the line and its position in its source (file and line number), so identical lines are distinct events and a re-read line is the same one."),
    field("time", Kind::Time, Required, "Event time: RFC 3339 with offset, or epoch milliseconds."),
    field("system", Kind::Enum(crate::SYSTEMS), Required, "The tracking system."),
    field("state", Kind::State, Required, "Two-letter state or territory code."),
    field("license", ID, Required, "State license number."),
    field("location", ID, Optional, "Operator's location id; defaults to the license."),
];

const LOGIN: &[Field] = &[
    field("user", ID, Required, "The account that logged in."),
    field("outcome", Kind::Enum(OUTCOMES), Required, "success or failure."),
    field("mfa", Kind::Bool, Optional, "Whether a second factor was used."),
    field("reason", TEXT, Optional, "Failure reason as reported."),
    field("user_agent", TEXT, Optional, "Client user agent."),
    field("session_id", ID, Optional, "Session identifier."),
    field("src_ip", Kind::Ip, Required, "Client IP address."),
];

const API: &[Field] = &[
    field("key_id", ID, RequiredUnlessRawKey, "API key identifier; a fingerprint when a raw key was given."),
    field("integration", Kind::Lower { max_len: 64 }, Required, "POS or vendor integration (flowhub, dutchie, treez, jane, ...)."),
    field("method", Kind::Upper { max_len: 16 }, Required, "HTTP method."),
    field("endpoint", TEXT, Required, "Request path."),
    field("status", Kind::Int { min: 100, max: 599 }, Required, "HTTP status code."),
    Field { default_int: Some(0), ..field("records", COUNT, Optional, "Records returned or written (default 0).") },
    field("bytes", COUNT, Optional, "Response size in bytes."),
    field("latency_ms", COUNT, Optional, "Call latency in milliseconds."),
    field("user", ID, Optional, "Tracking-system user behind the key."),
    field("src_ip", Kind::Ip, Required, "Source IP of the call."),
];

const SYNC: &[Field] = &[
    field("integration", Kind::Lower { max_len: 64 }, Required, "The POS integration that synced."),
    field("outcome", Kind::Enum(OUTCOMES), Required, "success or failure."),
    field("pending", COUNT, Optional, "Transactions waiting to be reported."),
    field("lag_seconds", COUNT, Optional, "Seconds since the oldest unsynced transaction."),
    field("error", TEXT, Optional, "Error text of a failed run."),
    field("src_ip", Kind::Ip, Optional, "Address the sync ran from."),
];

const AUDIT: &[Field] = &[
    field("actor", ID, Required, "Who performed the action."),
    field("action", Kind::Enum(AUDIT_ACTIONS), Required, "What was done."),
    field("target", ID, Optional, "The user, key or item acted on."),
    field("role_before", ID, Optional, "Role before a role change."),
    field("role_after", ID, Optional, "Role after a role change."),
    field("records", COUNT, Optional, "Records affected (exports, adjustments)."),
    field("src_ip", Kind::Ip, Optional, "Address the action came from."),
];

/// The family-specific fields, in column order (after [`COMMON`]).
pub const fn family_fields(family: Family) -> &'static [Field] {
    match family {
        Family::Login => LOGIN,
        Family::Api => API,
        Family::Sync => SYNC,
        Family::Audit => AUDIT,
    }
}

/// Every stored field of a family: [`COMMON`] then [`family_fields`].
pub fn all_fields(family: Family) -> impl Iterator<Item = &'static Field> {
    COMMON.iter().chain(family_fields(family).iter())
}

/// Longest `extra` JSON (unknown fields) kept with an event; a line with more is dead-lettered.
pub const MAX_EXTRA_BYTES: usize = 16 * 1024;
/// Longest line decoded; longer lines are dead-lettered as `line_too_long`.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// How much of a dead line's (redacted) text is kept.
pub const MAX_DEAD_LETTER_RAW_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_unique_column_names() {
        for family in Family::ALL {
            let mut names: Vec<_> = all_fields(family).map(|f| f.name).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate field in {family}");
        }
    }

    #[test]
    fn secrets_are_never_contract_fields() {
        for family in Family::ALL {
            for f in all_fields(family) {
                assert!(!SECRET_FIELDS.contains(&f.name), "{} is a secret", f.name);
            }
        }
    }
}
