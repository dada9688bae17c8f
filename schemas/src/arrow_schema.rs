//! Arrow schemas of the event tables, derived from the field table.

use std::sync::{Arc, OnceLock};

use crate::arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use crate::fields::{self, Kind, Presence};
use crate::Family;

/// Columns appended after the contract fields of every event table.
pub const PROVENANCE_COLUMNS: &[&str] = &["extra", "source", "line"];

/// The timestamp type of every time column: UTC milliseconds.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The Arrow type a field of this kind is stored as.
pub fn arrow_type(kind: Kind) -> DataType {
    match kind {
        Kind::Int { .. } => DataType::Int64,
        Kind::Bool => DataType::Boolean,
        Kind::Time => timestamp_type(),
        Kind::Str { .. } | Kind::Lower { .. } | Kind::Upper { .. } | Kind::Enum(_) | Kind::State | Kind::Ip => {
            DataType::Utf8
        }
    }
}

/// Whether a stored field is never null: required fields, fields with a
/// default, and the two the decoder always fills (`event_id`, `location`).
pub fn is_non_null(field: &fields::Field) -> bool {
    field.presence == Presence::Required
        || field.presence == Presence::RequiredUnlessRawKey
        || field.default_int.is_some()
        || matches!(field.name, "event_id" | "location")
}

fn build(family: Family) -> SchemaRef {
    let mut cols: Vec<ArrowField> = fields::all_fields(family)
        .map(|f| ArrowField::new(f.name, arrow_type(f.kind), !is_non_null(f)))
        .collect();
    cols.push(ArrowField::new("extra", DataType::Utf8, true));
    cols.push(ArrowField::new("source", DataType::Utf8, false));
    cols.push(ArrowField::new("line", DataType::Int64, false));
    Arc::new(Schema::new(cols))
}

/// The schema of a family's archive table (without the `date` partition column).
pub fn event_schema(family: Family) -> SchemaRef {
    static SCHEMAS: OnceLock<[SchemaRef; 4]> = OnceLock::new();
    SCHEMAS.get_or_init(|| Family::ALL.map(build))[family.index()].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_schema_has_contract_then_provenance_columns() {
        let schema = event_schema(Family::Login);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(&names[..3], &["event_id", "time", "system"]);
        assert_eq!(&names[names.len() - 3..], PROVENANCE_COLUMNS);
        assert!(!schema.field_with_name("user").map(|f| f.is_nullable()).unwrap_or(true));
        assert!(schema.field_with_name("mfa").map(|f| f.is_nullable()).unwrap_or(false));
    }
}
