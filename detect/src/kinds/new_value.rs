//! `new_value`: a value of `field` (an IP, an integration) not seen for the key within
//! `history`, after a learning period from the key's first sighting. The module holds the
//! kind whole: its fields, their compile step, its per-key state ([`SeenSets`]) and the
//! warm-up query that rebuilds that state from the archive ([`warm_up_query`]).

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::sort_to_indices;
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::arrow::row::RowConverter;
use foldhash::HashMap;
use seedwatch_schemas::arrow_schema::event_schema;
use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::rule::CompiledRule;
use crate::DetectError;

/// The compiled parameters of a `new_value` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewValue {
    /// Column whose values are tracked per key.
    pub field: usize,
    /// A value unseen for this long counts as new again.
    pub history_ms: i64,
    /// A key's first sighting starts a quiet period of this length.
    pub learning_ms: i64,
}

/// The fields of a `new_value` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The column whose values are tracked.
    #[serde(default)]
    pub field: Option<String>,
    /// How long a value stays known (default 90d).
    #[serde(default)]
    pub history: Option<String>,
    /// Quiet period after a key's first sighting (default 7d).
    #[serde(default)]
    pub learning: Option<String>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let field = self.field.as_deref().ok_or_else(|| (cx.err)("type", "a `new_value` rule needs field `field`".into()))?;
        let new_value = NewValue {
            field: cx.column("field", field)?,
            history_ms: cx.duration("history", &self.history)?.unwrap_or(90 * 86_400_000),
            learning_ms: cx.duration("learning", &self.learning)?.unwrap_or(7 * 86_400_000),
        };
        Ok(KindParts { new_value: Some(new_value), ..KindParts::default() })
    }
}

/// New-value rules: what each key has been seen with.
#[derive(Debug, Default)]
struct SeenValues {
    first_seen: i64,
    values: Sightings,
}

impl SeenValues {
    fn new(first_seen: i64) -> Self {
        Self { first_seen, values: Sightings::default() }
    }
}

/// Value hash -> newest sighting (event time), sorted by hash. A vector sized to fit, not a
/// map: most keys have one or two values, and an empty map's first allocation alone is larger
/// than a dozen entries here (`benches/state.rs`).
#[derive(Debug, Default)]
struct Sightings(Vec<(u64, i64)>);

impl Sightings {
    /// When `hash` was last seen.
    fn last_seen(&self, hash: u64) -> Option<i64> {
        self.0.binary_search_by_key(&hash, |(h, _)| *h).ok().map(|i| self.0[i].1)
    }

    /// Record a sighting at `time`, keeping the newest.
    fn record(&mut self, hash: u64, time: i64) {
        match self.0.binary_search_by_key(&hash, |(h, _)| *h) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(time),
            Err(i) => {
                crate::engine::reserve_one_while_small(&mut self.0);
                self.0.insert(i, (hash, time));
            }
        }
    }
}

impl Sightings {
    /// Past `max` sightings, forget the oldest (a tenth of `max`); returns how many.
    fn bound(&mut self, max: usize) -> u64 {
        if self.0.len() <= max {
            return 0;
        }
        let mut times: Vec<i64> = self.0.iter().map(|(_, t)| *t).collect();
        let Some(cut) = crate::limits::cutoff(&mut times, crate::limits::keep_after_eviction(max)) else { return 0 };
        let before = self.0.len();
        self.0.retain(|(_, t)| *t > cut);
        (before - self.0.len()) as u64
    }

    /// The newest sighting.
    fn newest(&self) -> Option<i64> {
        self.0.iter().map(|(_, t)| *t).max()
    }
}

/// Per key (group-by row bytes), the values it has been seen with: the state of one
/// `new_value` rule.
#[derive(Debug, Default)]
pub(crate) struct SeenSets(HashMap<Box<[u8]>, SeenValues>);

impl SeenSets {
    /// Keys tracked.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Hold the sets within `limits`: past `max_keys_per_rule` keys, forget those seen
    /// longest ago down to `keep`. Returns keys forgotten.
    pub(crate) fn bound_keys(&mut self, limits: &crate::limits::StateLimits, keep: usize) -> u64 {
        if self.0.len() <= limits.max_keys_per_rule {
            return 0;
        }
        crate::limits::evict_idle(&mut self.0, keep, |k| Some(k.values.newest().unwrap_or(k.first_seen)))
    }

    /// Forget sightings older than `history` before `newest` (they no longer make a value
    /// known) and keys left with none: a resumed detector's warm-up does the same.
    pub(crate) fn sweep(&mut self, newest: i64, history_ms: i64) {
        let horizon = newest.saturating_sub(history_ms);
        self.0.retain(|_, k| {
            k.values.0.retain(|(_, t)| *t >= horizon);
            !k.values.0.is_empty()
        });
    }

    /// New-value rules: mark rows whose value the key has not shown within the
    /// history, outside the key's learning period; remember every value seen.
    /// Each key remembers at most `max_values` values; those forgotten are added to `evicted`.
    pub(crate) fn mask(&mut self, nv: &NewValue, batch: &RecordBatch, converter: &RowConverter, group_by: &[usize], max_values: usize, evicted: &mut u64) -> Result<BooleanArray, String> {
        let seen = &mut self.0;
        let keys = converter
            .convert_columns(&group_by.iter().map(|c| batch.column(*c).clone()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
        let time_col = batch.column_by_name("time").ok_or("no time column")?;
        let time = time_col.as_primitive_opt::<TimestampMillisecondType>().ok_or("time is not a timestamp")?;
        let values = crate::engine::as_utf8(batch, nv.field)?;
        let values = values.as_string::<i32>();
        let order = sort_to_indices(time_col, None, None).map_err(|e| e.to_string())?;
        let mut is_new = vec![false; batch.num_rows()];
        for &row in order.values() {
            let row = row as usize;
            if values.is_null(row) {
                continue;
            }
            let t = time.value(row);
            let key = keys.row(row);
            if !seen.contains_key(key.as_ref()) {
                seen.insert(Box::from(key.as_ref()), SeenValues::new(t));
            }
            let Some(state) = seen.get_mut(key.as_ref()) else { continue };
            let hash = xxhash_rust::xxh3::xxh3_64(values.value(row).as_bytes());
            let known = state.values.last_seen(hash).is_some_and(|last| t - last <= nv.history_ms);
            let learning = t - state.first_seen < nv.learning_ms;
            is_new[row] = !known && !learning;
            state.values.record(hash, t);
            *evicted += state.values.bound(max_values);
        }
        Ok(BooleanArray::from(is_new))
    }

    /// Seed from the rows of [`warm_up_query`] (group-by columns, value, first and last
    /// seen). Returns keys added.
    pub(crate) fn restore(&mut self, converter: &RowConverter, n: usize, batch: &RecordBatch) -> Result<usize, String> {
        if batch.num_columns() != n + 3 {
            return Err("unexpected columns".into());
        }
        // SQL may hand strings back as views; the converter and hashes want plain Utf8.
        let utf8: Vec<_> = (0..=n).map(|i| crate::engine::as_utf8(batch, i)).collect::<Result<_, _>>()?;
        let keys = converter.convert_columns(&utf8[..n]).map_err(|e| e.to_string())?;
        let values = utf8[n].as_string_opt::<i32>().ok_or("value is not a string")?;
        let first = batch.column(n + 1).as_primitive_opt::<TimestampMillisecondType>().ok_or("first_seen is not a timestamp")?;
        let last = batch.column(n + 2).as_primitive_opt::<TimestampMillisecondType>().ok_or("last_seen is not a timestamp")?;
        let before = self.0.len();
        for row in 0..batch.num_rows() {
            if values.is_null(row) {
                continue;
            }
            let key = keys.row(row);
            if !self.0.contains_key(key.as_ref()) {
                self.0.insert(Box::from(key.as_ref()), SeenValues::new(first.value(row)));
            }
            if let Some(seen) = self.0.get_mut(key.as_ref()) {
                seen.first_seen = seen.first_seen.min(first.value(row));
                seen.values.record(xxhash_rust::xxh3::xxh3_64(values.value(row).as_bytes()), last.value(row));
            }
        }
        Ok(self.0.len() - before)
    }
}

/// SQL that recovers a `new_value` rule's seen-sets: one row per (group key,
/// value) with `first_seen` and `last_seen`, from events before `until`.
pub(crate) fn warm_up_query(rule: &CompiledRule, until: i64) -> Option<String> {
    let nv = rule.new_value.as_ref()?;
    let schema = event_schema(rule.family);
    let quote = |i: &usize| format!("\"{}\"", schema.field(*i).name());
    let groups: Vec<String> = rule.group_by.iter().map(quote).collect();
    let field = quote(&nv.field);
    let since = until.saturating_sub(nv.history_ms);
    Some(format!(
        "SELECT {g}, CAST({field} AS VARCHAR) AS value, min(time) AS first_seen, max(time) AS last_seen \
         FROM {table} WHERE {range} AND ({filter}) AND {field} IS NOT NULL GROUP BY {g}, {field}",
        g = groups.join(", "),
        table = rule.family.as_str(),
        range = crate::resume::time_range(since, until),
        filter = rule.evaluated_sql(),
    ))
}

#[cfg(test)]
mod tests {
    use super::Sightings;

    #[test]
    fn sightings_keep_the_newest_time_per_value_in_any_insertion_order() {
        let mut s = Sightings::default();
        for (hash, time) in [(30, 5), (10, 7), (20, 1), (10, 3), (30, 9), (5, 2)] {
            s.record(hash, time);
        }
        assert_eq!(s.last_seen(10), Some(7), "an older sighting must not overwrite a newer one");
        assert_eq!(s.last_seen(30), Some(9));
        assert_eq!(s.last_seen(20), Some(1));
        assert_eq!(s.last_seen(5), Some(2));
        assert_eq!(s.last_seen(15), None);
        assert_eq!(s.0.iter().map(|(h, _)| *h).collect::<Vec<_>>(), [5, 10, 20, 30]);
    }

    #[test]
    fn a_single_sighting_allocates_one_entry() {
        let mut s = Sightings::default();
        s.record(1, 1);
        assert_eq!(s.0.capacity(), 1);
    }
}
