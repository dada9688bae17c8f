//! `baseline`: volume in the current hour at least `ratio` times the key's normal level for
//! that local hour (median and MAD of past days), held against a floor that scales with
//! the key's typical busiest hour. A state or system may override the numbers
//! ([`crate::policy::BaselineOverride`]). The module holds the kind whole: its fields and
//! their compile step, and its per-key state ([`Hours`]); its warm-up is a replay of the
//! last `history_days` of events (`crate::resume`).

use std::collections::VecDeque;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use foldhash::HashMap;
use seedwatch_schemas::finding::MAX_EVIDENCE;
use seedwatch_schemas::{Finding, Status};
use serde::Deserialize;
use serde_json::json;

use super::{Context, KindConfig, KindParts};
use crate::engine::{new_finding, with_detail, Columns, Place, Tracked};
use crate::reference::Reference;
use crate::rule::CompiledRule;
use crate::DetectError;

/// The compiled parameters of a `baseline` rule.
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

/// The fields of a `baseline` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The column summed per hour (omit to count events).
    #[serde(default)]
    pub measure: Option<String>,
    /// Ratio to the normal level that fires (default 2.0).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Days of the same hour kept as samples (default 28).
    #[serde(default)]
    pub history_days: Option<usize>,
    /// Samples needed before judging a key's hour (default 7).
    #[serde(default)]
    pub min_samples: Option<usize>,
    /// Smallest hourly volume that can fire (default 0).
    #[serde(default)]
    pub min_volume: Option<f64>,
    /// Least normal level, as a share of the key's typical busiest hour (default 0).
    #[serde(default)]
    pub floor_of_peak: Option<f64>,
    /// Robust deviations above normal also required (default 4).
    #[serde(default)]
    pub min_deviation: Option<f64>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let measure = self.measure.as_deref().map(|m| cx.column("measure", m)).transpose()?;
        if let Some(m) = measure {
            if cx.schema.field(m).data_type() != &DataType::Int64 {
                return Err((cx.err)("measure", "field `measure`: must be an integer column (records, bytes, ...)".into()));
            }
        }
        let ratio = self.ratio.unwrap_or(2.0);
        if !(ratio > 1.0) {
            return Err((cx.err)("ratio", "field `ratio`: must be greater than 1".into()));
        }
        let floor_of_peak = self.floor_of_peak.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&floor_of_peak) {
            return Err((cx.err)("floor_of_peak", "field `floor_of_peak`: must be between 0 and 1".into()));
        }
        let baseline = Baseline {
            measure,
            ratio,
            history_days: self.history_days.unwrap_or(28).max(1),
            min_samples: self.min_samples.unwrap_or(7).max(1),
            min_volume: self.min_volume.unwrap_or(0.0),
            floor_of_peak,
            min_deviation: self.min_deviation.unwrap_or(4.0),
        };
        Ok(KindParts { baseline: Some(baseline), ..KindParts::default() })
    }
}

const HOUR_MS: i64 = 3_600_000;

/// One key's current hour's volume and past volumes of each hour of the day.
#[derive(Debug)]
struct HourlyKey {
    hour: i64,
    /// Day number of the current hour on the location's clock: a business day is one day.
    day: i64,
    total: f64,
    events: i64,
    /// Normal level of the current hour (median of the same local hour on
    /// past days) and its robust spread (1.4826 x MAD), once known.
    baseline: Option<(f64, f64)>,
    /// Least normal level the current hour is judged against (see `Baseline::floor_of_peak`).
    floor: f64,
    /// Local hour of day of the current hour (the location's timezone from
    /// locations.csv, else UTC), so that DST does not shift the comparison.
    slot: usize,
    /// Past hours; none until the key's first hour is over (most keys of a large fleet
    /// are new or rare, and the detector keeps state for a million of them).
    history: Option<Box<HourHistory>>,
    open: Option<Box<Tracked>>,
    /// The rule's parameters as policy.yaml overrides them for the key's state or system;
    /// `None` (no allocation) for the usual key that takes the rule's own.
    params: Option<Box<Baseline>>,
}

/// Keys of one location in one hour: how many moved anything, how many were over their level.
#[derive(Debug, Default, Clone, Copy)]
struct Surge {
    active: u32,
    over: u32,
}

impl Surge {
    /// At least two keys, and at least half of those active, over together.
    fn is_location_wide(self) -> bool {
        self.over >= 2 && 2 * self.over >= self.active
    }
}

fn surge_key(location: &str, hour: i64) -> (u64, i64) {
    (xxhash_rust::xxh3::xxh3_64(location.as_bytes()), hour)
}

/// Whether a baseline finding is one of a location-wide surge (see `Hours::surges`).
fn in_surge(surges: &HashMap<(u64, i64), Surge>, f: &Finding) -> bool {
    surges.get(&surge_key(&f.location, f.window_start.div_euclid(HOUR_MS))).is_some_and(|s| s.is_location_wide())
}

/// An hourly finding at the end of its hour: published, unless its location was busy all
/// over (a surge); one already published (by an idle detector) then resolves.
fn close_hourly(surges: &HashMap<(u64, i64), Surge>, mut t: Tracked, now: i64, out: &mut Vec<Finding>) {
    if in_surge(surges, &t.finding) {
        if t.published.is_none() {
            return;
        }
        t.finding.status = Status::Resolved;
        t.finding.details = with_detail(&t.finding.details, "location_wide_surge", json!(true));
    }
    t.publish(now, out);
}

/// What a baseline key remembers of its past hours.
#[derive(Debug)]
struct HourHistory {
    /// Per local hour of day: (day, volume) of past active hours, oldest first.
    samples: Vec<VecDeque<(i64, f64)>>,
    /// The key's busiest hour of each past day it was active, (day, volume), oldest first,
    /// and the busiest so far of the day in progress: its typical busy hour scales the floor.
    peaks: VecDeque<(i64, f64)>,
    day_peak: (i64, f64),
}

impl HourlyKey {
    /// The hour in progress is over: keep its volume as a sample of its hour of day and
    /// towards its day's peak, dropping what is older than the history.
    fn close_hour(&mut self, b: &Baseline) {
        let day = self.day;
        let history = self.history.get_or_insert_with(|| Box::new(HourHistory { samples: vec![VecDeque::new(); 24], peaks: VecDeque::new(), day_peak: (day, 0.0) }));
        if let Some(slot) = history.samples.get_mut(self.slot) {
            if self.events > 0 {
                slot.push_back((day, self.total));
            }
            while slot.front().is_some_and(|(d, _)| day - d >= b.history_days as i64) || slot.len() > b.history_days {
                slot.pop_front();
            }
        }
        if self.events > 0 {
            history.day_peak.1 = history.day_peak.1.max(self.total);
        }
    }

    /// Judge the new hour: its normal level and spread from the same hour of past days.
    /// An hour the key is usually silent in (an established key, active in it on fewer
    /// than half its active days) has a normal level of zero, so the floor alone decides;
    /// a young key, or an hour with a few samples short of `min_samples`, is still learning.
    fn start_hour(&mut self, b: &Baseline, hour: i64, slot: usize, day: i64) {
        use statrs::statistics::{Data, Median};
        self.hour = hour;
        self.day = day;
        self.slot = slot;
        self.total = 0.0;
        self.events = 0;
        let Some(history) = self.history.as_mut() else {
            return;
        };
        // A new day: the last one's peak joins the history (its first hour is the
        // first judged with every past day counted).
        if day != history.day_peak.0 {
            if history.day_peak.1 > 0.0 {
                history.peaks.push_back(history.day_peak);
            }
            history.day_peak = (day, 0.0);
        }
        while history.peaks.front().is_some_and(|(d, _)| day - d > b.history_days as i64) {
            history.peaks.pop_front();
        }
        let horizon = day - b.history_days as i64;
        let past: Vec<f64> = history.samples.get(slot).into_iter().flatten().filter(|(d, _)| *d >= horizon).map(|(_, v)| *v).collect();
        let peaks: Vec<f64> = history.peaks.iter().filter(|(d, _)| *d >= horizon).map(|(_, v)| *v).collect();
        let active_days = peaks.len();
        let typical_peak = (active_days >= b.min_samples).then(|| Data::new(peaks).median());
        self.floor = b.floor_of_peak * typical_peak.unwrap_or(0.0);
        self.baseline = if past.len() >= b.min_samples {
            let median = Data::new(past.clone()).median();
            let deviations: Vec<f64> = past.iter().map(|v| (v - median).abs()).collect();
            Some((median, 1.4826 * Data::new(deviations).median()))
        } else if typical_peak.is_some() && 2 * past.len() < active_days {
            Some((0.0, 0.0))
        } else {
            None
        };
    }
}

/// A baseline rule's state: each key's hours, and each location's hours across its keys.
#[derive(Debug, Default)]
pub(crate) struct Hours {
    // Boxed values keep the table's slots small: a table is up to half empty after it grows.
    keys: HashMap<Box<[u8]>, Box<HourlyKey>>,
    /// Per (location, hour), the keys active in it and the keys over their level. Most of a
    /// location's keys over together (4/20, a holiday sale) is business: their findings are
    /// dropped. Keyed by a hash of the location, so no allocation per event.
    surges: HashMap<(u64, i64), Surge>,
}

impl Hours {
    /// Keys tracked.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Past `max_keys_per_rule` keys, forget those idle longest (never one with an open
    /// finding) down to `keep`. Returns keys forgotten.
    pub(crate) fn bound_keys(&mut self, limits: &crate::limits::StateLimits, keep: usize) -> u64 {
        if self.keys.len() <= limits.max_keys_per_rule {
            return 0;
        }
        crate::limits::evict_idle(&mut self.keys, keep, |k| k.open.is_none().then_some(k.hour * HOUR_MS))
    }

    /// Forget keys with no event for `idle_ms` before `newest` (and no open finding).
    pub(crate) fn sweep(&mut self, newest: i64, idle_ms: i64) {
        let horizon = newest.saturating_sub(idle_ms);
        self.keys.retain(|_, k| k.open.is_some() || k.hour * HOUR_MS >= horizon);
    }

    /// The open findings (each of its key's current hour).
    pub(crate) fn open(&self) -> impl Iterator<Item = &Tracked> {
        self.keys.values().filter_map(|k| k.open.as_deref())
    }

    /// The open findings, to continue their versions.
    pub(crate) fn open_mut(&mut self) -> impl Iterator<Item = &mut Tracked> {
        self.keys.values_mut().filter_map(|k| k.open.as_deref_mut())
    }

    /// Publish the open findings that changed, before their hour is over (an idle
    /// detector), except those of a location-wide surge so far.
    pub(crate) fn publish_open(&mut self, now: i64, out: &mut Vec<Finding>) {
        let surges = &self.surges;
        self.keys.values_mut().filter_map(|k| k.open.as_deref_mut()).filter(|t| !in_surge(surges, &t.finding)).for_each(|t| t.publish(now, out));
    }

    /// Close every open finding as if its hour were over (end of input).
    pub(crate) fn flush(&mut self, now: i64, out: &mut Vec<Finding>) {
        let surges = &self.surges;
        self.keys.values_mut().filter_map(|k| k.open.take()).for_each(|t| close_hourly(surges, *t, now, out));
    }

    /// Add one event's volume to its key's hour; fire (or
    /// update the hour's finding) when the hour reaches `ratio` x its normal level.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe(&mut self, rule: &CompiledRule, b: &Baseline, key: &[u8], row: usize, value: f64, cols: &Columns<'_>, reference: &Reference, now: i64, out: &mut Vec<Finding>) {
        let t = cols.time.value(row);
        let hour = t.div_euclid(HOUR_MS);
        // (hour of day, day number) on the location's clock, else UTC's.
        let local_hour = |h: i64| -> (usize, i64) {
            let location = if cols.location.is_null(row) { None } else { reference.locations.get(cols.location.value(row)) };
            let utc = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(h * HOUR_MS);
            match (location, utc) {
                (Some(l), Some(u)) => {
                    let wall = u.with_timezone(&l.tz).naive_local().and_utc().timestamp_millis().div_euclid(HOUR_MS);
                    (wall.rem_euclid(24) as usize, wall.div_euclid(24))
                }
                _ => (h.rem_euclid(24) as usize, h.div_euclid(24)),
            }
        };
        if !self.keys.contains_key(key) {
            let (slot, day) = local_hour(hour);
            let state = if cols.state.is_null(row) { "" } else { cols.state.value(row) };
            let system = if cols.system.is_null(row) { "" } else { cols.system.value(row) };
            let own = reference.policy.baseline(b, state, system);
            let params = (own != *b).then(|| Box::new(own));
            let fresh = HourlyKey { hour, day, total: 0.0, events: 0, baseline: None, floor: 0.0, slot, history: None, open: None, params };
            self.keys.insert(Box::from(key), Box::new(fresh));
        }
        let Some(k) = self.keys.get_mut(key) else { return };
        let b = &k.params.as_deref().copied().unwrap_or(*b);
        if hour < k.hour {
            // A late event for an hour already judged: archived, not re-judged.
            return;
        }
        if hour > k.hour {
            k.close_hour(b);
            if let Some(t) = k.open.take() {
                close_hourly(&self.surges, *t, now, out);
            }
            let (slot, day) = local_hour(hour);
            k.start_hour(b, hour, slot, day);
            if self.surges.len() > 4096 {
                // Hours older than two days are closed for every key of a sorted stream.
                self.surges.retain(|(_, h), _| *h + 48 >= hour);
            }
        }
        let location = if cols.location.is_null(row) { "" } else { cols.location.value(row) };
        if k.events == 0 {
            self.surges.entry(surge_key(location, hour)).or_default().active += 1;
        }
        k.total += value;
        k.events += 1;
        let Some((normal, spread)) = k.baseline else { return };
        // The level the hour is held against: its own normal, but no less than the floor
        // (a share of the key's typical busy hour), so a quiet hour's swings stay quiet
        // on a large site while a small key's 10x still counts.
        let expected = normal.max(k.floor);
        if expected <= 0.0 || k.total < b.ratio * expected || k.total < b.min_volume || k.total - normal < b.min_deviation * spread {
            return;
        }
        let details = json!({
            "observed": k.total, "baseline": normal, "floor": (k.floor * 10.0).round() / 10.0,
            "ratio": (k.total / expected * 100.0).round() / 100.0,
            "robust_sd": (spread * 10.0).round() / 10.0,
            "fires_at_ratio": b.ratio, "local_hour": k.slot, "measure": b.measure.map_or("events", |_| "sum"),
        })
        .to_string();
        let event_id = cols.event_id.value(row);
        match &mut k.open {
            Some(open) => {
                let f = &mut open.finding;
                f.window_end = t;
                f.event_count = k.events;
                if f.evidence.len() < MAX_EVIDENCE {
                    f.evidence.push(event_id.to_string());
                }
                f.details = details;
            }
            None => {
                // Published when the hour is over (`close_hourly`): by then the location's
                // other keys have shown whether the hour was busy for all of them.
                let place = Place::of_row(cols, row);
                let mut f = new_finding(rule, key, rule.severity, &place, (hour * HOUR_MS, t), k.events, vec![event_id.to_string()], now);
                f.details = details;
                k.open = Some(Tracked::new(f));
                self.surges.entry(surge_key(location, hour)).or_default().over += 1;
            }
        }
    }
}
