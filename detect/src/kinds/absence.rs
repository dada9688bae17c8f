//! `absence`: nothing passing the filter for a key for longer than a limit (event time),
//! escalating along a ladder: the manual's 5.3 (1 h: IT, 4 h: the regulator) is one
//! finding rising in severity. The module holds the kind whole: its fields and their
//! compile step, its per-key state ([`Silences`]) and its warm-up query ([`warm_up_query`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;
use foldhash::HashMap;
use seedwatch_schemas::arrow_schema::event_schema;
use seedwatch_schemas::finding::MAX_EVIDENCE;
use seedwatch_schemas::{Finding, Severity, Status};
use serde::Deserialize;
use serde_json::json;

use super::{Context, KindConfig, KindParts};
use crate::duration::parse_duration_ms;
use crate::engine::{new_finding, string_col, with_detail, Columns, Place, Tracked};
use crate::reference::Reference;
use crate::rule::CompiledRule;
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

/// One key's last matching event, where it belongs, and its open silence.
#[derive(Debug)]
struct AbsentKey {
    last_ok: i64,
    last_event_id: Box<str>,
    system: Box<str>,
    state: Box<str>,
    license: Box<str>,
    location: Box<str>,
    subject: Box<str>,
    open: Option<Box<Tracked>>,
}

/// An absence rule's state: the last matching event per key, and each license's newest
/// event in the rule's family.
#[derive(Debug, Default)]
pub(crate) struct Silences {
    keys: HashMap<Box<[u8]>, AbsentKey>,
    /// The newest event of the rule's family per license, whatever its outcome. A silence is
    /// published once this has moved past the limit (the license's syncs keep coming and none
    /// succeeds). Other families' time is not enough: read from another topic, a delayed
    /// collector's logins may run hours ahead of its syncs.
    family_time: HashMap<Box<str>, i64>,
    /// Findings opened against other licenses' time and disproved by the key's own events.
    retracted: u64,
}

impl Silences {
    /// Keys tracked.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Past `max_keys_per_rule` keys, forget those silent longest without an open finding
    /// down to `keep`. Returns keys forgotten.
    pub(crate) fn bound_keys(&mut self, limits: &crate::limits::StateLimits, keep: usize) -> u64 {
        if self.keys.len() <= limits.max_keys_per_rule {
            return 0;
        }
        crate::limits::evict_idle(&mut self.keys, keep, |k| k.open.is_none().then_some(k.last_ok))
    }

    /// Forget keys and licenses with no event for `idle_ms` before `newest`, open finding or
    /// not: a key silent that long has been reported for most of it (its finding stays as
    /// last published), and a key a sender made up once (a random `integration`) would
    /// otherwise be tracked, and alerted on, for ever.
    pub(crate) fn sweep(&mut self, newest: i64, idle_ms: i64) {
        let horizon = newest.saturating_sub(idle_ms);
        self.keys.retain(|_, k| k.last_ok >= horizon);
        self.family_time.retain(|_, t| *t >= horizon);
    }

    /// Findings withdrawn so far (see [`Silences::saw_ok`]).
    pub(crate) fn retracted(&self) -> u64 {
        self.retracted
    }

    /// The open findings.
    pub(crate) fn open(&self) -> impl Iterator<Item = &Tracked> {
        self.keys.values().filter_map(|k| k.open.as_deref())
    }

    /// The open findings, to publish or continue.
    pub(crate) fn open_mut(&mut self) -> impl Iterator<Item = &mut Tracked> {
        self.keys.values_mut().filter_map(|k| k.open.as_deref_mut())
    }

    /// Take every open finding (end of input).
    pub(crate) fn take_open(&mut self) -> impl Iterator<Item = Box<Tracked>> + '_ {
        self.keys.values_mut().filter_map(|k| k.open.take())
    }

    /// Raise each license's newest time in the rule's family, from every row of `batch`
    /// (matching or not).
    pub(crate) fn observe_family_time(&mut self, batch: &RecordBatch) {
        let (Ok(license), Some(time)) = (string_col(batch, "license"), batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())) else { return };
        // Batches hold runs of one license: one lookup per run.
        let mut run: Option<(&str, i64)> = None;
        for row in 0..batch.num_rows() {
            let name = if license.is_null(row) { "" } else { license.value(row) };
            let t = time.value(row);
            match &mut run {
                Some((n, newest)) if *n == name => *newest = (*newest).max(t),
                _ => {
                    if let Some((n, newest)) = run.replace((name, t)) {
                        raise_time(&mut self.family_time, n, newest);
                    }
                }
            }
        }
        if let Some((n, newest)) = run {
            raise_time(&mut self.family_time, n, newest);
        }
    }

    /// Events passing the rule's `clear` stop tracking their key; an open finding closes.
    pub(crate) fn clear(&mut self, clear: &Arc<dyn PhysicalExpr>, rule: &CompiledRule, converter: &RowConverter, batch: &RecordBatch, now: i64, out: &mut Vec<Finding>) -> Result<(), String> {
        let mask = clear.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| e.to_string())?;
        let mask = mask.as_boolean_opt().ok_or("clear did not return booleans")?;
        if mask.true_count() == 0 {
            return Ok(());
        }
        let cleared = filter_record_batch(batch, mask).map_err(|e| e.to_string())?;
        let keys = converter.convert_columns(&rule.group_by.iter().map(|c| cleared.column(*c).clone()).collect::<Vec<_>>()).map_err(|e| e.to_string())?;
        for i in 0..cleared.num_rows() {
            if let Some(mut k) = self.keys.remove(keys.row(i).as_ref()) {
                if let Some(mut t) = k.open.take() {
                    t.finding.details = details(&t.finding, t.finding.window_end, true);
                    t.finding.status = Status::Resolved;
                    t.publish(now, out);
                }
            }
        }
        Ok(())
    }

    /// A matching event resets its key and resolves an open finding. A gap between two
    /// matching events longer than the limit is a finding even when no watermark check fell
    /// inside it (both ends in one batch).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn saw_ok(&mut self, rule: &CompiledRule, key: &[u8], row: usize, cols: &Columns<'_>, reference: &Reference, now: i64, out: &mut Vec<Finding>) {
        let t = cols.time.value(row);
        let event_id = cols.event_id.value(row);
        if let Some(k) = self.keys.get_mut(key) {
            if t <= k.last_ok {
                return;
            }
            let gap = severity(rule, &k.state, t - k.last_ok, reference);
            if let (None, Some(due)) = (&k.open, gap) {
                k.open = Some(Tracked::new(finding(rule, key, k, due, t, now)));
            }
            if let Some(mut open) = k.open.take() {
                let f = &mut open.finding;
                // The silence as the key's own events show it. None: the key was judged silent
                // against other licenses' newer time while its own events were still on their
                // way (a delayed collector's backlog); they show no gap, so there was no outage.
                if let Some(due) = gap {
                    f.severity = due;
                    f.window_end = t;
                    if f.evidence.len() < MAX_EVIDENCE {
                        f.evidence.push(event_id.to_string());
                    }
                    f.details = details(f, t, true);
                    f.status = Status::Resolved;
                    open.publish(now, out);
                } else {
                    self.retracted += 1;
                    if open.published.is_some() {
                        // Already shown: withdrawn in a version of its own.
                        f.details = with_detail(&f.details, "withdrawn", json!("the key's own delayed events show no gap"));
                        f.status = Status::Resolved;
                        open.publish(now, out);
                    }
                }
            }
            k.last_ok = t;
            k.last_event_id = Box::from(event_id);
            return;
        }
        let s = |c: &StringArray| Box::<str>::from(if c.is_null(row) { "" } else { c.value(row) });
        let subject = Box::from(Place::of_row(cols, row).0[4]);
        let k = AbsentKey { last_ok: t, last_event_id: Box::from(event_id), system: s(cols.system), state: s(cols.state), license: s(cols.license), location: s(cols.location), subject, open: None };
        self.keys.insert(Box::from(key), k);
    }

    /// Open or escalate findings for keys silent past their limit at `watermark`. A finding
    /// is published (opened, escalated up the ladder) once its license's own events of the
    /// rule's family show the silence too (`family_time`): judged against other licenses or
    /// other families alone, a delayed collector's location would look silent, and its events
    /// would withdraw the alert. A location silent in every way is published when it is over,
    /// at the end of input, or by an idle detector (`publish_open`). Returns findings opened.
    pub(crate) fn check(&mut self, rule: &CompiledRule, watermark: i64, reference: &Reference, now: i64, out: &mut Vec<Finding>) -> u64 {
        let mut opened = 0;
        for (key, k) in &mut self.keys {
            let Some(due) = severity(rule, &k.state, watermark.saturating_sub(k.last_ok), reference) else { continue };
            match &mut k.open {
                Some(t) => {
                    let f = &mut t.finding;
                    f.severity = f.severity.max(due);
                    f.window_end = watermark;
                    f.details = details(f, watermark, false);
                }
                None => {
                    k.open = Some(Tracked::new(finding(rule, key, k, due, watermark, now)));
                    opened += 1;
                }
            }
            let own_time = self.family_time.get(&*k.license).copied().unwrap_or(i64::MIN);
            if let Some(t) = k.open.as_deref_mut() {
                if severity(rule, &k.state, own_time.saturating_sub(k.last_ok), reference).is_some() {
                    t.publish(now, out);
                }
            }
        }
        opened
    }
}

/// Raise `license`'s newest time to `t`.
fn raise_time(times: &mut HashMap<Box<str>, i64>, license: &str, t: i64) {
    match times.get_mut(license) {
        Some(newest) => *newest = (*newest).max(t),
        None => {
            times.insert(Box::from(license), t);
        }
    }
}

/// The severity of `elapsed` ms of silence for a key in `state`, or `None` within the limit.
fn severity(rule: &CompiledRule, state: &str, elapsed: i64, reference: &Reference) -> Option<Severity> {
    let absence = rule.absence.as_ref()?;
    if elapsed <= limit_ms(rule, state, reference)? {
        return None;
    }
    Some(absence.ladder.iter().rev().find(|(after, _)| elapsed >= *after).map_or(rule.severity, |(_, s)| *s))
}

/// The silence an absence rule tolerates in `state`: its fixed limit or policy
/// value, never below its `minimum`. `None` for other rules or an unknown policy value.
pub(crate) fn limit_ms(rule: &CompiledRule, state: &str, reference: &Reference) -> Option<i64> {
    let absence = rule.absence.as_ref()?;
    let limit = match &absence.limit {
        Limit::Fixed(ms) => *ms,
        Limit::Policy(name) => reference.policy.numeric_ms(name, state)?,
    };
    Some(limit.max(absence.minimum_ms))
}

/// A new finding for a key silent since `k.last_ok`.
fn finding(rule: &CompiledRule, key: &[u8], k: &AbsentKey, severity: Severity, until: i64, now: i64) -> Finding {
    let place = Place([&k.system, &k.state, &k.license, &k.location, &k.subject, ""]);
    let mut f = new_finding(rule, key, severity, &place, (k.last_ok, until), 1, vec![k.last_event_id.to_string()], now);
    f.details = details(&f, until, false);
    f
}

/// `details` of an absence finding: how long the key has been silent.
fn details(f: &Finding, until: i64, resolved: bool) -> String {
    json!({ "last_ok": f.window_start, "silent_seconds": (until - f.window_start) / 1000, "resolved": resolved }).to_string()
}

/// The warm-up query: the newest event per key that the rule reacts to (its filter or its
/// `clear`), before `until`.
pub(crate) fn warm_up_query(rule: &CompiledRule, until: i64) -> String {
    let schema = event_schema(rule.family);
    let groups: Vec<String> = rule.group_by.iter().map(|i| format!("\"{}\"", schema.field(*i).name())).collect();
    let mut matches = format!("({})", rule.filter_sql);
    if let Some(clear) = rule.absence.as_ref().and_then(|a| a.clear_sql.as_ref()) {
        matches = format!("{matches} OR ({clear})");
    }
    let columns = crate::resume::quoted_columns(rule.family);
    format!(
        "SELECT {columns} FROM (SELECT {columns}, row_number() OVER (PARTITION BY {g} ORDER BY time DESC, event_id DESC) AS seedwatch_rank \
         FROM {table} WHERE {range} AND ({matches})) WHERE seedwatch_rank = 1 ORDER BY time",
        g = groups.join(", "),
        table = rule.family.as_str(),
        range = crate::resume::time_range(i64::MIN, until),
    )
}
