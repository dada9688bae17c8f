//! `threshold`: N events (or distinct values) per group key within a sliding event-time
//! window.

use std::collections::BTreeMap;

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
