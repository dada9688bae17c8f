//! Bounds on what a detector remembers, whatever its input (`limits:` in `policy.yaml`).
//!
//! A rule remembers per group key (a user, a key id, an integration), and a sender chooses
//! the keys: random user names or integrations would grow every map for ever, and a million
//! distinct addresses for one user would make each event scan a million values. So each rule
//! tracks at most `max_keys_per_rule` keys and each key at most `max_values_per_key` values;
//! at a limit the entries idle longest are forgotten (a tenth at a time, so the cost is
//! amortised), counted in `seedwatch_detector_state_evicted_total`, and a finding
//! (`seedwatch.state_limit`) says which rule forgot how much, since what is forgotten can no
//! longer fire. Keys idle past `forget_idle_after` are swept whatever the count.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use serde::Deserialize;

/// The `limits:` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Group keys one rule tracks.
    pub max_keys_per_rule: Option<usize>,
    /// Values one key remembers (a distinct count's window, a new-value rule's sightings).
    pub max_values_per_key: Option<usize>,
    /// Forget a baseline or absence key with no event for this long (`90d`).
    pub forget_idle_after: Option<String>,
}

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Group keys one rule tracks.
    pub max_keys_per_rule: usize,
    /// Values one key remembers.
    pub max_values_per_key: usize,
    /// Idle time after which a baseline or absence key is forgotten, in ms.
    pub forget_idle_after_ms: i64,
}

impl Default for StateLimits {
    /// A million keys per rule is ~200 MB for the largest kind; ten thousand values per key
    /// keeps a scan of them in microseconds; a quarter of a year outlives every window and
    /// the longest learning period shipped.
    fn default() -> Self {
        Self { max_keys_per_rule: 1_000_000, max_values_per_key: 10_000, forget_idle_after_ms: 90 * 86_400_000 }
    }
}

impl StateLimits {
    /// The limits `config` sets, the defaults for the rest; the first invalid field, with why.
    pub fn from_config(config: &LimitsConfig) -> Result<Self, (&'static str, String)> {
        let base = Self::default();
        let positive = |field: &'static str, v: Option<usize>, default: usize| match v {
            Some(0) => Err((field, "must be at least 1".to_string())),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let forget_idle_after_ms = match &config.forget_idle_after {
            Some(text) => match crate::duration::parse_duration_ms(text) {
                Ok(ms) if ms > 0 => ms,
                Ok(_) => return Err(("forget_idle_after", "must be longer than 0s".into())),
                Err(e) => return Err(("forget_idle_after", e.to_string())),
            },
            None => base.forget_idle_after_ms,
        };
        Ok(Self {
            max_keys_per_rule: positive("max_keys_per_rule", config.max_keys_per_rule, base.max_keys_per_rule)?,
            max_values_per_key: positive("max_values_per_key", config.max_values_per_key, base.max_values_per_key)?,
            forget_idle_after_ms,
        })
    }
}

/// How many entries to keep when `len` has passed `limit`: nine tenths of it, so the next
/// eviction is a tenth of the limit away.
pub(crate) fn keep_after_eviction(limit: usize) -> usize {
    limit - limit / 10
}

/// The time at or before which entries go so that about `keep` of `times` stay: the newest
/// are kept. `times` is reordered.
pub(crate) fn cutoff(times: &mut [i64], keep: usize) -> Option<i64> {
    if times.len() <= keep {
        return None;
    }
    let evict = times.len() - keep;
    let (_, nth, _) = times.select_nth_unstable(evict - 1);
    Some(*nth)
}

/// Forget the entries of `map` idle longest until `keep` remain, counting only those
/// `last_active` returns a time for (the rest, such as keys with an open finding, stay).
/// Returns entries forgotten.
pub(crate) fn evict_idle<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>, keep: usize, last_active: impl Fn(&V) -> Option<i64>) -> u64 {
    let mut times: Vec<i64> = map.values().filter_map(&last_active).collect();
    let pinned = map.len() - times.len();
    let Some(cut) = cutoff(&mut times, keep.saturating_sub(pinned)) else { return 0 };
    let before = map.len();
    map.retain(|_, v| last_active(v).is_none_or(|t| t > cut));
    (before - map.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_the_newest_and_the_pinned() {
        let mut map: HashMap<u32, (i64, bool)> = (0..100).map(|i| (i, (i64::from(i), i % 10 == 0))).collect();
        let gone = evict_idle(&mut map, 50, |(t, pinned)| (!pinned).then_some(*t));
        assert_eq!(gone, 50);
        assert_eq!(map.len(), 50);
        // The ten pinned entries stay whatever their age; the newest forty others stay with them.
        assert!((0..100).step_by(10).all(|i| map.contains_key(&i)));
        assert!(map.iter().filter(|(_, (_, p))| !p).all(|(_, (t, _))| *t >= 55), "{map:?}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = LimitsConfig { max_keys_per_rule: Some(0), ..LimitsConfig::default() };
        assert_eq!(StateLimits::from_config(&bad).map_err(|e| e.0), Err("max_keys_per_rule"));
        let bad = LimitsConfig { forget_idle_after: Some("soon".into()), ..LimitsConfig::default() };
        assert_eq!(StateLimits::from_config(&bad).map_err(|e| e.0), Err("forget_idle_after"));
        let ok = LimitsConfig { forget_idle_after: Some("30d".into()), max_values_per_key: Some(64), ..LimitsConfig::default() };
        assert_eq!(StateLimits::from_config(&ok), Ok(StateLimits { max_values_per_key: 64, forget_idle_after_ms: 30 * 86_400_000, ..StateLimits::default() }));
    }
}
