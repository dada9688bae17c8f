//! JSON Schema (draft 2020-12) for each family, generated from the field table.
//!
//! The files under `schemas/json/` are this module's output, committed so that
//! producers can validate without running seedwatch. A test regenerates them
//! and fails on any difference (`SEEDWATCH_UPDATE_GOLDEN=1` rewrites them).

use serde_json::{json, Map, Value};

use crate::fields::{self, Kind, Presence, SECRET_FIELDS};
use crate::{Family, STATE_CODES};

fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::Str { max_len } | Kind::Lower { max_len } | Kind::Upper { max_len } => {
            json!({"type": "string", "minLength": 1, "maxLength": max_len})
        }
        Kind::Enum(values) => json!({"type": "string", "enum": values}),
        Kind::State => json!({"type": "string", "enum": STATE_CODES}),
        Kind::Int { min, max } => json!({"oneOf": [
            {"type": "integer", "minimum": min, "maximum": max},
            {"type": "string", "pattern": "^-?[0-9]+$"}
        ]}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Ip => json!({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
        Kind::Time => json!({"oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": 946684800000i64}
        ]}),
    }
}

/// The JSON Schema of one family's NDJSON lines.
pub fn family_schema(family: Family) -> Value {
    let mut props = Map::new();
    props.insert("family".into(), json!({"const": family.as_str(), "description": "The event family."}));
    let mut required = vec![Value::from("family")];
    for f in fields::all_fields(family) {
        let mut schema = kind_schema(f.kind);
        if let Value::Object(m) = &mut schema {
            m.insert("description".into(), Value::from(f.doc));
        }
        if f.presence != Presence::Required {
            schema = json!({"anyOf": [schema, {"type": "null"}]});
        }
        if f.presence == Presence::Required {
            required.push(Value::from(f.name));
        }
        props.insert(f.name.into(), schema);
    }
    for secret in SECRET_FIELDS {
        props.insert(
            (*secret).into(),
            json!({"type": "string", "writeOnly": true,
                   "description": "Raw credential: replaced at ingest by a keyed fingerprint, never stored."}),
        );
    }
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("seedwatch {} event", family.as_str()),
        "description": "One NDJSON line. Enum values are matched case-insensitively; unknown fields are kept in the `extra` column.",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": true,
    });
    let unless_key: Vec<&str> = fields::all_fields(family)
        .filter(|f| f.presence == Presence::RequiredUnlessRawKey)
        .map(|f| f.name)
        .collect();
    if let (Some(name), Value::Object(m)) = (unless_key.first(), &mut schema) {
        let alternatives: Vec<Value> = std::iter::once(*name)
            .chain(fields::KEY_FIELDS.iter().copied())
            .map(|n| json!({"required": [n]}))
            .collect();
        m.insert("anyOf".into(), Value::Array(alternatives));
    }
    schema
}

/// File name of a family's schema under `schemas/json/`.
pub fn file_name(family: Family) -> String {
    format!("{}.schema.json", family.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_json_schemas_match_the_field_table() {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from).join("json");
        let update = std::env::var_os("SEEDWATCH_UPDATE_GOLDEN").is_some();
        for family in Family::ALL {
            let path = dir.join(file_name(family));
            let generated = serde_json::to_string_pretty(&family_schema(family)).unwrap_or_default() + "\n";
            if update {
                std::fs::create_dir_all(&dir).ok();
                std::fs::write(&path, &generated).ok();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} is stale: run `SEEDWATCH_UPDATE_GOLDEN=1 cargo test -p seedwatch-schemas`",
                path.display()
            );
        }
    }

    #[test]
    fn api_schema_requires_a_key_id_or_a_raw_key() {
        let schema = family_schema(Family::Api);
        let any_of = schema.get("anyOf").and_then(Value::as_array).map(Vec::len);
        assert_eq!(any_of, Some(1 + fields::KEY_FIELDS.len()));
        assert!(family_schema(Family::Login).get("anyOf").is_none());
    }
}
