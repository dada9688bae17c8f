//! Rule files: typed configuration, validated and compiled once at load.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use seedwatch_schemas::arrow_schema::event_schema;
use seedwatch_schemas::{Family, Severity};
use serde::Deserialize;

use crate::duration::parse_duration_ms;
use crate::exception::CompiledException;
use crate::DetectError;

/// What kind of evaluation a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// Every event passing the filter is a finding.
    Match,
    /// N events (or distinct values) per group key within a sliding window.
    Threshold,
    /// An event outside its location's business hours (locations.csv, local time, DST-aware).
    Schedule,
    /// An event joined against a reference table (roster.csv): use by a terminated user.
    Reference,
    /// Nothing passing the filter for a key for longer than a limit (event time).
    Absence,
    /// A value of `field` not seen for the key within `history` (after a learning period).
    NewValue,
    /// Volume in the current hour at least `ratio` times the key's normal level for that hour.
    Baseline,
    /// A gauge (`field`, e.g. pending transactions) rising over its last `points`
    /// readings within `window` and ending at or above `above`.
    Trend,
}

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

/// The compiled parameters of a `baseline` rule (a state or system may override some, see
/// [`crate::policy::BaselineOverride`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Column summed per hour (`None`: count events).
    pub measure: Option<usize>,
    /// Observed / baseline ratio that fires (the seeds' "2x normal volume").
    pub ratio: f64,
    /// Past days of the same hour kept as samples.
    pub history_days: usize,
    /// Samples needed before the key is judged.
    pub min_samples: usize,
    /// Smallest hourly volume worth an alert.
    pub min_volume: f64,
    /// Least normal level an hour is held against, as a share of the key's typical busiest
    /// hour (the median of its daily peaks): quiet hours of a large site swing by hundreds
    /// without meaning anything, and an hour a key is usually silent in has no normal of
    /// its own. Scales with the key, where an absolute floor suits one size of site only.
    pub floor_of_peak: f64,
    /// How many robust standard deviations (1.4826 x MAD) above the median
    /// the hour must also be, so that naturally noisy keys stay quiet.
    pub min_deviation: f64,
}

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

/// Raise a finding's severity where a policy flag holds for its state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateConfig {
    /// A boolean policy value, e.g. `mfa_required`.
    pub policy: String,
    /// The severity where it is true.
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

/// The join of a `reference` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// The reference table; only `roster` today.
    pub table: String,
    /// The event column holding the roster's `user`.
    #[serde(default = "default_reference_column")]
    pub column: String,
    /// When a joined event fires; only `terminated` (at or after `terminated_at`) today.
    pub condition: String,
}

fn default_reference_column() -> String {
    "user".into()
}

/// A per-row check applied after the SQL filter, for rules that need reference data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCondition {
    /// Nothing beyond the filter.
    None,
    /// The event's local time is outside its location's business hours.
    OutsideHours,
    /// The user in this column was terminated at or before the event.
    TerminatedUser {
        /// Column index of the user.
        column: usize,
    },
}

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

/// A rule as written in YAML. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Stable id, `<family>.<name>` (part of the interface: alerts and SQL use it).
    pub id: String,
    /// One-line human title.
    pub title: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: Severity,
    /// The family whose events the rule reads.
    pub family: String,
    /// `match` or `threshold`.
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    /// SQL boolean expression over the family's columns; `true` when omitted.
    #[serde(default)]
    pub filter: Option<String>,
    /// Columns that form the group key (`license` is always added).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Column naming what the finding is about; defaults to the last `group_by` column.
    /// Where it is empty in an event (an admin acting on their own account), the actor is.
    #[serde(default)]
    pub subject: Option<String>,
    /// Column naming who acted; defaults to `actor` for audit rules and `user` for login
    /// and API rules (sync events name no one).
    #[serde(default)]
    pub actor: Option<String>,
    /// Events (or distinct values) needed inside `window` (threshold rules).
    #[serde(default)]
    pub threshold: Option<ThresholdConfig>,
    /// Sliding event-time window (threshold rules), e.g. `1h`.
    #[serde(default)]
    pub window: Option<String>,
    /// Count distinct values of this column instead of events.
    #[serde(default)]
    pub distinct: Option<String>,
    /// How long repeats update the same finding; defaults to the window, or 1h.
    #[serde(default)]
    pub suppress: Option<String>,
    /// Free-form labels (seed sections, tactics).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Exceptions to this rule alone (as in `exceptions.yaml`, without `rules`).
    #[serde(default)]
    pub except: Vec<crate::exception::ExceptionConfig>,
    /// Longer explanation for analysts.
    #[serde(default)]
    pub description: Option<String>,
    /// The join of a `reference` rule.
    #[serde(default)]
    pub reference: Option<ReferenceConfig>,
    /// Absence rules: the limit, fixed or from policy.
    #[serde(default)]
    pub limit: Option<LimitConfig>,
    /// Absence rules: a floor under the limit.
    #[serde(default)]
    pub minimum: Option<String>,
    /// Absence rules: SQL filter of events that end tracking of their key (a revoked key).
    #[serde(default)]
    pub clear: Option<String>,
    /// Absence rules: severities by time elapsed.
    #[serde(default)]
    pub ladder: Vec<LadderStep>,
    /// Raise the severity where a policy flag holds.
    #[serde(default)]
    pub escalate: Option<EscalateConfig>,
    /// New-value rules: the column whose values are tracked; trend rules: the gauge column.
    #[serde(default)]
    pub field: Option<String>,
    /// Trend rules: the level the last reading must reach.
    #[serde(default)]
    pub above: Option<i64>,
    /// Trend rules: how many readings must rise (default 4).
    #[serde(default)]
    pub points: Option<usize>,
    /// Trend rules: how many of the last readings must be at or above `above` (default 2).
    #[serde(default)]
    pub sustained: Option<usize>,
    /// New-value rules: how long a value stays known (default 90d).
    #[serde(default)]
    pub history: Option<String>,
    /// New-value rules: quiet period after a key's first sighting (default 7d).
    #[serde(default)]
    pub learning: Option<String>,
    /// Baseline rules: the column summed per hour (omit to count events).
    #[serde(default)]
    pub measure: Option<String>,
    /// Baseline rules: ratio to the normal level that fires (default 2.0).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Baseline rules: days of the same hour kept as samples (default 28).
    #[serde(default)]
    pub history_days: Option<usize>,
    /// Baseline rules: samples needed before judging a key's hour (default 7).
    #[serde(default)]
    pub min_samples: Option<usize>,
    /// Baseline rules: smallest hourly volume that can fire (default 0).
    #[serde(default)]
    pub min_volume: Option<f64>,
    /// Baseline rules: least normal level, as a share of the key's typical busiest hour (default 0).
    #[serde(default)]
    pub floor_of_peak: Option<f64>,
    /// Baseline rules: robust deviations above normal also required (default 4).
    #[serde(default)]
    pub min_deviation: Option<f64>,
}

/// A rule ready to run: filter compiled, durations parsed, columns resolved.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Rule id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Severity of its findings.
    pub severity: Severity,
    /// Family it reads.
    pub family: Family,
    /// Match or threshold.
    pub rule_type: RuleType,
    /// The filter, compiled against the family schema.
    pub filter: Arc<dyn PhysicalExpr>,
    /// The filter's SQL text, for warm-up queries and for display.
    pub filter_sql: String,
    /// Exceptions: rows passing the filter that one of these holds for are dropped (and counted).
    pub exceptions: Vec<CompiledException>,
    /// Group key column indices (license first).
    pub group_by: Vec<usize>,
    /// Subject column index.
    pub subject: usize,
    /// Actor column index, when the family's events name who acted.
    pub actor: Option<usize>,
    /// Threshold per system (`None` key: all systems).
    pub threshold: ThresholdConfig,
    /// Window length in ms (0 for match rules).
    pub window_ms: i64,
    /// Distinct-count column index.
    pub distinct: Option<usize>,
    /// Suppression window in ms.
    pub suppress_ms: i64,
    /// Labels.
    pub tags: Vec<String>,
    /// Check against reference data after the filter.
    pub condition: RowCondition,
    /// Absence parameters (absence rules only).
    pub absence: Option<Absence>,
    /// New-value parameters (new_value rules only).
    pub new_value: Option<NewValue>,
    /// Baseline parameters (baseline rules only).
    pub baseline: Option<Baseline>,
    /// Trend parameters (trend rules only).
    pub trend: Option<Trend>,
    /// (policy flag, severity) escalation.
    pub escalate: Option<(String, Severity)>,
    /// Where the rule came from.
    pub file: PathBuf,
}

impl CompiledRule {
    /// SQL of the events the rule evaluates: its filter, less its exceptions.
    pub fn evaluated_sql(&self) -> String {
        if self.exceptions.is_empty() {
            return self.filter_sql.clone();
        }
        let except: Vec<String> = self.exceptions.iter().map(|e| format!("({})", e.sql)).collect();
        format!("({}) AND NOT COALESCE({}, false)", self.filter_sql, except.join(" OR "))
    }

    /// Events (or distinct values) needed for `system`; `None` means the rule never fires there.
    pub fn threshold_for(&self, system: &str, policy: &crate::policy::Policy) -> Option<u32> {
        match &self.threshold {
            ThresholdConfig::All(n) => Some(*n),
            ThresholdConfig::Policy { policy: name } => policy.system_number(name, system),
            ThresholdConfig::PerSystem(m) => m.get(system).copied(),
        }
    }
}

/// The 1-based line on which `key:` first appears in a YAML text (0 if absent).
fn line_of(text: &str, key: &str) -> usize {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| l.trim_start().trim_start_matches("- ").starts_with(&needle))
        .map_or(0, |i| i + 1)
}

/// Compile a SQL boolean expression over a family's columns.
fn compile_filter(ctx: &SessionContext, schema: &datafusion::arrow::datatypes::SchemaRef, sql: &str) -> Result<Arc<dyn PhysicalExpr>, String> {
    let flat = |e: datafusion::error::DataFusionError| e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(flat)?;
    let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(flat)?;
    let data_type = expr.get_type(&df_schema).map_err(flat)?;
    if data_type != DataType::Boolean {
        return Err(format!("must be a boolean expression, this one is {data_type}"));
    }
    ctx.create_physical_expr(expr, &df_schema).map_err(flat)
}

/// Parse and compile one rule file's text.
pub fn compile_rule(file: &Path, text: &str, ctx: &SessionContext) -> Result<CompiledRule, DetectError> {
    let name = file.display().to_string();
    let err = |key: &str, message: String| DetectError::Config { file: name.clone(), line: line_of(text, key), message };
    let config: RuleConfig = serde_yaml::from_str(text).map_err(|e| DetectError::Config {
        file: name.clone(),
        line: e.location().map_or(0, |l| l.line()),
        message: e.to_string(),
    })?;
    let family: Family = config
        .family
        .parse()
        .map_err(|_| err("family", format!("field `family`: unknown family `{}` (expected login, api, sync or audit)", config.family)))?;
    if !config.id.starts_with(&format!("{}.", family.as_str())) {
        return Err(err("id", format!("field `id`: `{}` must start with `{}.`", config.id, family.as_str())));
    }
    let schema = event_schema(family);
    let column = |key: &str, col: &str| {
        schema
            .index_of(col)
            .map_err(|_| err(key, format!("field `{key}`: `{col}` is not a column of the {family} table")))
    };

    let mut group_by = vec![column("group_by", "license")?];
    for col in &config.group_by {
        let i = column("group_by", col)?;
        if !group_by.contains(&i) {
            group_by.push(i);
        }
    }
    let subject = match &config.subject {
        Some(col) => column("subject", col)?,
        None => *group_by.last().unwrap_or(&0),
    };
    let actor = match (&config.actor, family) {
        (Some(col), _) => Some(column("actor", col)?),
        (None, Family::Audit) => schema.index_of("actor").ok(),
        (None, Family::Login | Family::Api) => schema.index_of("user").ok(),
        (None, Family::Sync) => None,
    };
    let distinct = config.distinct.as_deref().map(|c| column("distinct", c)).transpose()?;
    let duration = |key: &str, value: &Option<String>| {
        value.as_deref().map(parse_duration_ms).transpose().map_err(|m| err(key, format!("field `{key}`: {m}")))
    };
    let window = duration("window", &config.window)?;
    let suppress = duration("suppress", &config.suppress)?;
    if config.reference.is_some() != (config.rule_type == RuleType::Reference) {
        return Err(err("reference", "field `reference` goes with `type: reference`, and only there".into()));
    }
    let mut condition = RowCondition::None;
    let mut absence = None;
    let mut new_value = None;
    let mut baseline = None;
    if config.rule_type != RuleType::Baseline
        && (config.measure.is_some() || config.ratio.is_some() || config.history_days.is_some() || config.min_samples.is_some() || config.min_volume.is_some() || config.min_deviation.is_some() || config.floor_of_peak.is_some())
    {
        return Err(err("measure", "fields `measure`, `ratio`, `history_days`, `min_samples`, `min_volume`, `floor_of_peak` and `min_deviation` go with `type: baseline`".into()));
    }
    if config.rule_type != RuleType::NewValue && (config.history.is_some() || config.learning.is_some()) {
        return Err(err("history", "fields `history` and `learning` go with `type: new_value`".into()));
    }
    if !matches!(config.rule_type, RuleType::NewValue | RuleType::Trend) && config.field.is_some() {
        return Err(err("field", "field `field` goes with `type: new_value` or `type: trend`".into()));
    }
    if config.rule_type != RuleType::Trend && (config.above.is_some() || config.points.is_some() || config.sustained.is_some()) {
        return Err(err("above", "fields `above`, `points` and `sustained` go with `type: trend`".into()));
    }
    let mut trend = None;
    if config.rule_type != RuleType::Absence && (config.limit.is_some() || config.minimum.is_some() || !config.ladder.is_empty() || config.clear.is_some()) {
        return Err(err("limit", "fields `limit`, `minimum`, `ladder` and `clear` go with `type: absence`".into()));
    }
    let escalate = match &config.escalate {
        Some(e) if !crate::policy::FLAG_NAMES.contains(&e.policy.as_str()) => {
            return Err(err("escalate", format!("field `escalate`: unknown policy flag `{}` (known: {})", e.policy, crate::policy::FLAG_NAMES.join(", "))));
        }
        Some(e) => Some((e.policy.clone(), e.severity)),
        None => None,
    };
    if config.rule_type != RuleType::Threshold && (config.threshold.is_some() || config.distinct.is_some()) {
        return Err(err("type", "only `threshold` rules take `threshold` or `distinct`".into()));
    }
    if !matches!(config.rule_type, RuleType::Threshold | RuleType::Trend) && config.window.is_some() {
        return Err(err("window", "field `window` goes with `type: threshold` or `type: trend`".into()));
    }
    let (threshold, window_ms) = match config.rule_type {
        RuleType::Baseline => {
            let measure = config.measure.as_deref().map(|m| column("measure", m)).transpose()?;
            if let Some(m) = measure {
                if schema.field(m).data_type() != &DataType::Int64 {
                    return Err(err("measure", "field `measure`: must be an integer column (records, bytes, ...)".into()));
                }
            }
            let ratio = config.ratio.unwrap_or(2.0);
            if !(ratio > 1.0) {
                return Err(err("ratio", "field `ratio`: must be greater than 1".into()));
            }
            baseline = Some(Baseline {
                measure,
                ratio,
                history_days: config.history_days.unwrap_or(28).max(1),
                min_samples: config.min_samples.unwrap_or(7).max(1),
                min_volume: config.min_volume.unwrap_or(0.0),
                floor_of_peak: match config.floor_of_peak {
                    Some(share) if !(0.0..=1.0).contains(&share) => return Err(err("floor_of_peak", "field `floor_of_peak`: must be between 0 and 1".into())),
                    share => share.unwrap_or(0.0),
                },
                min_deviation: config.min_deviation.unwrap_or(4.0),
            });
            (ThresholdConfig::All(1), 0)
        }
        RuleType::NewValue => {
            let field = config.field.as_deref().ok_or_else(|| err("type", "a `new_value` rule needs field `field`".into()))?;
            new_value = Some(NewValue {
                field: column("field", field)?,
                history_ms: duration("history", &config.history)?.unwrap_or(90 * 86_400_000),
                learning_ms: duration("learning", &config.learning)?.unwrap_or(7 * 86_400_000),
            });
            (ThresholdConfig::All(1), 0)
        }
        RuleType::Match | RuleType::Schedule | RuleType::Reference => {
            if config.rule_type == RuleType::Schedule {
                condition = RowCondition::OutsideHours;
            }
            if let Some(reference) = &config.reference {
                if reference.table != "roster" || reference.condition != "terminated" {
                    return Err(err("reference", "field `reference`: supported is `table: roster` with `condition: terminated`".into()));
                }
                condition = RowCondition::TerminatedUser { column: column("reference", &reference.column)? };
            }
            (ThresholdConfig::All(1), 0)
        }
        RuleType::Absence => {
            let limit = match &config.limit {
                None => return Err(err("type", "an `absence` rule needs field `limit` (a duration or `{policy: sync_limit}`)".into())),
                Some(LimitConfig::Fixed(text)) => Limit::Fixed(parse_duration_ms(text).map_err(|m| err("limit", format!("field `limit`: {m}")))?),
                Some(LimitConfig::Policy { policy }) => {
                    if !crate::policy::NUMERIC_NAMES.contains(&policy.as_str()) {
                        return Err(err("limit", format!("field `limit`: unknown policy value `{policy}` (known: {})", crate::policy::NUMERIC_NAMES.join(", "))));
                    }
                    Limit::Policy(policy.clone())
                }
            };
            let minimum_ms = duration("minimum", &config.minimum)?.unwrap_or(0);
            let mut ladder = Vec::new();
            for step in &config.ladder {
                let after = parse_duration_ms(&step.after).map_err(|m| err("ladder", format!("field `ladder`: {m}")))?;
                ladder.push((after, step.severity));
            }
            if ladder.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(err("ladder", "field `ladder`: steps must be in increasing `after` order".into()));
            }
            let clear = match &config.clear {
                Some(sql) => Some(compile_filter(ctx, &schema, sql).map_err(|m| err("clear", format!("field `clear`: {m}")))?),
                None => None,
            };
            absence = Some(Absence { limit, minimum_ms, ladder, clear, clear_sql: config.clear.clone() });
            (ThresholdConfig::All(1), 0)
        }
        RuleType::Trend => {
            let field = config.field.as_deref().ok_or_else(|| err("type", "a `trend` rule needs field `field` (an integer column such as `pending`)".into()))?;
            let field = column("field", field)?;
            if schema.field(field).data_type() != &DataType::Int64 {
                return Err(err("field", "field `field`: a trend reads an integer column (pending, records, ...)".into()));
            }
            let above = config.above.ok_or_else(|| err("type", "a `trend` rule needs field `above`".into()))?;
            let points = config.points.unwrap_or(4);
            if points < 2 {
                return Err(err("points", "field `points`: a trend needs at least 2 readings".into()));
            }
            let sustained = config.sustained.unwrap_or(2);
            if sustained == 0 || sustained > points {
                return Err(err("sustained", format!("field `sustained`: must be between 1 and `points` ({points})")));
            }
            let window = window.filter(|w| *w > 0).ok_or_else(|| err("type", "a `trend` rule needs a positive `window`".into()))?;
            trend = Some(Trend { field, above, points, sustained });
            (ThresholdConfig::All(1), window)
        }
        RuleType::Threshold => {
            let threshold = config.threshold.clone().ok_or_else(|| err("type", "a `threshold` rule needs field `threshold`".into()))?;
            let window = window.ok_or_else(|| err("type", "a `threshold` rule needs field `window`".into()))?;
            let bad = match &threshold {
                ThresholdConfig::All(n) => *n == 0,
                ThresholdConfig::Policy { policy } => !crate::policy::SYSTEM_NUMBER_NAMES.contains(&policy.as_str()),
                ThresholdConfig::PerSystem(m) => m.is_empty() || m.values().any(|n| *n == 0) || m.keys().any(|k| !seedwatch_schemas::SYSTEMS.contains(&k.as_str())),
            };
            if bad || window <= 0 {
                return Err(err("threshold", "field `threshold`: must be a positive number, positive numbers per system (metrc, biotrack), or `{policy: failed_api_per_hour}`, with a positive `window`".into()));
            }
            (threshold, window)
        }
    };

    let sql = config.filter.clone().unwrap_or_else(|| "true".into());
    // DataFusion messages can span lines; compile_filter flattens them, as a configuration error is one line.
    let filter = compile_filter(ctx, &schema, &sql).map_err(|m| err("filter", format!("field `filter`: {m}")))?;

    let mut rule = CompiledRule {
        id: config.id,
        title: config.title,
        severity: config.severity,
        family,
        rule_type: config.rule_type,
        filter,
        filter_sql: sql,
        exceptions: Vec::new(),
        group_by,
        subject,
        actor,
        threshold,
        window_ms,
        distinct,
        suppress_ms: suppress.or(window.filter(|w| *w > 0)).unwrap_or(3_600_000),
        tags: config.tags,
        condition,
        absence,
        new_value,
        baseline,
        trend,
        escalate,
        file: file.to_path_buf(),
    };
    for except in &config.except {
        let line = crate::exception::id_line(text, &except.id);
        if !except.rules.is_empty() {
            return Err(DetectError::Config { file: name.clone(), line, message: format!("field `except`: exception `{}` is on this rule; `rules` goes in exceptions.yaml", except.id) });
        }
        attach_exception(&mut rule, except, &name, line, true, ctx)?;
    }
    Ok(rule)
}

/// Compile `config` for `rule` and add it; `Ok(false)` when it does not apply (a pattern
/// matched an absence rule, or a family without one of its columns). Where the rule was
/// `named`, that is an error instead.
fn attach_exception(rule: &mut CompiledRule, config: &crate::exception::ExceptionConfig, file: &str, line: usize, named: bool, ctx: &SessionContext) -> Result<bool, DetectError> {
    let err = |message: String| DetectError::Config { file: file.to_string(), line, message };
    if rule.absence.is_some() {
        // Excepting the events that prove a key alive would raise silences, not quiet them.
        return if named { Err(err(format!("exception `{}`: `{}` is an absence rule; exceptions apply to the events a rule fires on (tune its limit or ladder instead)", config.id, rule.id))) } else { Ok(false) };
    }
    let schema = event_schema(rule.family);
    let actor = rule.actor.map(|i| schema.field(i).name().as_str());
    let sql = match crate::exception::predicate_sql(config, |c| schema.index_of(c).is_ok(), actor) {
        Ok(Some(sql)) => sql,
        Ok(None) if named => return Err(err(format!("exception `{}`: the {} table of rule `{}` lacks a column it names", config.id, rule.family, rule.id))),
        Ok(None) => return Ok(false),
        Err((field, message)) => return Err(err(format!("field `{field}` of exception `{}`: {message}", config.id))),
    };
    let predicate = compile_filter(ctx, &schema, &sql).map_err(|m| err(format!("field `where` of exception `{}`: {m}", config.id)))?;
    let expires_ms = crate::exception::parse_end(&config.expires).unwrap_or(i64::MAX);
    rule.exceptions.push(CompiledException {
        id: config.id.as_str().into(),
        origin: format!("{file}:{line}"),
        reason: config.reason.clone(),
        owner: config.owner.clone(),
        expires_ms,
        sql,
        predicate,
    });
    Ok(true)
}

/// A session that knows seedwatch's SQL functions, for compiling filters.
pub fn rule_context() -> SessionContext {
    let ctx = SessionContext::new();
    seedwatch_schemas::sql_functions::register(&ctx);
    ctx
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DetectError> {
    let io = |e: std::io::Error| DetectError::Config { file: dir.display().to_string(), line: 0, message: e.to_string() };
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.file_stem().is_some_and(|s| s == "policy" || s == "exceptions") {
            // The policy table and the exceptions live beside the rules but are not rules.
            continue;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
    Ok(())
}

/// Load and compile every `*.yaml` rule under `dir` (recursively), sorted by id.
pub fn load_rules(dir: &Path) -> Result<Vec<CompiledRule>, DetectError> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    if files.is_empty() {
        return Err(DetectError::Config { file: dir.display().to_string(), line: 0, message: "no rule files (*.yaml) found".into() });
    }
    let ctx = rule_context();
    let mut rules = Vec::with_capacity(files.len());
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| DetectError::Config { file: file.display().to_string(), line: 0, message: e.to_string() })?;
        let rule = compile_rule(&file, &text, &ctx)?;
        if let Some(other) = seen.insert(rule.id.clone(), file.clone()) {
            return Err(DetectError::Config {
                file: file.display().to_string(),
                line: line_of(&text, "id"),
                message: format!("field `id`: `{}` is already defined in {}", rule.id, other.display()),
            });
        }
        rules.push(rule);
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    let exceptions = dir.join("exceptions.yaml");
    if exceptions.is_file() {
        attach_exceptions_file(&exceptions, &mut rules, &ctx)?;
    }
    Ok(rules)
}

/// Attach each exception of `exceptions.yaml` to the rules its `rules` patterns cover.
fn attach_exceptions_file(path: &Path, rules: &mut [CompiledRule], ctx: &SessionContext) -> Result<(), DetectError> {
    let file = path.display().to_string();
    let configs = crate::exception::load_file(path).map_err(|(line, message)| DetectError::Config { file: file.clone(), line, message })?;
    for (config, line) in configs {
        let mut applied = 0;
        for pattern in &config.rules {
            let named = !pattern.ends_with('*');
            let mut covered = 0;
            for rule in rules.iter_mut().filter(|r| crate::exception::covers(pattern, &r.id)) {
                covered += 1;
                if rule.exceptions.iter().any(|e| *e.id == *config.id) {
                    continue;
                }
                applied += usize::from(attach_exception(rule, &config, &file, line, named, ctx)?);
            }
            if covered == 0 {
                return Err(DetectError::Config { file, line, message: format!("field `rules` of exception `{}`: `{pattern}` matches no rule", config.id) });
            }
        }
        if applied == 0 {
            return Err(DetectError::Config { file, line, message: format!("exception `{}` applies to none of its rules (their tables lack a column it names)", config.id) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<CompiledRule, String> {
        compile_rule(Path::new("r.yaml"), text, &rule_context()).map_err(|e| e.to_string())
    }

    const GOOD: &str = "id: login.failed_burst\ntitle: t\nseverity: high\nfamily: login\ntype: threshold\nfilter: \"outcome = 'failure'\"\ngroup_by: [user]\nthreshold: 3\nwindow: 1h\n";

    #[test]
    fn compiles_a_threshold_rule_with_license_in_the_key() {
        let rule = compile(GOOD).unwrap_or_else(|e| panic!("{e}"));
        let schema = event_schema(Family::Login);
        let names: Vec<&str> = rule.group_by.iter().map(|i| schema.field(*i).name().as_str()).collect();
        assert_eq!(names, ["license", "user"]);
        let p = crate::policy::Policy::default();
        assert_eq!((rule.window_ms, rule.suppress_ms, rule.threshold_for("metrc", &p)), (3_600_000, 3_600_000, Some(3)));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let cases = [
            (GOOD.replace("window: 1h", "window: 1h\nwindwo: 2h"), "r.yaml:10", "windwo"),
            (GOOD.replace("outcome = 'failure'", "outcome = = 'failure'"), "r.yaml:6", "filter"),
            (GOOD.replace("outcome = 'failure'", "no_such_column = 1"), "r.yaml:6", "filter"),
            (GOOD.replace("outcome = 'failure'", "status"), "r.yaml:6", "filter"),
            (GOOD.replace("group_by: [user]", "group_by: [usr]"), "r.yaml:7", "group_by"),
            (GOOD.replace("window: 1h", "window: soon"), "r.yaml:9", "window"),
            (GOOD.replace("severity: high", "severity: scary"), "r.yaml:3", "severity"),
            (GOOD.replace("threshold: 3", "threshold: 0"), "r.yaml:8", "threshold"),
            (GOOD.replace("id: login.", "id: api."), "r.yaml:1", "id"),
        ];
        for (text, location, field) in cases {
            let e = compile(&text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(e.starts_with(location) && e.contains(field), "{e}");
        }
    }

    #[test]
    fn trend_rules_need_an_integer_gauge_a_level_and_a_window() {
        let good = "id: sync.backlog\ntitle: t\nseverity: high\nfamily: sync\ntype: trend\nfield: pending\nabove: 40\npoints: 4\nwindow: 3h\n";
        let rule = compile(good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rule.trend.map(|t| (t.above, t.points)), rule.window_ms), (Some((40, 4)), 3 * 3_600_000));
        let cases = [
            (good.replace("field: pending\n", ""), "r.yaml:5", "field"),
            (good.replace("field: pending", "field: integration"), "r.yaml:6", "integer"),
            (good.replace("above: 40\n", ""), "r.yaml:5", "above"),
            (good.replace("points: 4", "points: 1"), "r.yaml:8", "points"),
            (good.replace("points: 4", "points: 4\nsustained: 5"), "r.yaml:9", "sustained"),
            (good.replace("window: 3h\n", ""), "r.yaml:5", "window"),
            (good.replace("type: trend", "type: match"), "r.yaml:6", "field"),
        ];
        for (text, location, word) in cases {
            let e = compile(&text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(e.starts_with(location) && e.contains(word), "{e}");
        }
    }

    #[test]
    fn per_system_thresholds_and_exceptions() {
        let text = GOOD.replace("threshold: 3", "threshold: {metrc: 10, biotrack: 5}")
            + "except:\n  - id: svc\n    reason: the sync robot\n    owner: it\n    expires: 2027-01-01\n    users: [\"svc-o'brien\"]\n";
        let rule = compile(&text).unwrap_or_else(|e| panic!("{e}"));
        let p = crate::policy::Policy::default();
        assert_eq!((rule.threshold_for("metrc", &p), rule.threshold_for("biotrack", &p), rule.threshold_for("x", &p)), (Some(10), Some(5), None));
        assert!(rule.exceptions[0].sql.contains("user IN ('svc-o''brien')"), "{}", rule.exceptions[0].sql);
        assert!(rule.evaluated_sql().contains("AND NOT COALESCE("), "{}", rule.evaluated_sql());
        let e = compile(&text.replace("    users:", "    rules: ['*']\n    users:")).err().unwrap_or_default();
        assert!(e.starts_with("r.yaml:11") && e.contains("`rules` goes in exceptions.yaml"), "{e}");
        let e = compile(&text.replace("    users:", "    keys: [k]\n    users:")).err().unwrap_or_default();
        assert!(e.starts_with("r.yaml:11") && e.contains("lacks a column"), "{e}");
    }
}
