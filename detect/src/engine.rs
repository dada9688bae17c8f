//! The rule engine: filters on whole batches, per-key windows on the rows that pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::kernels::boolean::{and, and_not};
use datafusion::arrow::compute::{cast, filter_record_batch, sort_to_indices};
use datafusion::arrow::datatypes::{DataType, TimestampMillisecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use foldhash::{HashMap, HashMapExt};
use seedwatch_schemas::finding::MAX_EVIDENCE;
use seedwatch_schemas::{EventBatch, Finding, Severity, Status};
use serde_json::json;

use crate::event_time::{LicenseClock, LicenseId};
use crate::reference::Reference;
use crate::rule::{CompiledRule, RowCondition, RuleType};
use crate::{DetectError, DetectStats, Detector};

/// Default allowed lateness: one hour behind the newest event.
pub const DEFAULT_ALLOWED_LATENESS_MS: i64 = 3_600_000;

/// Sweep idle keys out of memory every this many batches per rule.
const SWEEP_EVERY_BATCHES: u64 = 64;

#[derive(Debug, Clone)]
struct OpenFinding {
    finding: Finding,
    published: Option<Published>,
    /// Shown in details: distinct values, new values, or a trend's readings.
    distinct_values: Vec<String>,
    /// The threshold that applied when it opened.
    threshold: u32,
}

impl OpenFinding {
    /// Hand out the finding, its details filled in, as its next version when it changed
    /// since the last one.
    fn publish(&mut self, rule: &CompiledRule, now: i64, out: &mut Vec<Finding>) {
        if next_version(&mut self.finding, &mut self.published, now) {
            out.push(render(rule, self));
        }
    }
}

/// What was last published of a finding: a new version is due when this changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    event_count: i64,
    severity: Severity,
    status: Status,
}

/// An open finding of an hourly or absence rule, and what was last published of it.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub(crate) finding: Finding,
    pub(crate) published: Option<Published>,
}

impl Tracked {
    pub(crate) fn new(finding: Finding) -> Box<Self> {
        Box::new(Self { finding, published: None })
    }

    /// Hand out the finding as its next version when it changed since the last one.
    pub(crate) fn publish(&mut self, now: i64, out: &mut Vec<Finding>) {
        if next_version(&mut self.finding, &mut self.published, now) {
            out.push(self.finding.clone());
        }
    }
}

/// Make `f` its next version when it changed (opened, grew, escalated, changed status)
/// since it was last published; returns whether it did.
fn next_version(f: &mut Finding, published: &mut Option<Published>, now: i64) -> bool {
    let mark = Published { event_count: f.event_count, severity: f.severity, status: f.status };
    if *published == Some(mark) {
        return false;
    }
    f.raised = published.is_none_or(|p| f.severity > p.severity);
    f.version += 1;
    f.updated_at = now;
    *published = Some(mark);
    true
}

/// Whether an open finding is due a version before it closes: its severity rose, or its
/// event count doubled, since the last one. Doubling, not every event, bounds a burst of
/// thousands to a dozen versions; and it depends on the events alone, not on how they were
/// batched, so any number of partitions publishes the same versions.
fn grown(f: &Finding, published: Option<Published>) -> bool {
    published.is_none_or(|p| f.severity > p.severity || f.event_count >= 2 * p.event_count)
}

#[derive(Debug, Default)]
struct KeyState {
    window: crate::kinds::Window,
    /// Newest event time seen for the key.
    last_seen: i64,
    /// The key's license, whose watermark says when the key is idle.
    license: LicenseId,
    // Boxed: most keys have no open finding, and a finding is several hundred bytes.
    open: Option<Box<OpenFinding>>,
}

/// Make room for one more element, exactly while `v` is small: a push on an empty vector
/// reserves four, and the usual per-key vector never gets a second element.
pub(crate) fn reserve_one_while_small<T>(v: &mut Vec<T>) {
    if v.len() < 4 {
        v.reserve_exact(1);
    }
}

/// `details` (a JSON object) with one more field.
pub(crate) fn with_detail(details: &str, name: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(details).unwrap_or_else(|_| json!({}));
    if let Some(map) = v.as_object_mut() {
        map.insert(name.to_string(), value);
    }
    v.to_string()
}

#[derive(Debug)]
struct RuleState {
    rule: CompiledRule,
    // Boxed values keep the table's slots small: a table is up to half empty after it grows.
    keys: HashMap<Box<[u8]>, Box<KeyState>>,
    hours: crate::kinds::baseline::Hours,
    seen: crate::kinds::new_value::SeenSets,
    silences: crate::kinds::absence::Silences,
    converter: RowConverter,
    /// Open findings by expiry time, to close them without scanning every key.
    expiries: BTreeMap<(i64, u64), Box<[u8]>>,
    sequence: u64,
    batches: u64,
    /// Rows each of the rule's exceptions dropped in the current batch.
    suppressed: Vec<u64>,
    id: Arc<str>,
    /// Values forgotten in the current batch for lack of room (see [`crate::limits`]).
    values_evicted: u64,
    /// Newest event time the rule has seen, which ages its state.
    newest: i64,
    /// Batches since the last sweep of idle keys by age.
    since_sweep: u64,
    /// The UTC day a `seedwatch.state_limit` finding last reported this rule.
    limit_reported_day: Option<i64>,
}

/// Runs a set of compiled rules over batches. See the crate docs.
#[derive(Debug)]
pub struct RuleEngine {
    rules: Vec<RuleState>,
    by_family: [Vec<usize>; 4],
    reference: Arc<Reference>,
    skipped: Vec<(String, &'static str)>,
    /// Newest event time seen in any family: absence is judged against it.
    watermark: i64,
    /// Each license's own event time: lateness, suppression and idleness are judged against it.
    licenses: LicenseClock,
    /// How far behind the watermark an event may be and still be evaluated.
    allowed_lateness_ms: i64,
    /// Batches since idle licenses were last retired from `licenses`.
    since_license_sweep: u64,
    clock: fn() -> i64,
}

fn wall_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn eval_error(rule: &CompiledRule, e: impl std::fmt::Display) -> DetectError {
    DetectError::Evaluate { rule: rule.id.clone(), message: e.to_string() }
}

impl RuleEngine {
    /// An engine over `rules` with no reference data: `schedule` and
    /// `reference` rules are skipped (see [`RuleEngine::skipped`]).
    pub fn new(rules: Vec<CompiledRule>) -> Result<Self, DetectError> {
        Self::with_reference(rules, Arc::new(Reference::default()))
    }

    /// An engine over `rules`, joining against `reference`. Rules whose
    /// reference table is empty are skipped and listed by [`RuleEngine::skipped`].
    pub fn with_reference(rules: Vec<CompiledRule>, reference: Arc<Reference>) -> Result<Self, DetectError> {
        let mut by_family: [Vec<usize>; 4] = Default::default();
        let mut states = Vec::with_capacity(rules.len());
        let mut skipped = Vec::new();
        for rule in rules {
            let missing = match rule.condition {
                RowCondition::OutsideHours if reference.locations.is_empty() => Some("needs locations.csv (--locations)"),
                RowCondition::TerminatedUser { .. } if reference.roster.is_empty() => Some("needs roster.csv (--roster)"),
                _ => None,
            };
            if let Some(why) = missing {
                skipped.push((rule.id.clone(), why));
                continue;
            }
            if rule.baseline.is_some() && reference.locations.is_empty() {
                // Still useful, but hours then shift with DST and differ from a run that had the file.
                tracing::warn!(rule = %rule.id, "no locations.csv (--locations): the baseline compares UTC hours, not local ones");
            }
            let i = states.len();
            let schema = seedwatch_schemas::arrow_schema::event_schema(rule.family);
            let fields = rule.group_by.iter().map(|c| SortField::new(schema.field(*c).data_type().clone())).collect();
            let converter = RowConverter::new(fields).map_err(|e| eval_error(&rule, e))?;
            by_family[rule.family.index()].push(i);
            states.push(RuleState { suppressed: vec![0; rule.exceptions.len()], id: rule.id.as_str().into(), rule, keys: HashMap::new(), hours: Default::default(), seen: Default::default(), silences: Default::default(), converter, expiries: BTreeMap::new(), sequence: 0, batches: 0, values_evicted: 0, newest: i64::MIN, since_sweep: 0, limit_reported_day: None });
        }
        Ok(Self { rules: states, by_family, reference, skipped, watermark: i64::MIN, licenses: LicenseClock::default(), allowed_lateness_ms: DEFAULT_ALLOWED_LATENESS_MS, since_license_sweep: 0, clock: wall_clock_ms })
    }

    /// Seed a `new_value` rule's seen-sets from rows of a
    /// [`crate::resume::WarmupKind::SeenValues`] query. Returns keys restored.
    pub(crate) fn restore_seen(&mut self, rule_id: &str, batch: &RecordBatch) -> Result<usize, DetectError> {
        let Some(state) = self.rules.iter_mut().find(|r| r.rule.id == rule_id && r.rule.new_value.is_some()) else { return Ok(0) };
        state.seen.restore(&state.converter, state.rule.group_by.len(), batch).map_err(|e| DetectError::Evaluate { rule: rule_id.to_string(), message: format!("restoring seen values: {e}") })
    }

    /// Continue the archived versions of the findings a replay reopened; `latest` holds each
    /// finding's newest archived version (`findings_latest`). Replay publishes nothing, and a previous run published
    /// more (its final versions at the end of its input): without this, a finding that grows
    /// after a restart would come out under a version the archive already holds, and be lost
    /// as a duplicate. Returns the findings continued.
    pub fn restore_versions(&mut self, latest: &[Finding]) -> usize {
        let archived: HashMap<&str, &Finding> = latest.iter().map(|f| (f.finding_id.as_str(), f)).collect();
        let mut continued = 0;
        let mut restore = |f: &mut Finding, published: &mut Option<Published>| {
            if let Some(a) = archived.get(f.finding_id.as_str()).filter(|a| a.version >= f.version) {
                // The status stays the detector's: a person's acknowledgement is theirs, and
                // does not make the detector publish the finding again.
                (f.version, *published) = (a.version, Some(Published { event_count: a.event_count, severity: a.severity, status: f.status }));
                continued += 1;
            }
        };
        for state in &mut self.rules {
            state.keys.values_mut().filter_map(|k| k.open.as_deref_mut()).for_each(|o| restore(&mut o.finding, &mut o.published));
            state.hours.open_mut().for_each(|t| restore(&mut t.finding, &mut t.published));
            state.silences.open_mut().for_each(|t| restore(&mut t.finding, &mut t.published));
        }
        continued
    }

    /// Run one rule over already-archived events, discarding its findings (see [`crate::resume`]).
    pub(crate) fn replay_rule(&mut self, rule_id: &str, batch: &RecordBatch) -> Result<(), DetectError> {
        let now = (self.clock)();
        let Some(state) = self.rules.iter_mut().find(|r| r.rule.id == rule_id) else { return Ok(()) };
        // Archived rows carry their licenses' event time into the restored engine.
        let time = batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
        let license = batch.schema().index_of("license").ok().map(|i| as_utf8(batch, i)).transpose().map_err(|e| eval_error(&state.rule, e))?;
        if let (Some(time), Some(license)) = (time, license.as_ref().and_then(|l| l.as_string_opt::<i32>())) {
            for row in 0..batch.num_rows() {
                self.licenses.saw(if license.is_null(row) { "" } else { license.value(row) }, time.value(row));
            }
        }
        let mut discarded = Vec::new();
        state.process(batch, &self.reference, &self.licenses, now, &mut discarded)?;
        Ok(())
    }

    /// Rules not evaluated for lack of reference data, with the reason.
    pub fn skipped(&self) -> &[(String, &'static str)] {
        &self.skipped
    }

    /// Evaluate events up to `ms` behind the watermark; older ones are only counted as late.
    pub fn with_allowed_lateness(mut self, ms: i64) -> Self {
        self.allowed_lateness_ms = ms.max(0);
        self
    }

    /// Use a fixed clock for `detected_at` (golden tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// The rules, in load order.
    pub fn rules(&self) -> impl Iterator<Item = &CompiledRule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// Findings currently open (inside their suppression window, or a silence
    /// not yet ended), per rule and severity, every pair present (zeros included).
    pub fn open_findings(&self) -> Vec<(&str, Severity, u64)> {
        let mut out = Vec::with_capacity(self.rules.len() * Severity::ALL.len());
        for state in &self.rules {
            let mut counts = [0u64; 4];
            let mut count = |s: Severity| counts[Severity::ALL.iter().position(|x| *x == s).unwrap_or(0)] += 1;
            state.keys.values().filter_map(|k| k.open.as_ref()).for_each(|o| count(o.finding.severity));
            state.hours.open().for_each(|t| count(t.finding.severity));
            state.silences.open().for_each(|t| count(t.finding.severity));
            out.extend(Severity::ALL.iter().zip(counts).map(|(s, n)| (state.rule.id.as_str(), *s, n)));
        }
        out
    }

    /// The silence each absence rule tolerates per state (policy value or
    /// fixed limit, never below the rule's `minimum`), for the states in `states`.
    pub fn absence_limits<'a>(&self, states: &[&'a str]) -> Vec<(&str, &'a str, i64)> {
        let mut out = Vec::new();
        for rule in self.rules.iter().map(|r| &r.rule) {
            if rule.absence.is_none() {
                continue;
            }
            for state in states {
                if let Some(limit) = crate::kinds::absence::limit_ms(rule, state, &self.reference) {
                    out.push((rule.id.as_str(), *state, limit));
                }
            }
        }
        out
    }

    /// Publish, as new versions, the open findings that changed since their last
    /// version, without closing them. Findings are published when they open and as they
    /// escalate or double; a long-running detector that has caught up with its input
    /// publishes the rest of their growth here (and an hourly rule's finding before its
    /// hour is over) instead of waiting for event time to move.
    pub fn publish_open(&mut self, out: &mut Vec<Finding>) {
        let now = (self.clock)();
        for state in &mut self.rules {
            let mut open = Vec::new();
            state.hours.publish_open(now, &mut open);
            state.silences.open_mut().for_each(|t| t.publish(now, &mut open));
            state.keys.values_mut().filter_map(|k| k.open.as_deref_mut()).for_each(|o| o.publish(&state.rule, now, &mut open));
            sort_findings(&mut open);
            out.extend(open);
        }
    }

    /// Forget the event time replay gave each license: the next released rows set it. A Kafka
    /// detector restored from the archive re-reads uncommitted tails that the archive may hold
    /// further in one family than another (a crash between two files of one commit); judged
    /// against the newest archived event of any family, the others' re-read rows would be late.
    pub fn forget_event_time(&mut self) {
        self.licenses.forget_times();
    }

    /// Absence findings withdrawn so far: a key judged silent against other licenses' newer
    /// time whose own next event showed no gap (its events were delayed, not missing).
    pub fn retracted_silences(&self) -> u64 {
        self.rules.iter().map(|r| r.silences.retracted()).sum()
    }

    /// Keys currently tracked across all rules (for memory reporting).
    pub fn tracked_keys(&self) -> usize {
        self.rules.iter().map(|r| r.keys.len() + r.hours.len() + r.seen.len() + r.silences.len()).sum()
    }

    /// Licenses whose event time is tracked.
    pub fn tracked_licenses(&self) -> usize {
        self.licenses.len()
    }

    /// Retire licenses idle past `forget_idle_after` that no key refers to, and, past
    /// `max_keys_per_rule` licenses, those idle longest (see [`LicenseClock::retire`]).
    fn retire_licenses(&mut self) {
        let limits = self.reference.policy.limits();
        self.since_license_sweep += 1;
        if self.licenses.len() <= limits.max_keys_per_rule && self.since_license_sweep < SWEEP_EVERY_BATCHES {
            return;
        }
        self.since_license_sweep = 0;
        let in_use: std::collections::HashSet<LicenseId> = self.rules.iter().flat_map(|r| r.keys.values().map(|k| k.license)).collect();
        let horizon = self.licenses.max_watermark().saturating_sub(limits.forget_idle_after_ms);
        self.licenses.retire(horizon, limits.max_keys_per_rule, &in_use);
    }
}

impl Detector for RuleEngine {
    fn process(&mut self, events: &EventBatch, out: &mut Vec<Finding>) -> Result<DetectStats, DetectError> {
        let mut stats = DetectStats::default();
        let now = (self.clock)();
        // Events too far behind their own license's watermark would reopen windows that were
        // already judged: they are archived all the same, but not evaluated (by window rules,
        // see below). Each license has its own time, so a location's delayed backlog is not
        // late behind other locations.
        let mut on_time = std::borrow::Cow::Borrowed(&events.batch);
        let time = events.batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
        let newest = time.and_then(datafusion::arrow::compute::max).unwrap_or(i64::MIN);
        if let (Some(time), Ok(license)) = (time, string_col(&events.batch, "license")) {
            let (mask, late) = self.licenses.observe(license, time, self.allowed_lateness_ms);
            if let Some(mask) = mask {
                stats.late_events = late;
                let kept = filter_record_batch(&events.batch, &BooleanArray::from(mask)).map_err(|e| DetectError::Evaluate { rule: "lateness".into(), message: e.to_string() })?;
                on_time = std::borrow::Cow::Owned(kept);
            }
        }
        for &i in &self.by_family[events.family.index()] {
            let state = &mut self.rules[i];
            // Except for absence rules: a late event still proves its key was alive then, and
            // they judge each key by its own events' times (an older one than the last seen is
            // ignored). Without it, a location's backlog read behind its other families would
            // leave a gap where the late events were, and a silence that never happened.
            let batch: &RecordBatch = if state.rule.absence.is_some() { &events.batch } else { &on_time };
            stats.rows_evaluated += batch.num_rows() as u64;
            let (matched, opened) = state.process(batch, &self.reference, &self.licenses, now, out)?;
            stats.rows_matched += matched;
            stats.findings_opened += opened;
            let evicted = state.enforce_limits(self.reference.policy.limits(), newest, now, out);
            if evicted > 0 {
                stats.evicted.push(crate::Evicted { rule: state.id.clone(), entries: evicted });
            }
            for (rows, exception) in state.suppressed.iter_mut().zip(&state.rule.exceptions) {
                if *rows > 0 {
                    stats.suppressed.push(crate::Suppressed { rule: state.id.clone(), exception: exception.id.clone(), rows: std::mem::take(rows) });
                }
            }
        }
        self.retire_licenses();
        Ok(stats)
    }

    fn advance(&mut self, watermark: i64, out: &mut Vec<Finding>) -> u64 {
        self.licenses.commit();
        self.watermark = self.watermark.max(watermark);
        let now = (self.clock)();
        let mut opened = 0;
        for state in self.rules.iter_mut().filter(|r| r.rule.absence.is_some()) {
            opened += state.silences.check(&state.rule, self.watermark, &self.reference, now, out);
        }
        opened
    }

    fn flush(&mut self, out: &mut Vec<Finding>) {
        let now = (self.clock)();
        for state in &mut self.rules {
            // Each rule type keeps its open findings in its own map; at most one is non-empty.
            let mut open = Vec::new();
            state.hours.flush(now, &mut open);
            state.silences.take_open().for_each(|mut t| t.publish(now, &mut open));
            state.keys.values_mut().filter_map(|k| k.open.take()).for_each(|mut o| o.publish(&state.rule, now, &mut open));
            sort_findings(&mut open);
            out.extend(open);
            state.expiries.clear();
        }
    }
}

/// Columns of the filtered batch the engine reads per matching row.
pub(crate) struct Columns<'a> {
    pub(crate) time: &'a datafusion::arrow::array::PrimitiveArray<TimestampMillisecondType>,
    pub(crate) event_id: &'a StringArray,
    pub(crate) system: &'a StringArray,
    pub(crate) state: &'a StringArray,
    pub(crate) license: &'a StringArray,
    pub(crate) location: &'a StringArray,
    pub(crate) subject: &'a StringArray,
    pub(crate) actor: Option<&'a StringArray>,
    pub(crate) distinct: Option<&'a StringArray>,
    /// Trend rules: the gauge.
    pub(crate) gauge: Option<&'a datafusion::arrow::array::Int64Array>,
}

pub(crate) fn as_utf8(batch: &RecordBatch, index: usize) -> Result<ArrayRef, String> {
    let col = batch.column(index);
    if col.data_type() == &DataType::Utf8 {
        Ok(col.clone())
    } else {
        cast(col, &DataType::Utf8).map_err(|e| e.to_string())
    }
}

pub(crate) fn string_col<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| format!("column `{name}` is missing or not a string"))
}

impl RuleState {
    fn process(&mut self, batch: &RecordBatch, reference: &Reference, licenses: &LicenseClock, now: i64, out: &mut Vec<Finding>) -> Result<(u64, u64), DetectError> {
        self.expire(licenses, now, out);
        let rule = &self.rule;
        let mask = rule
            .filter
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| eval_error(rule, e))?;
        let mut mask: &BooleanArray = mask.as_boolean_opt().ok_or_else(|| eval_error(rule, "filter did not return booleans"))?;
        let excepted;
        if !rule.exceptions.is_empty() && mask.true_count() > 0 {
            excepted = self.except(batch, mask)?;
            mask = &excepted;
        }
        if self.rule.absence.is_some() {
            self.silences.observe_family_time(batch);
        }
        let clear = self.rule.absence.as_ref().and_then(|a| a.clear.clone());
        let result = if mask.true_count() == 0 { Ok((0, 0)) } else { self.process_matched(batch, mask, reference, licenses, now, out) };
        if let Some(clear) = clear {
            self.silences.clear(&clear, &self.rule, &self.converter, batch, now, out).map_err(|e| eval_error(&self.rule, e))?;
        }
        result
    }

    /// Drop the rows of `mask` an exception holds for, counting them per exception.
    fn except(&mut self, batch: &RecordBatch, mask: &BooleanArray) -> Result<BooleanArray, DetectError> {
        let mut kept = mask.clone();
        for (exception, rows) in self.rule.exceptions.iter().zip(&mut self.suppressed) {
            let hit = exception.evaluate(batch).map_err(|e| eval_error(&self.rule, format!("exception {}: {e}", exception.id)))?;
            let dropped = and(&kept, &hit).map_err(|e| eval_error(&self.rule, e))?;
            let n = dropped.true_count() as u64;
            if n > 0 {
                *rows += n;
                kept = and_not(&kept, &hit).map_err(|e| eval_error(&self.rule, e))?;
            }
        }
        Ok(kept)
    }

    fn process_matched(&mut self, batch: &RecordBatch, mask: &BooleanArray, reference: &Reference, licenses: &LicenseClock, now: i64, out: &mut Vec<Finding>) -> Result<(u64, u64), DetectError> {
        let rule = &self.rule;
        let mut matched = filter_record_batch(batch, mask).map_err(|e| eval_error(rule, e))?;
        if rule.condition != RowCondition::None {
            let mask = condition_mask(rule.condition, &matched, reference).map_err(|e| eval_error(rule, e))?;
            if mask.true_count() == 0 {
                return Ok((0, 0));
            }
            matched = filter_record_batch(&matched, &mask).map_err(|e| eval_error(rule, e))?;
        }
        if let Some(nv) = &rule.new_value {
            let mask = self.seen.mask(nv, &matched, &self.converter, &rule.group_by, reference.policy.limits().max_values_per_key, &mut self.values_evicted).map_err(|e| eval_error(rule, e))?;
            if mask.true_count() == 0 {
                return Ok((0, 0));
            }
            matched = filter_record_batch(&matched, &mask).map_err(|e| eval_error(rule, e))?;
        }
        let n = matched.num_rows();
        let keys = self
            .converter
            .convert_columns(&rule.group_by.iter().map(|c| matched.column(*c).clone()).collect::<Vec<_>>())
            .map_err(|e| eval_error(rule, e))?;
        let time_col = matched.column_by_name("time").ok_or_else(|| eval_error(rule, "no time column"))?;
        let order = sort_to_indices(time_col, None, None).map_err(|e| eval_error(rule, e))?;
        let subject = as_utf8(&matched, rule.subject).map_err(|e| eval_error(rule, e))?;
        let actor = rule.actor.map(|c| as_utf8(&matched, c)).transpose().map_err(|e| eval_error(rule, e))?;
        // New-value rules report the new values the way distinct counts report theirs.
        let distinct_col = rule.distinct.or(rule.new_value.as_ref().map(|nv| nv.field));
        let distinct = distinct_col.map(|c| as_utf8(&matched, c)).transpose().map_err(|e| eval_error(rule, e))?;
        let cols = Columns {
            time: time_col.as_primitive_opt().ok_or_else(|| eval_error(rule, "time is not a timestamp"))?,
            event_id: string_col(&matched, "event_id").map_err(|e| eval_error(rule, e))?,
            system: string_col(&matched, "system").map_err(|e| eval_error(rule, e))?,
            state: string_col(&matched, "state").map_err(|e| eval_error(rule, e))?,
            license: string_col(&matched, "license").map_err(|e| eval_error(rule, e))?,
            location: string_col(&matched, "location").map_err(|e| eval_error(rule, e))?,
            subject: subject.as_string(),
            actor: actor.as_ref().map(|a| a.as_string()),
            distinct: distinct.as_ref().map(|d| d.as_string()),
            gauge: match &rule.trend {
                Some(t) => Some(matched.column(t.field).as_primitive_opt().ok_or_else(|| eval_error(rule, "trend field is not an integer"))?),
                None => None,
            },
        };

        if let Some(baseline) = self.rule.baseline.clone() {
            let measure = baseline.measure.and_then(|c| matched.column(c).as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>().cloned());
            for &row in order.values() {
                let row = row as usize;
                let value = measure.as_ref().map_or(1.0, |m| if m.is_null(row) { 0.0 } else { m.value(row) as f64 });
                self.hours.observe(&self.rule, &baseline, keys.row(row).as_ref(), row, value, &cols, reference, now, out);
            }
            return Ok((n as u64, 0));
        }
        if self.rule.absence.is_some() {
            for &row in order.values() {
                let row = row as usize;
                self.silences.saw_ok(&self.rule, keys.row(row).as_ref(), row, &cols, reference, now, out);
            }
            return Ok((n as u64, 0));
        }
        let mut opened = 0;
        for &row in order.values() {
            let row = row as usize;
            let key = keys.row(row);
            let t = cols.time.value(row);
            if self.observe(key.as_ref(), row, t, &cols, reference, licenses, now, out) {
                opened += 1;
            }
        }
        self.batches += 1;
        if self.batches % SWEEP_EVERY_BATCHES == 0 {
            // A key is idle once its license's own time has moved a window past it.
            let window = self.rule.window_ms;
            self.keys.retain(|_, k| k.open.is_some() || k.last_seen >= licenses.watermark(k.license).saturating_sub(window));
        }
        Ok((n as u64, opened))
    }

    /// Hold the rule's state within `limits` (see [`crate::limits`]) after a batch whose
    /// newest event is at `newest`: past a limit, forget the entries idle longest; every
    /// [`SWEEP_EVERY_BATCHES`] batches, forget what has aged out; and once a day per rule,
    /// say in a `seedwatch.state_limit` finding that entries were forgotten for lack of
    /// room. Returns entries forgotten for lack of room.
    fn enforce_limits(&mut self, limits: crate::limits::StateLimits, newest: i64, now: i64, out: &mut Vec<Finding>) -> u64 {
        self.newest = self.newest.max(newest);
        let keep = crate::limits::keep_after_eviction(limits.max_keys_per_rule);
        let mut evicted = std::mem::take(&mut self.values_evicted);
        if self.keys.len() > limits.max_keys_per_rule {
            evicted += crate::limits::evict_idle(&mut self.keys, keep, |k| k.open.is_none().then_some(k.last_seen));
        }
        evicted += self.seen.bound_keys(&limits, keep) + self.hours.bound_keys(&limits, keep) + self.silences.bound_keys(&limits, keep);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY_BATCHES && self.newest > i64::MIN {
            self.since_sweep = 0;
            if let Some(nv) = &self.rule.new_value {
                self.seen.sweep(self.newest, nv.history_ms);
            }
            self.hours.sweep(self.newest, limits.forget_idle_after_ms);
            self.silences.sweep(self.newest, limits.forget_idle_after_ms);
        }
        if evicted > 0 {
            let day = self.newest.div_euclid(86_400_000);
            if self.limit_reported_day != Some(day) {
                self.limit_reported_day = Some(day);
                out.push(state_limit_finding(&self.rule, evicted, &limits, self.newest, now));
            }
        }
        evicted
    }

    /// Feed one matching row; returns whether a new finding was opened.
    #[allow(clippy::too_many_arguments)]
    fn observe(&mut self, key: &[u8], row: usize, t: i64, cols: &Columns<'_>, reference: &Reference, licenses: &LicenseClock, now: i64, out: &mut Vec<Finding>) -> bool {
        let rule = &self.rule;
        let Some(threshold_n) = rule.threshold_for(cols.system.value(row), &reference.policy) else { return false };
        let threshold = threshold_n as usize;
        let state = match self.keys.get_mut(key) {
            Some(s) => s,
            None => {
                let license = licenses.get(if cols.license.is_null(row) { "" } else { cols.license.value(row) }).unwrap_or_default();
                self.keys.entry(Box::from(key)).or_insert_with(|| Box::new(KeyState { license, ..KeyState::default() }))
            }
        };
        state.last_seen = state.last_seen.max(t);
        let event_id = cols.event_id.value(row);

        let (fires, first_time) = match (cols.gauge.zip(rule.trend.as_ref()), cols.distinct) {
            (Some((gauge, trend)), _) => {
                if gauge.is_null(row) {
                    return false;
                }
                state.window.read(t, gauge.value(row), event_id, trend, rule.window_ms)
            }
            (None, None) => state.window.count(t, event_id, threshold, rule.window_ms),
            (None, Some(values)) => {
                if values.is_null(row) {
                    return false;
                }
                state.window.count_distinct(t, values.value(row), event_id, threshold, rule.window_ms, reference.policy.limits().max_values_per_key, &mut self.values_evicted)
            }
        };
        if !fires {
            return false;
        }

        if let Some(open) = &mut state.open {
            if t < open.finding.window_start + rule.suppress_ms {
                let f = &mut open.finding;
                f.event_count += 1;
                f.window_end = f.window_end.max(t);
                if f.evidence.len() < MAX_EVIDENCE && !f.evidence.iter().any(|e| e == event_id) {
                    f.evidence.push(event_id.to_string());
                }
                if let Some(gauge) = cols.gauge {
                    // Readings while the finding is open extend its series.
                    if open.distinct_values.len() < MAX_EVIDENCE {
                        open.distinct_values.push(gauge.value(row).to_string());
                    }
                } else if let Some(values) = cols.distinct {
                    let v = values.value(row);
                    if open.distinct_values.len() < MAX_EVIDENCE && !open.distinct_values.iter().any(|x| x == v) {
                        open.distinct_values.push(v.to_string());
                    }
                }
                if grown(&open.finding, open.published) {
                    open.publish(rule, now, out);
                }
                return false;
            }
        }
        if let Some(mut previous) = state.open.take() {
            previous.publish(rule, now, out);
        }

        let (evidence, count, distinct_values) = state.window.evidence();
        let state_code = cols.state.value(row);
        let severity = match &rule.escalate {
            Some((flag, raised)) if reference.policy.flag(flag, state_code) == Some(true) => rule.severity.max(*raised),
            _ => rule.severity,
        };
        let finding = new_finding(rule, key, severity, &Place::of_row(cols, row), (first_time, t), count as i64, evidence, now);
        let expiry = first_time.saturating_add(rule.suppress_ms);
        let mut open = Box::new(OpenFinding { finding, published: None, distinct_values, threshold: threshold_n });
        // Published as it opens: a critical match is archived, published and counted in the
        // batch that raised it, not when its suppression window ends.
        open.publish(rule, now, out);
        state.open = Some(open);
        self.sequence += 1;
        self.expiries.insert((expiry, self.sequence), Box::from(key));
        true
    }

    /// Close open findings whose suppression window ended before their license's watermark.
    fn expire(&mut self, licenses: &LicenseClock, now: i64, out: &mut Vec<Finding>) {
        let newest = licenses.max_watermark();
        // Due by the newest license's time but not yet by their own: a lagging location's
        // findings stay open until its own events pass them.
        let mut waiting = Vec::new();
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > newest {
                break;
            }
            let ((expiry, sequence), key) = entry.remove_entry();
            let Some(state) = self.keys.get_mut(&key) else { continue };
            if !state.open.as_ref().is_some_and(|o| o.finding.window_start.saturating_add(self.rule.suppress_ms) == expiry) {
                continue;
            }
            if licenses.watermark(state.license) < expiry {
                waiting.push(((expiry, sequence), key));
            } else if let Some(mut open) = state.open.take() {
                open.publish(&self.rule, now, out);
            }
        }
        self.expiries.extend(waiting);
    }
}

/// Where a finding belongs: system, state, license, location, subject and actor
/// (empty: none), taken from the event that opened it.
pub(crate) struct Place<'a>(pub(crate) [&'a str; 6]);

impl<'a> Place<'a> {
    pub(crate) fn of_row(cols: &Columns<'a>, row: usize) -> Self {
        let v = |c: &'a StringArray| if c.is_null(row) { "" } else { c.value(row) };
        let actor = cols.actor.map_or("", v);
        // An action on one's own account names no target: its subject is the actor.
        let subject = Some(v(cols.subject)).filter(|s| !s.is_empty()).unwrap_or(actor);
        Place([v(cols.system), v(cols.state), v(cols.license), v(cols.location), subject, actor])
    }
}

/// A new finding. Its id hashes rule, group key and window start, so the same
/// input always gives the same ids (and the archive deduplicates re-runs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_finding(rule: &CompiledRule, key: &[u8], severity: Severity, place: &Place<'_>, window: (i64, i64), event_count: i64, evidence: Vec<String>, now: i64) -> Finding {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(rule.id.as_bytes());
    hasher.update(key);
    hasher.update(&window.0.to_le_bytes());
    let [system, state, license, location, subject, actor] = place.0.map(str::to_string);
    Finding {
        finding_id: format!("{:016x}", hasher.digest()),
        // Set by `next_version` as it is published.
        version: 0,
        rule: rule.id.clone(),
        title: rule.title.clone(),
        severity,
        status: Status::Open,
        family: rule.family,
        system,
        state,
        license,
        location,
        subject,
        actor: Some(actor).filter(|a| !a.is_empty()),
        window_start: window.0,
        window_end: window.1,
        event_count,
        evidence,
        detected_at: now,
        updated_at: now,
        note: None,
        changed_by: None,
        details: String::new(),
        raised: false,
    }
}

/// The rule id of the finding that says a rule's state hit a limit.
pub const STATE_LIMIT_RULE: &str = "seedwatch.state_limit";

/// A finding that `rule` forgot `evicted` entries for lack of room at event time `at`: what
/// it forgot can no longer fire, so a SOC must hear of it (a flood of made-up users, or a
/// limit set too low for the fleet). One per rule and UTC day; the metric counts them all.
fn state_limit_finding(rule: &CompiledRule, evicted: u64, limits: &crate::limits::StateLimits, at: i64, now: i64) -> Finding {
    let place = Place(["", "", "", "", rule.id.as_str(), ""]);
    let day = at.div_euclid(86_400_000) * 86_400_000;
    // The id hashes the rule's id and the day: one finding per rule and day.
    let mut f = new_finding(rule, STATE_LIMIT_RULE.as_bytes(), Severity::Medium, &place, (day, at), evicted as i64, Vec::new(), now);
    f.rule = STATE_LIMIT_RULE.to_string();
    f.title = "Detector state limit reached: a rule forgot entries".to_string();
    f.version = 1;
    f.raised = true;
    f.details = json!({
        "rule": rule.id,
        "evicted": evicted,
        "max_keys_per_rule": limits.max_keys_per_rule,
        "max_values_per_key": limits.max_values_per_key,
        "why": "more keys or values than policy.yaml's limits: the entries idle longest were forgotten and can no longer fire",
    })
    .to_string();
    f
}

/// Evaluate a reference-data condition over the rows that passed the filter.
fn condition_mask(condition: RowCondition, batch: &RecordBatch, reference: &Reference) -> Result<BooleanArray, String> {
    let time: &datafusion::arrow::array::PrimitiveArray<TimestampMillisecondType> = batch
        .column_by_name("time")
        .and_then(|c| c.as_primitive_opt())
        .ok_or("no time column")?;
    Ok(match condition {
        RowCondition::None => BooleanArray::from(vec![true; batch.num_rows()]),
        RowCondition::OutsideHours => {
            let location = string_col(batch, "location")?;
            // A location missing from locations.csv cannot be judged: it does not fire.
            (0..batch.num_rows())
                .map(|i| Some(reference.locations.get(location.value(i)).is_some_and(|l| !l.is_open_at(time.value(i)))))
                .collect()
        }
        RowCondition::TerminatedUser { column } => {
            let users = as_utf8(batch, column)?;
            let users = users.as_string::<i32>();
            // The account is the user at the event's location (or license): the same name
            // elsewhere is someone else.
            let (location, license) = (string_col(batch, "location")?, string_col(batch, "license")?);
            (0..batch.num_rows())
                .map(|i| {
                    let entry = (!users.is_null(i)).then(|| reference.roster.get(location.value(i), license.value(i), users.value(i))).flatten();
                    Some(entry.and_then(|e| e.terminated_at_ms).is_some_and(|at| time.value(i) >= at))
                })
                .collect()
        }
    })
}

/// A copy of the finding with its `details` filled in.
fn render(rule: &CompiledRule, open: &OpenFinding) -> Finding {
    let mut f = open.finding.clone();
    let mut details = json!({ "filter": rule.filter_sql });
    if rule.rule_type == RuleType::Threshold {
        details["threshold"] = json!(open.threshold);
        details["window_seconds"] = json!(rule.window_ms / 1000);
    }
    if let Some(nv) = &rule.new_value {
        details["history_days"] = json!(nv.history_ms / 86_400_000);
        details["learning_days"] = json!(nv.learning_ms / 86_400_000);
    }
    match rule.rule_type {
        RuleType::Schedule => details["check"] = json!("outside business hours (locations.csv, local time)"),
        RuleType::Reference => details["check"] = json!("user terminated before the event (roster.csv)"),
        _ => {}
    }
    if let Some(trend) = &rule.trend {
        details["above"] = json!(trend.above);
        details["points"] = json!(trend.points);
        details["sustained"] = json!(trend.sustained);
        details["window_seconds"] = json!(rule.window_ms / 1000);
        let readings: Vec<i64> = open.distinct_values.iter().filter_map(|v| v.parse().ok()).collect();
        details["readings"] = json!(readings);
    } else if !open.distinct_values.is_empty() {
        let name = if rule.new_value.is_some() { "new_values" } else { "distinct_values" };
        details[name] = json!(open.distinct_values);
    }
    f.details = details.to_string();
    f
}

/// Sort findings into a stable order (by window start, rule, id, version): for output and goldens.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| (a.window_start, &a.rule, &a.finding_id, a.version).cmp(&(b.window_start, &b.rule, &b.finding_id, b.version)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_holds_one_window_kind() {
        // Three window fields side by side were 104 bytes; every tracked key pays this.
        // 64 with the key's license (four bytes, padded), which judges when the key is idle.
        assert!(std::mem::size_of::<super::KeyState>() <= 64, "{}", std::mem::size_of::<super::KeyState>());
    }
}
