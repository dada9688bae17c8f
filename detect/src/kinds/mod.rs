//! Rule kinds, one module each: the YAML fields of its `type`, their checks, and the
//! parameters they compile to. Adding a kind is a module here, a [`RuleType`] variant and
//! its line in [`compile`]. `new_value` also holds its per-key state and warm-up query;
//! the other kinds' state is still in `engine.rs` and `resume.rs`, to follow it here.
//!
//! A rule file is read in two passes over its text: the fields every rule has
//! ([`crate::rule::RuleConfig`]), then the fields of its `type` into that kind's `Config`.
//! Reading the text twice keeps serde_yaml's line numbers in every error (an internally
//! tagged enum would buffer the mapping first and lose them); a key neither pass knows is
//! an error naming its line.

pub mod absence;
pub mod baseline;
pub mod matching;
pub mod new_value;
pub mod reference;
pub mod schedule;
pub mod threshold;
pub mod trend;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use seedwatch_schemas::Family;
use serde::de::DeserializeOwned;

use crate::rule::{RowCondition, RuleType, ThresholdConfig};
use crate::DetectError;

/// What a kind adds to a compiled rule (the rest comes from the common fields).
#[derive(Debug)]
pub struct KindParts {
    /// Events (or distinct values) needed, per system.
    pub threshold: ThresholdConfig,
    /// Window in ms (0 where the kind has none).
    pub window_ms: i64,
    /// Distinct-count column.
    pub distinct: Option<usize>,
    /// Per-row check after the filter.
    pub condition: RowCondition,
    /// Absence parameters.
    pub absence: Option<absence::Absence>,
    /// New-value parameters.
    pub new_value: Option<new_value::NewValue>,
    /// Baseline parameters.
    pub baseline: Option<baseline::Baseline>,
    /// Trend parameters.
    pub trend: Option<trend::Trend>,
}

impl Default for KindParts {
    fn default() -> Self {
        Self { threshold: ThresholdConfig::All(1), window_ms: 0, distinct: None, condition: RowCondition::None, absence: None, new_value: None, baseline: None, trend: None }
    }
}

/// What a kind's compile step may use: the family's columns, the SQL session, and the
/// way to report an error at a key's line.
pub struct Context<'a> {
    /// The rule's family.
    pub family: Family,
    /// Its table's schema.
    pub schema: &'a SchemaRef,
    /// For compiling SQL.
    pub sql: &'a SessionContext,
    /// An error at the line of `key`.
    pub err: &'a dyn Fn(&str, String) -> DetectError,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("family", &self.family).finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The index of `column`, named by field `key`.
    pub fn column(&self, key: &str, column: &str) -> Result<usize, DetectError> {
        self.schema.index_of(column).map_err(|_| (self.err)(key, format!("field `{key}`: `{column}` is not a column of the {} table", self.family)))
    }

    /// A duration field in ms.
    pub fn duration(&self, key: &str, value: &Option<String>) -> Result<Option<i64>, DetectError> {
        value.as_deref().map(crate::duration::parse_duration_ms).transpose().map_err(|m| (self.err)(key, format!("field `{key}`: {m}")))
    }
}

/// A kind's fields, read from the rule file's text.
pub trait KindConfig: DeserializeOwned {
    /// Check the fields and resolve them against the family.
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError>;
}

/// Read and compile the fields of `rule_type` from `text`; also the names of those fields.
pub fn compile(rule_type: RuleType, file: &str, text: &str, cx: &Context<'_>) -> Result<(KindParts, &'static [&'static str]), DetectError> {
    match rule_type {
        RuleType::Match => read::<matching::Config>(file, text, cx),
        RuleType::Threshold => read::<threshold::Config>(file, text, cx),
        RuleType::Schedule => read::<schedule::Config>(file, text, cx),
        RuleType::Reference => read::<reference::Config>(file, text, cx),
        RuleType::Absence => read::<absence::Config>(file, text, cx),
        RuleType::NewValue => read::<new_value::Config>(file, text, cx),
        RuleType::Baseline => read::<baseline::Config>(file, text, cx),
        RuleType::Trend => read::<trend::Config>(file, text, cx),
    }
}

fn read<T: KindConfig>(file: &str, text: &str, cx: &Context<'_>) -> Result<(KindParts, &'static [&'static str]), DetectError> {
    let config: T = serde_yaml::from_str(text).map_err(|e| crate::rule::yaml_error(file, &e))?;
    Ok((config.compile(cx)?, struct_fields::<T>()))
}

/// The field names of a struct, as its `Deserialize` impl lists them.
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    struct Probe(&'static [&'static str]);
    struct Fields<'a>(&'a mut Probe);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
            self.0 .0 = fields;
            Err(Self::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
            newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(&[]);
    let _ = T::deserialize(Fields(&mut probe));
    probe.0
}
