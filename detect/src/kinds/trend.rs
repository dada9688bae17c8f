//! `trend`: a gauge (`field`, e.g. pending transactions) rising over its last `points`
//! readings within `window` and ending at or above `above`. The module holds its fields,
//! their compile step and its window's update ([`read`]).

use std::collections::VecDeque;

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

/// A trend key's last readings (time, value, event id), oldest first.
pub(crate) type Readings = VecDeque<(i64, i64, Box<str>)>;

/// Add a reading at `t`; returns whether the last `points` readings, within `window_ms`,
/// never fall, rise overall and hold at or above `above` for the last `sustained`, and
/// the first reading's time.
pub(crate) fn read(readings: &mut Readings, t: i64, value: i64, event_id: &str, trend: &Trend, window_ms: i64) -> (bool, i64) {
    let at = readings.partition_point(|(rt, _, _)| *rt <= t);
    readings.insert(at, (t, value, Box::from(event_id)));
    while readings.len() > trend.points {
        readings.pop_front();
    }
    let r = &*readings;
    let (first, last) = (r.front().map_or((t, 0), |x| (x.0, x.1)), r.back().map_or((t, 0), |x| (x.0, x.1)));
    let never_falls = r.iter().zip(r.iter().skip(1)).all(|(a, b)| b.1 >= a.1);
    let held = r.iter().rev().take(trend.sustained).all(|x| x.1 >= trend.above);
    (r.len() == trend.points && last.0 - first.0 <= window_ms && never_falls && last.1 > first.1 && held, first.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend() -> Trend {
        Trend { field: 0, above: 100, points: 3, sustained: 2 }
    }

    #[test]
    fn a_gauge_that_rises_and_holds_above_fires_and_one_that_falls_or_jumps_once_does_not() {
        let mut rising = Readings::new();
        let fired: Vec<bool> = [(0, 50), (1_000, 120), (2_000, 150)].iter().map(|(t, v)| read(&mut rising, *t, *v, "e", &trend(), 60_000).0).collect();
        assert_eq!(fired, [false, false, true]);
        let mut falls = Readings::new();
        let fired: Vec<bool> = [(0, 50), (1_000, 160), (2_000, 150)].iter().map(|(t, v)| read(&mut falls, *t, *v, "e", &trend(), 60_000).0).collect();
        assert_eq!(fired, [false, false, false]);
        // One jump: only the last reading is above, `sustained` wants two.
        let mut jump = Readings::new();
        let fired: Vec<bool> = [(0, 10), (1_000, 20), (2_000, 500)].iter().map(|(t, v)| read(&mut jump, *t, *v, "e", &trend(), 60_000).0).collect();
        assert_eq!(fired, [false, false, false]);
    }
}
