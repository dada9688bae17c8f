//! Resuming from history: the SQL that rebuilds a rule engine's state from
//! archived events, and the replay that feeds the rows back.
//!
//! A detector that restarts and `rules backfill` ask the same question: what
//! would the engine hold had it seen every archived event before `until`? Each
//! rule needs only a bounded tail of that history:
//! - windows (`threshold`, `trend`, and the suppression of every rule): the
//!   events of the last window plus suppression, replayed in time order;
//! - baselines: the events of the last `history_days` days, replayed;
//! - new values: first and last sighting per (key, value), aggregated in SQL,
//!   then the suppression tail replayed so open findings come back too;
//! - absences: the newest matching (or clearing) event per key.
//!
//! Findings produced while replaying are discarded: earlier runs archived
//! them, and the ones still open come out again later with the same ids, which
//! the archive deduplicates. The queries name the archive's tables (`login`,
//! `api`, `sync`, `audit`, as `seedwatch_archive::open_session` registers them)
//! and use the `date` partition column so only the needed days are read.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::TimestampMillisecondType;
use seedwatch_schemas::arrow_schema::event_schema;
use seedwatch_schemas::Family;

use crate::engine::RuleEngine;
use crate::rule::{CompiledRule, RuleType};
use crate::DetectError;

const DAY_MS: i64 = 86_400_000;

/// What the rows of a [`WarmupStep`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmupKind {
    /// (group key columns..., value, first_seen, last_seen) of a `new_value` rule.
    SeenValues,
    /// Events in the family's schema, in time order, replayed through the rules.
    Events,
}

/// One query of a warm-up plan and the rules its rows feed.
#[derive(Debug, Clone)]
pub struct WarmupStep {
    /// The family queried.
    pub family: Family,
    /// What the rows are.
    pub kind: WarmupKind,
    /// The rules fed, each with the earliest event time it needs.
    pub rules: Vec<(String, i64)>,
    /// The query, over the archive's tables.
    pub sql: String,
}

/// How far before `until` a rule's replayed events must start.
fn lookback_ms(rule: &CompiledRule) -> i64 {
    match rule.rule_type {
        // The hour being judged, plus `history_days` whole days of samples before it.
        RuleType::Baseline => rule.baseline.as_ref().map_or(0, |b| (b.history_days as i64 + 2) * DAY_MS),
        // Seen-sets come from SQL; only the suppression tail is replayed.
        RuleType::NewValue => rule.suppress_ms,
        // Absence rules are restored from the newest event per key instead.
        RuleType::Absence => 0,
        // A finding open at `until` started at most `suppress` earlier, and its
        // window at most `window` before that; one window more covers a window
        // that was already sliding when it opened.
        _ => rule.suppress_ms + 2 * rule.window_ms,
    }
}

pub(crate) fn quoted_columns(family: Family) -> String {
    event_schema(family).fields().iter().map(|f| format!("\"{}\"", f.name())).collect::<Vec<_>>().join(", ")
}

/// SQL literal for a millisecond timestamp, and the `date` partition it falls in.
fn bounds(ms: i64) -> (String, String) {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap_or_default();
    (format!("CAST({ms} AS TIMESTAMP(3))"), at.format("%Y-%m-%d").to_string())
}

/// SQL predicate: `time` in [since, until), with partition pruning on `date`.
pub fn time_range(since: i64, until: i64) -> String {
    let (from, from_day) = bounds(since);
    let (to, to_day) = bounds(until);
    let lower = if since == i64::MIN { String::new() } else { format!("\"date\" >= '{from_day}' AND time >= {from} AND ") };
    format!("{lower}\"date\" <= '{to_day}' AND time < {to}")
}

/// SQL for a family's archived events in [since, until), in time order, in the family's columns.
pub fn events_query(family: Family, since: i64, until: i64) -> String {
    format!("SELECT {} FROM {} WHERE {} ORDER BY time", quoted_columns(family), family.as_str(), time_range(since, until))
}

/// Reshape a query result to `family`'s event schema: SQL may return strings
/// as views, and the engine's column indices assume the exact schema.
pub fn conform(family: Family, batch: &RecordBatch) -> Result<RecordBatch, String> {
    let schema = event_schema(family);
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = batch.column_by_name(field.name()).ok_or_else(|| format!("replayed rows have no column `{}`", field.name()))?;
        columns.push(if column.data_type() == field.data_type() { column.clone() } else { cast(column, field.data_type()).map_err(|e| e.to_string())? });
    }
    RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())
}

impl RuleEngine {
    /// The queries that rebuild this engine's state as of `until` (exclusive),
    /// in the order their rows must be fed to [`RuleEngine::replay`].
    pub fn warmup_plan(&self, until: i64) -> Vec<WarmupStep> {
        let mut steps = Vec::new();
        // First what each key has seen and the newest event of each absence key,
        // then the recent events in time order, which extend both.
        for rule in self.rules().filter(|r| r.new_value.is_some()) {
            if let Some(sql) = crate::kinds::new_value::warm_up_query(rule, until - lookback_ms(rule)) {
                steps.push(WarmupStep { family: rule.family, kind: WarmupKind::SeenValues, rules: vec![(rule.id.clone(), i64::MIN)], sql });
            }
        }
        for rule in self.rules().filter(|r| r.absence.is_some()) {
            steps.push(WarmupStep { family: rule.family, kind: WarmupKind::Events, rules: vec![(rule.id.clone(), i64::MIN)], sql: crate::kinds::absence::warm_up_query(rule, until) });
        }
        for family in Family::ALL {
            let rules: Vec<(String, i64)> = self
                .rules()
                .filter(|r| r.family == family && r.absence.is_none())
                .map(|r| (r.id.clone(), until.saturating_sub(lookback_ms(r))))
                .collect();
            let Some(since) = rules.iter().map(|(_, s)| *s).min() else { continue };
            let sql = events_query(family, since, until);
            steps.push(WarmupStep { family, kind: WarmupKind::Events, rules, sql });
        }
        steps
    }

    /// Feed one result batch of `step` to its rules. Findings this produces are
    /// discarded (see the module docs). Returns the rows read.
    pub fn replay(&mut self, step: &WarmupStep, batch: &RecordBatch) -> Result<u64, DetectError> {
        if step.kind == WarmupKind::SeenValues {
            for (rule, _) in &step.rules {
                self.restore_seen(rule, batch)?;
            }
            return Ok(batch.num_rows() as u64);
        }
        let err = |message: String| DetectError::Evaluate { rule: "replay".into(), message };
        let batch = conform(step.family, batch).map_err(err)?;
        let time = batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()).ok_or_else(|| err("no time column".into()))?;
        let oldest = time.values().iter().copied().min().unwrap_or(i64::MAX);
        for (rule, since) in &step.rules {
            // One query serves every rule of the family; each takes its own tail.
            if oldest >= *since {
                self.replay_rule(rule, &batch)?;
            } else {
                let keep = BooleanArray::from_unary(time, |t| t >= *since);
                if keep.true_count() > 0 {
                    let tail = filter_record_batch(&batch, &keep).map_err(|e| err(e.to_string()))?;
                    self.replay_rule(rule, &tail)?;
                }
            }
        }
        Ok(batch.num_rows() as u64)
    }
}
