//! Rule kinds, one module each: the YAML fields of its `type`, their checks, the
//! parameters they compile to, and the kind's per-key state with its warm-up. Adding a kind
//! is a module here, a [`RuleType`] variant and its line in [`compile`].
//!
//! The engine (`crate::engine`) runs what every kind shares: the filter, exceptions,
//! row conditions, the group key, and the life of a finding (open, grow, suppress, publish,
//! close). A kind's module holds what is its own: `absence` its silences
//! ([`absence::Silences`]), `baseline` its hours ([`baseline::Hours`]), `new_value` its
//! seen-sets ([`new_value::SeenSets`]), and the windowed kinds their [`Window`]: a count
//! or distinct count (`threshold`; `match`, `schedule` and `reference` are a count of
//! one), or a gauge's readings (`trend`). Warm-up queries are in `absence` and `new_value`;
//! the others replay the archive's recent events (`crate::resume`).
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

use std::collections::VecDeque;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use seedwatch_schemas::finding::MAX_EVIDENCE;
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

/// What a key of a windowed kind remembers of its window. A rule has one kind, so the
/// kinds share one field (`benches/state.rs`: three separate fields were 48 bytes of every key).
#[derive(Debug)]
pub(crate) enum Window {
    /// Count mode: the last N matches (time, event id), oldest first.
    Recent(threshold::Recent),
    /// Distinct mode (see [`threshold::Distinct`]).
    Distinct(threshold::Distinct),
    /// Trend mode: the last readings (time, value, event id), oldest first.
    Readings(trend::Readings),
}

impl Default for Window {
    fn default() -> Self {
        Window::Recent(VecDeque::new())
    }
}

impl Window {
    /// Add a match to a count window ([`threshold::count`]).
    pub(crate) fn count(&mut self, t: i64, event_id: &str, threshold: usize, window_ms: i64) -> (bool, i64) {
        match self {
            Window::Recent(recent) => threshold::count(recent, t, event_id, threshold, window_ms),
            // A key keeps its rule's one kind: this is the first match of a fresh key.
            other => {
                let mut recent = VecDeque::new();
                let fired = threshold::count(&mut recent, t, event_id, threshold, window_ms);
                *other = Window::Recent(recent);
                fired
            }
        }
    }

    /// Add a value to a distinct-value window ([`threshold::count_distinct`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn count_distinct(&mut self, t: i64, value: &str, event_id: &str, threshold: usize, window_ms: i64, max_values: usize, evicted: &mut u64) -> (bool, i64) {
        match self {
            Window::Distinct(distinct) => threshold::count_distinct(distinct, t, value, event_id, threshold, window_ms, max_values, evicted),
            other => {
                let mut distinct = Vec::new();
                let fired = threshold::count_distinct(&mut distinct, t, value, event_id, threshold, window_ms, max_values, evicted);
                *other = Window::Distinct(distinct);
                fired
            }
        }
    }

    /// Add a reading to a trend's window ([`trend::read`]).
    pub(crate) fn read(&mut self, t: i64, value: i64, event_id: &str, trend: &trend::Trend, window_ms: i64) -> (bool, i64) {
        match self {
            Window::Readings(readings) => trend::read(readings, t, value, event_id, trend, window_ms),
            other => {
                let mut readings = VecDeque::new();
                let fired = trend::read(&mut readings, t, value, event_id, trend, window_ms);
                *other = Window::Readings(readings);
                fired
            }
        }
    }

    /// A new finding's evidence from the window: (event ids, how many events or values,
    /// the values or readings to show), at most [`MAX_EVIDENCE`] of each.
    pub(crate) fn evidence(&self) -> (Vec<String>, usize, Vec<String>) {
        match self {
            Window::Readings(readings) => (readings.iter().map(|(_, _, id)| id.to_string()).collect(), readings.len(), readings.iter().map(|(_, v, _)| v.to_string()).collect()),
            Window::Recent(recent) => (recent.iter().take(MAX_EVIDENCE).map(|(_, id)| id.to_string()).collect(), recent.len(), Vec::new()),
            Window::Distinct(distinct) => {
                let mut seen: Vec<(&i64, &Box<str>, &Box<str>)> = distinct.iter().map(|(v, s, id)| (s, id, v)).collect();
                seen.sort();
                (seen.iter().take(MAX_EVIDENCE).map(|(_, id, _)| id.to_string()).collect(), seen.len(), seen.iter().take(MAX_EVIDENCE).map(|(_, _, v)| v.to_string()).collect())
            }
        }
    }
}
