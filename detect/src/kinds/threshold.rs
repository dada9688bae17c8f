//! `threshold`: N events (or distinct values) per group key within a sliding event-time
//! window. The module holds its fields, their compile step and its window's updates
//! ([`count`], [`count_distinct`]); `match`, `schedule` and `reference` rules are a count of one.

use std::collections::{BTreeMap, VecDeque};

use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::DetectError;

/// A threshold: one number, or one per tracking system (`{metrc: 10, biotrack: 5}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ThresholdConfig {
    /// The same for every system.
    All(u32),
    /// A per-system number from policy.yaml (`{policy: failed_api_per_hour}`).
    Policy {
        /// The policy value's name.
        policy: String,
    },
    /// Per system; a system not listed never fires.
    PerSystem(BTreeMap<String, u32>),
}

/// The fields of a `threshold` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Events (or distinct values) needed inside `window`.
    #[serde(default)]
    pub threshold: Option<ThresholdConfig>,
    /// Sliding event-time window, e.g. `1h`.
    #[serde(default)]
    pub window: Option<String>,
    /// Count distinct values of this column instead of events.
    #[serde(default)]
    pub distinct: Option<String>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let threshold = self.threshold.ok_or_else(|| (cx.err)("type", "a `threshold` rule needs field `threshold`".into()))?;
        let window = cx.duration("window", &self.window)?.ok_or_else(|| (cx.err)("type", "a `threshold` rule needs field `window`".into()))?;
        let bad = match &threshold {
            ThresholdConfig::All(n) => *n == 0,
            ThresholdConfig::Policy { policy } => !crate::policy::SYSTEM_NUMBER_NAMES.contains(&policy.as_str()),
            ThresholdConfig::PerSystem(m) => m.is_empty() || m.values().any(|n| *n == 0) || m.keys().any(|k| !seedwatch_schemas::SYSTEMS.contains(&k.as_str())),
        };
        if bad || window <= 0 {
            return Err((cx.err)("threshold", "field `threshold`: must be a positive number, positive numbers per system (metrc, biotrack), or `{policy: failed_api_per_hour}`, with a positive `window`".into()));
        }
        let distinct = self.distinct.as_deref().map(|c| cx.column("distinct", c)).transpose()?;
        Ok(KindParts { threshold, window_ms: window, distinct, ..KindParts::default() })
    }
}

/// A count window: the last N matches (time, event id), oldest first.
pub(crate) type Recent = VecDeque<(i64, Box<str>)>;

/// A distinct-value window: (value, last seen, event id of that sighting), unordered. A
/// vector, not a map: a key holds a handful of values, and a map's first node alone is ~450 bytes.
pub(crate) type Distinct = Vec<(Box<str>, i64, Box<str>)>;

/// Add a match at `t`; returns whether the last `threshold` matches fall within
/// `window_ms`, and the first one's time.
pub(crate) fn count(recent: &mut Recent, t: i64, event_id: &str, threshold: usize, window_ms: i64) -> (bool, i64) {
    let at = recent.partition_point(|(rt, _)| *rt <= t);
    recent.insert(at, (t, Box::from(event_id)));
    while recent.len() > threshold {
        recent.pop_front();
    }
    let first = recent.front().map_or(t, |(ft, _)| *ft);
    let last = recent.back().map_or(t, |(lt, _)| *lt);
    (recent.len() >= threshold && last - first <= window_ms, first)
}

/// Add a sighting of `value` at `t`, forgetting values last seen more than `window_ms`
/// before it; returns whether `threshold` distinct values remain, and the oldest sighting's time.
/// At `max_values` the values seen longest ago are forgotten (counted in `evicted`), so one key
/// sent a million addresses costs a bounded scan per event, not a growing one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn count_distinct(distinct: &mut Distinct, t: i64, value: &str, event_id: &str, threshold: usize, window_ms: i64, max_values: usize, evicted: &mut u64) -> (bool, i64) {
    let horizon = t - window_ms;
    distinct.retain(|(_, seen, _)| *seen >= horizon);
    match distinct.iter_mut().find(|(v, _, _)| v.as_ref() == value) {
        Some((_, seen, id)) => {
            *seen = (*seen).max(t);
            *id = Box::from(event_id);
        }
        None => {
            if distinct.len() >= max_values {
                let mut times: Vec<i64> = distinct.iter().map(|(_, seen, _)| *seen).collect();
                if let Some(cut) = crate::limits::cutoff(&mut times, crate::limits::keep_after_eviction(max_values)) {
                    let before = distinct.len();
                    distinct.retain(|(_, seen, _)| *seen > cut);
                    *evicted += (before - distinct.len()) as u64;
                }
            }
            crate::engine::reserve_one_while_small(distinct);
            distinct.push((Box::from(value), t, Box::from(event_id)));
        }
    }
    let first = distinct.iter().map(|(_, s, _)| *s).min().unwrap_or(t);
    (distinct.len() >= threshold, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_fires_when_the_last_n_matches_fit_in_the_window_in_any_arrival_order() {
        let mut recent = Recent::new();
        assert_eq!(count(&mut recent, 10_000, "b", 3, 60_000), (false, 10_000));
        // Late arrival: sorted into place, the window starts at the oldest kept.
        assert_eq!(count(&mut recent, 5_000, "a", 3, 60_000), (false, 5_000));
        assert_eq!(count(&mut recent, 65_000, "c", 3, 60_000), (true, 5_000));
        // Too spread out: the oldest of the last three is more than a window before the newest.
        let mut sparse = Recent::new();
        for (i, t) in [0, 40_000, 80_000].into_iter().enumerate() {
            assert!(!count(&mut sparse, t, &i.to_string(), 3, 60_000).0);
        }
    }

    #[test]
    fn a_distinct_count_counts_values_once_and_forgets_those_older_than_the_window() {
        let mut distinct = Distinct::new();
        let mut evicted = 0;
        assert!(!count_distinct(&mut distinct, 0, "10.0.0.1", "e1", 2, 60_000, 100, &mut evicted).0);
        assert!(!count_distinct(&mut distinct, 1_000, "10.0.0.1", "e2", 2, 60_000, 100, &mut evicted).0, "the same value again");
        assert_eq!(count_distinct(&mut distinct, 2_000, "10.0.0.2", "e3", 2, 60_000, 100, &mut evicted), (true, 1_000));
        // Both earlier values are past the window by now.
        assert!(!count_distinct(&mut distinct, 200_000, "10.0.0.3", "e4", 2, 60_000, 100, &mut evicted).0);
        assert_eq!(distinct.len(), 1);
        assert_eq!(evicted, 0);
    }

    #[test]
    fn a_key_sent_endless_distinct_values_keeps_a_bounded_window_and_still_fires() {
        let mut distinct = Distinct::new();
        let mut evicted = 0;
        for i in 0..100_000i64 {
            let (fires, _) = count_distinct(&mut distinct, i, &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), "e", 5, 3_600_000, 1_000, &mut evicted);
            assert_eq!(fires, i >= 4, "{i}");
            assert!(distinct.len() <= 1_000, "{i}: {} values held", distinct.len());
        }
        assert!(evicted >= 99_000, "{evicted}");
        // The newest values are the ones kept.
        assert!(distinct.iter().any(|(_, seen, _)| *seen == 99_999));
        assert!(distinct.iter().all(|(_, seen, _)| *seen >= 99_000));
    }
}
