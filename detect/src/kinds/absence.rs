//! `absence`: nothing passing the filter for a key for longer than a limit (event time),
//! escalating along a ladder: the manual's 5.3 (1 h: IT, 4 h: the regulator) is one
//! finding rising in severity.

use std::sync::Arc;

use datafusion::physical_expr::PhysicalExpr;
use seedwatch_schemas::Severity;
use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::duration::parse_duration_ms;
use crate::DetectError;

/// A limit: a fixed duration, or a policy value per state (`{policy: sync_limit}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LimitConfig {
    /// A duration such as `4h`.
    Fixed(String),
    /// A named policy value.
    Policy {
        /// The policy value's name.
        policy: String,
    },
}

/// One rung of an absence rule's escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderStep {
    /// Time since the last matching event at which this severity applies.
    pub after: String,
    /// The severity from then on.
    pub severity: Severity,
}

/// Resolved limit of an absence rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// Fixed, in ms.
    Fixed(i64),
    /// A policy value, looked up per state.
    Policy(String),
}

/// The compiled parameters of an `absence` rule.
#[derive(Debug, Clone)]
pub struct Absence {
    /// How long without a matching event before it fires.
    pub limit: Limit,
    /// Floor under the limit (real-time states have a limit of 0).
    pub minimum_ms: i64,
    /// (elapsed ms, severity), ascending.
    pub ladder: Vec<(i64, Severity)>,
    /// Events that stop tracking their key, compiled.
    pub clear: Option<Arc<dyn PhysicalExpr>>,
    /// The same as SQL text (for restoring state from the archive).
    pub clear_sql: Option<String>,
}

impl PartialEq for Absence {
    fn eq(&self, other: &Self) -> bool {
        self.limit == other.limit && self.minimum_ms == other.minimum_ms && self.ladder == other.ladder && self.clear.is_some() == other.clear.is_some()
    }
}

/// The fields of an `absence` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The limit, fixed or from policy.
    #[serde(default)]
    pub limit: Option<LimitConfig>,
    /// A floor under the limit.
    #[serde(default)]
    pub minimum: Option<String>,
    /// SQL filter of events that end tracking of their key (a revoked key).
    #[serde(default)]
    pub clear: Option<String>,
    /// Severities by time elapsed.
    #[serde(default)]
    pub ladder: Vec<LadderStep>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let limit = match &self.limit {
            None => return Err((cx.err)("type", "an `absence` rule needs field `limit` (a duration or `{policy: sync_limit}`)".into())),
            Some(LimitConfig::Fixed(text)) => Limit::Fixed(parse_duration_ms(text).map_err(|m| (cx.err)("limit", format!("field `limit`: {m}")))?),
            Some(LimitConfig::Policy { policy }) => {
                if !crate::policy::NUMERIC_NAMES.contains(&policy.as_str()) {
                    return Err((cx.err)("limit", format!("field `limit`: unknown policy value `{policy}` (known: {})", crate::policy::NUMERIC_NAMES.join(", "))));
                }
                Limit::Policy(policy.clone())
            }
        };
        let minimum_ms = cx.duration("minimum", &self.minimum)?.unwrap_or(0);
        let mut ladder = Vec::new();
        for step in &self.ladder {
            let after = parse_duration_ms(&step.after).map_err(|m| (cx.err)("ladder", format!("field `ladder`: {m}")))?;
            ladder.push((after, step.severity));
        }
        if ladder.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err((cx.err)("ladder", "field `ladder`: steps must be in increasing `after` order".into()));
        }
        let clear = match &self.clear {
            Some(sql) => Some(crate::rule::compile_filter(cx.sql, cx.schema, sql).map_err(|m| (cx.err)("clear", format!("field `clear`: {m}")))?),
            None => None,
        };
        Ok(KindParts { absence: Some(Absence { limit, minimum_ms, ladder, clear, clear_sql: self.clear }), ..KindParts::default() })
    }
}
