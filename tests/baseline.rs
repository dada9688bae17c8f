//! `api.volume_spike` on sites of every size: the floor scales with the key's own
//! history, so a small key's 10-30x hour fires and a large site's ordinary days stay quiet.

mod common;

use std::sync::Arc;

use seedwatch::pipeline::detect_source;
use seedwatch_detect::reference::{load_locations, Reference};
use seedwatch_detect::{load_rules, RuleEngine};
use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use seedwatch_schemas::Finding;

const HOUR: i64 = 3_600_000;
/// 2026-09-01 00:00 in Oakland (PDT, UTC-7; no clock change until November).
const DAY0: i64 = 1_788_246_000_000;

/// One API key's traffic: records per local hour of each day, spread over three calls.
struct Key {
    key_id: &'static str,
    hours: Vec<(i64, u64)>,
}

impl Key {
    fn new(key_id: &'static str) -> Self {
        Self { key_id, hours: Vec::new() }
    }

    /// `days` days from `first`, each local hour `volume(day, hour)` records (0: no calls).
    fn days(mut self, first: i64, days: i64, volume: impl Fn(i64, i64) -> u64) -> Self {
        for day in first..first + days {
            for hour in 0..24 {
                let v = volume(day, hour);
                if v > 0 {
                    self.hours.push((DAY0 + (day * 24 + hour) * HOUR, v));
                }
            }
        }
        self
    }

    /// One more hour: `records` at local `hour` of `day`.
    fn hour(mut self, day: i64, hour: i64, records: u64) -> Self {
        self.hours.push((DAY0 + (day * 24 + hour) * HOUR, records));
        self
    }

    fn lines(&self) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for (start, records) in &self.hours {
            let parts = [records / 3, records / 3, records - 2 * (records / 3)];
            for (i, part) in parts.iter().enumerate() {
                let t = start + 60_000 + i as i64 * 17 * 60_000;
                out.push((t, format!(
                    r#"{{"time":{t},"family":"api","system":"metrc","state":"CA","license":"C10-0000123-LIC","location":"oakland","key_id":"{}","integration":"flowhub","method":"GET","endpoint":"/packages/v2/active","status":200,"records":{part},"src_ip":"192.0.2.20"}}"#,
                    self.key_id
                )));
            }
        }
        out
    }
}

/// A repeatable wobble in [-1, 1] for day and hour.
fn wobble(day: i64, hour: i64) -> f64 {
    let x = ((day * 7919 + hour * 104_729) % 1000) as f64 / 1000.0;
    2.0 * x - 1.0
}

/// Open 09:00-21:00 local, `level` records an hour give or take 20%.
fn shop(level: f64) -> impl Fn(i64, i64) -> u64 {
    move |day, hour| if (9..21).contains(&hour) { (level * (1.0 + 0.2 * wobble(day, hour))) as u64 } else { 0 }
}

fn volume_spikes(keys: &[Key]) -> Vec<Finding> {
    volume_spikes_under(keys, None)
}

/// With `policy` (a policy.yaml text) instead of the defaults.
fn volume_spikes_under(keys: &[Key], policy: Option<&str>) -> Vec<Finding> {
    let dir = tempfile::tempdir().expect("tempdir");
    let locations = dir.path().join("locations.csv");
    std::fs::write(&locations, "location,license,state,system,timezone,open,close\noakland,C10-0000123-LIC,CA,metrc,America/Los_Angeles,09:00,21:00\n").expect("locations");
    let policy = policy.map(|text| {
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).expect("policy");
        seedwatch_detect::policy::load_policy(&path).expect("policy loads")
    });
    let reference = Arc::new(Reference { locations: load_locations(&locations).expect("locations"), policy: policy.unwrap_or_default(), ..Reference::default() });
    let rules: Vec<_> = load_rules(&common::repo().join("rules")).expect("rules").into_iter().filter(|r| r.id == "api.volume_spike").collect();
    let engine = RuleEngine::with_reference(rules, reference).expect("engine");
    let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"baseline-test-secret").expect("fp")));
    let mut lines: Vec<(i64, String)> = keys.iter().flat_map(Key::lines).collect();
    lines.sort();
    let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    detect_source(engine, decoder, Box::new(reader_source("baseline", std::io::Cursor::new(text.into_bytes())))).expect("detect").findings
}

fn hours_fired(findings: &[Finding]) -> Vec<(String, i64)> {
    findings.iter().map(|f| (f.subject.clone(), (f.window_start - DAY0).div_euclid(HOUR))).collect()
}

#[test]
fn a_small_keys_spike_fires_in_a_usually_silent_hour_and_in_a_busy_one() {
    // ~45 records an hour for two weeks, then 1,200 at 02:00 (26x) and 450 at 14:00 (10x).
    let night = Key::new("small-night").days(0, 14, shop(45.0)).hour(14, 2, 1_200).days(14, 1, shop(45.0));
    let day = Key::new("small-day").days(0, 14, shop(45.0)).days(14, 1, |d, h| if h == 14 { 450 } else { shop(45.0)(d, h) });
    let fired = hours_fired(&volume_spikes(&[night, day]));
    assert_eq!(fired, vec![("small-night".to_string(), 14 * 24 + 2), ("small-day".to_string(), 14 * 24 + 14)]);
}

#[test]
fn policy_overrides_a_baselines_parameters_for_a_state_or_a_system() {
    // The 26x hour of a small key in California fires by the rule's own ratio (2x).
    let keys = || [Key::new("small-night").days(0, 14, shop(45.0)).hour(14, 2, 1_200).days(14, 1, shop(45.0))];
    let fired = |policy: &str| hours_fired(&volume_spikes_under(&keys(), Some(policy))).len();
    assert_eq!(fired("defaults: {}\n"), 1);
    // Raised past this hour's ratio (1,200 against a floor of half its ~45 peak: ~50x) for California, or for Metrc: quiet. For another state or system: still fires.
    assert_eq!(fired("defaults: {}\nstates:\n  CA: {baseline: {ratio: 100}}\n"), 0);
    assert_eq!(fired("defaults: {}\nsystems:\n  metrc: {baseline: {ratio: 100}}\n"), 0);
    assert_eq!(fired("defaults: {}\nstates:\n  CO: {baseline: {ratio: 100}}\nsystems:\n  biotrack: {baseline: {ratio: 100}}\n"), 1);
    // The state's own value wins over its system's.
    assert_eq!(fired("defaults: {}\nstates:\n  CA: {baseline: {ratio: 3}}\nsystems:\n  metrc: {baseline: {ratio: 100}}\n"), 1);
    assert_eq!(fired("defaults: {}\nstates:\n  CA: {baseline: {min_volume: 2000}}\n"), 0);
}

#[test]
fn a_new_key_is_still_learning() {
    // Three days of history are not enough to know what is normal for it.
    let young = Key::new("young").days(0, 3, shop(45.0)).hour(3, 2, 1_200);
    assert_eq!(hours_fired(&volume_spikes(&[young])), vec![]);
}

#[test]
fn a_large_sites_ordinary_days_and_quiet_hours_stay_quiet() {
    // 5,000 records an hour in business hours; the night swings between 50 and 650.
    let large = |d: i64, h: i64| if (9..21).contains(&h) { shop(5_000.0)(d, h) } else { (350.0 + 300.0 * wobble(d, h)) as u64 };
    // A busy afternoon at 1.6x, and a night hour at 4x its own normal but far below the key's peak.
    let key = Key::new("large").days(0, 21, large).hour(21, 15, 8_000).hour(21, 3, 1_400);
    assert_eq!(hours_fired(&volume_spikes(&[key])), vec![]);
}

#[test]
fn a_monday_after_a_closed_sunday_stays_quiet() {
    // Closed on Sundays (2026-09-06 is day 5); Monday mornings catch up at 1.7x.
    let weekly = |d: i64, h: i64| match (d % 7, h) {
        (5, _) => 0,
        (6, 9) => (45.0 * 1.7) as u64,
        _ => shop(45.0)(d, h),
    };
    let key = Key::new("weekly").days(0, 28, weekly);
    assert_eq!(hours_fired(&volume_spikes(&[key])), vec![]);
}

#[test]
fn a_peak_across_most_keys_of_a_location_is_business_and_one_key_alone_is_not() {
    // Three registers at one store; on day 14 (a 4/20) every one moves 2.5x all afternoon.
    let four_twenty = |d: i64, h: i64| if d == 14 && (13..18).contains(&h) { (45.0 * 2.5) as u64 } else { shop(45.0)(d, h) };
    let keys = [Key::new("pos-1").days(0, 15, four_twenty), Key::new("pos-2").days(0, 15, four_twenty), Key::new("pos-3").days(0, 15, four_twenty)];
    assert_eq!(hours_fired(&volume_spikes(&keys)), vec![]);
    // The same afternoon at one register only is that key's spike.
    let keys = [Key::new("pos-1").days(0, 15, four_twenty), Key::new("pos-2").days(0, 15, shop(45.0)), Key::new("pos-3").days(0, 15, shop(45.0))];
    let fired = hours_fired(&volume_spikes(&keys));
    assert!(!fired.is_empty() && fired.iter().all(|(key, hour)| key == "pos-1" && (14 * 24 + 13..14 * 24 + 18).contains(hour)), "{fired:?}");
}
