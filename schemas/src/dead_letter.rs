//! Dead letters: every line seedwatch could not turn into an event, with why.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use crate::arrow_schema::timestamp_type;

/// Why a line was dead-lettered. The code is a bounded metric label and the
/// `reason_code` column; the message with details goes to `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// The line was empty or only white space.
    EmptyLine,
    /// The line exceeded the maximum line length.
    LineTooLong,
    /// The bytes were not valid UTF-8.
    InvalidUtf8,
    /// The text was not valid JSON.
    NotJson,
    /// Valid JSON, but not an object.
    NotObject,
    /// A required field was absent or null.
    MissingField,
    /// A field had the wrong JSON type.
    WrongType,
    /// The time could not be parsed or was out of range.
    BadTime,
    /// The time lies further after the line's arrival than the allowed clock skew.
    FutureTime,
    /// `family` named no known family.
    UnknownFamily,
    /// `action` named no known audit action.
    UnknownAction,
    /// An IP field held no valid address.
    InvalidIp,
    /// A value was out of range, too long or not one of the accepted values.
    InvalidValue,
    /// The same field appeared twice.
    DuplicateField,
    /// Unknown fields exceeded the size kept in `extra`.
    ExtraTooLarge,
    /// The line's location or state is not its license's (locations.csv).
    LocationMismatch,
}

impl ReasonCode {
    /// Every code, for documentation and metric pre-registration.
    pub const ALL: [ReasonCode; 16] = [
        ReasonCode::EmptyLine,
        ReasonCode::LineTooLong,
        ReasonCode::InvalidUtf8,
        ReasonCode::NotJson,
        ReasonCode::NotObject,
        ReasonCode::MissingField,
        ReasonCode::WrongType,
        ReasonCode::BadTime,
        ReasonCode::FutureTime,
        ReasonCode::UnknownFamily,
        ReasonCode::UnknownAction,
        ReasonCode::InvalidIp,
        ReasonCode::InvalidValue,
        ReasonCode::DuplicateField,
        ReasonCode::ExtraTooLarge,
        ReasonCode::LocationMismatch,
    ];

    /// The code as stored and labelled.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReasonCode::EmptyLine => "empty_line",
            ReasonCode::LineTooLong => "line_too_long",
            ReasonCode::InvalidUtf8 => "invalid_utf8",
            ReasonCode::NotJson => "not_json",
            ReasonCode::NotObject => "not_object",
            ReasonCode::MissingField => "missing_field",
            ReasonCode::WrongType => "wrong_type",
            ReasonCode::BadTime => "bad_time",
            ReasonCode::FutureTime => "future_time",
            ReasonCode::UnknownFamily => "unknown_family",
            ReasonCode::UnknownAction => "unknown_action",
            ReasonCode::InvalidIp => "invalid_ip",
            ReasonCode::InvalidValue => "invalid_value",
            ReasonCode::DuplicateField => "duplicate_field",
            ReasonCode::ExtraTooLarge => "extra_too_large",
            ReasonCode::LocationMismatch => "location_mismatch",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schema of the `dead_letter` table.
pub fn dead_letter_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("dead_letter_id", DataType::Utf8, false),
                Field::new("received_at", timestamp_type(), false),
                Field::new("source", DataType::Utf8, false),
                Field::new("line", DataType::Int64, false),
                Field::new("reason_code", DataType::Utf8, false),
                Field::new("reason", DataType::Utf8, false),
                Field::new("family", DataType::Utf8, true),
                Field::new("raw", DataType::Utf8, false),
                Field::new("raw_bytes", DataType::Int64, false),
            ]))
        })
        .clone()
}
