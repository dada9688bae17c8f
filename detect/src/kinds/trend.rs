//! `trend`: a gauge (`field`, e.g. pending transactions) rising over its last `points`
//! readings within `window` and ending at or above `above`.

use datafusion::arrow::datatypes::DataType;
use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::DetectError;

/// The compiled parameters of a `trend` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trend {
    /// Integer column read as a gauge.
    pub field: usize,
    /// The last reading must be at least this.
    pub above: i64,
    /// Consecutive readings that must not fall (and must rise overall).
    pub points: usize,
    /// How many of the last readings must be at or above `above`: a single
    /// jump (a bulk import landing at once) is not a backlog that grows.
    pub sustained: usize,
}

/// The fields of a `trend` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The gauge column.
    #[serde(default)]
    pub field: Option<String>,
    /// The level the last reading must reach.
    #[serde(default)]
    pub above: Option<i64>,
    /// How many readings must rise (default 4).
    #[serde(default)]
    pub points: Option<usize>,
    /// How many of the last readings must be at or above `above` (default 2).
    #[serde(default)]
    pub sustained: Option<usize>,
    /// The readings' event-time window.
    #[serde(default)]
    pub window: Option<String>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let field = self.field.as_deref().ok_or_else(|| (cx.err)("type", "a `trend` rule needs field `field` (an integer column such as `pending`)".into()))?;
        let field = cx.column("field", field)?;
        if cx.schema.field(field).data_type() != &DataType::Int64 {
            return Err((cx.err)("field", "field `field`: a trend reads an integer column (pending, records, ...)".into()));
        }
        let above = self.above.ok_or_else(|| (cx.err)("type", "a `trend` rule needs field `above`".into()))?;
        let points = self.points.unwrap_or(4);
        if points < 2 {
            return Err((cx.err)("points", "field `points`: a trend needs at least 2 readings".into()));
        }
        let sustained = self.sustained.unwrap_or(2);
        if sustained == 0 || sustained > points {
            return Err((cx.err)("sustained", format!("field `sustained`: must be between 1 and `points` ({points})")));
        }
        let window = cx.duration("window", &self.window)?.filter(|w| *w > 0).ok_or_else(|| (cx.err)("type", "a `trend` rule needs a positive `window`".into()))?;
        Ok(KindParts { window_ms: window, trend: Some(Trend { field, above, points, sustained }), ..KindParts::default() })
    }
}
