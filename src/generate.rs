//! `seedwatch generate`: realistic synthetic logs with labelled incidents.
//!
//! Several locations in Metrc and BioTrack states, each with its POS
//! integration, employees, business hours in its own timezone and weeks of
//! ordinary traffic; then incidents modelled on the seed documents' real
//! examples (credential stuffing, a leaked key hammering the API, the Nevada
//! 4:20 sync backlog, the Colorado 60-record tampering, an ex-employee who
//! kept access) and look-alikes that must *not* alert. `truth.json` labels
//! each one with the rule that should (or should not) find it.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Days of history.
    pub days: u32,
    /// Number of locations.
    pub locations: usize,
    /// RNG seed: the same seed gives the same files.
    pub seed: u64,
    /// First day (UTC date).
    pub start: NaiveDate,
}

/// One labelled incident or look-alike in `truth.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TruthEntry {
    /// Stable id within the file.
    pub id: String,
    /// The rule that should find it (incident) or must stay quiet (look-alike).
    pub rule: String,
    /// Other rules that legitimately fire on the same events.
    #[serde(default)]
    pub also: Vec<String>,
    /// License the events belong to.
    pub license: String,
    /// Location.
    pub location: String,
    /// Subject the finding would name (user, key id, integration, actor).
    pub subject: String,
    /// First event (RFC 3339, UTC).
    pub start: String,
    /// Last event (RFC 3339, UTC).
    pub end: String,
    /// What happened, and which seed example it follows.
    pub description: String,
}

/// Contents of `truth.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct Truth {
    /// Generator parameters.
    pub seed: u64,
    /// Days of history.
    pub days: u32,
    /// Incidents that must be found.
    pub incidents: Vec<TruthEntry>,
    /// Look-alikes that must not be found by their rule.
    pub lookalikes: Vec<TruthEntry>,
    /// Malformed lines deliberately written (each must become a dead letter).
    pub bad_lines: u64,
    /// Raw API keys written in plain text by a misconfigured POS: none may reach the archive.
    pub raw_keys: Vec<String>,
    /// Events written (good lines).
    pub events: u64,
}

/// A site template: a real-looking operator location in a tracking-system state.
struct SiteTemplate {
    name: &'static str,
    state: &'static str,
    system: &'static str,
    tz: Tz,
    open: u32,
    close: u32,
    license_prefix: &'static str,
    integration: &'static str,
    /// Minutes between sync runs (state requirement: real-time states sync continuously).
    sync_every: u32,
}

const SITES: &[SiteTemplate] = &[
    SiteTemplate { name: "oakland", state: "CA", system: "metrc", tz: chrono_tz::America::Los_Angeles, open: 9 * 60, close: 21 * 60, license_prefix: "C10-00001", integration: "flowhub", sync_every: 5 },
    SiteTemplate { name: "denver", state: "CO", system: "metrc", tz: chrono_tz::America::Denver, open: 8 * 60, close: 22 * 60, license_prefix: "402R-0", integration: "dutchie", sync_every: 15 },
    SiteTemplate { name: "las-vegas", state: "NV", system: "metrc", tz: chrono_tz::America::Los_Angeles, open: 0, close: 24 * 60, license_prefix: "RD0", integration: "treez", sync_every: 15 },
    SiteTemplate { name: "seattle", state: "WA", system: "biotrack", tz: chrono_tz::America::Los_Angeles, open: 8 * 60, close: 23 * 60, license_prefix: "4123", integration: "dutchie", sync_every: 5 },
    SiteTemplate { name: "detroit", state: "MI", system: "metrc", tz: chrono_tz::America::Detroit, open: 9 * 60, close: 21 * 60, license_prefix: "PC-000", integration: "treez", sync_every: 15 },
    SiteTemplate { name: "boston", state: "MA", system: "metrc", tz: chrono_tz::America::New_York, open: 10 * 60, close: 20 * 60, license_prefix: "MR28", integration: "flowhub", sync_every: 60 },
    SiteTemplate { name: "chicago", state: "IL", system: "biotrack", tz: chrono_tz::America::Chicago, open: 9 * 60, close: 21 * 60, license_prefix: "284.0", integration: "jane", sync_every: 60 },
    SiteTemplate { name: "portland", state: "OR", system: "metrc", tz: chrono_tz::America::Los_Angeles, open: 8 * 60, close: 22 * 60, license_prefix: "050-10", integration: "flowhub", sync_every: 60 },
    SiteTemplate { name: "albuquerque", state: "NM", system: "biotrack", tz: chrono_tz::America::Denver, open: 8 * 60, close: 22 * 60, license_prefix: "CCD-", integration: "dutchie", sync_every: 60 },
    SiteTemplate { name: "brooklyn", state: "NY", system: "biotrack", tz: chrono_tz::America::New_York, open: 10 * 60, close: 22 * 60, license_prefix: "OCM-AUCP-", integration: "jane", sync_every: 60 },
];

const FIRST: &[&str] = &["maria", "james", "aisha", "tom", "lin", "diego", "sara", "kofi", "emma", "raj", "nina", "omar", "kate", "luis", "ivy", "sam", "ana", "ben", "zoe", "eli"];
const LAST: &[&str] = &["lopez", "chen", "okafor", "smith", "nguyen", "garcia", "kim", "patel", "brown", "silva", "novak", "reyes"];

#[derive(Debug, Clone)]
struct Employee {
    user: String,
    role: &'static str,
    /// Weekdays worked (Mon = 0).
    days: [bool; 7],
    home_ip: Option<String>,
}

#[derive(Debug, Clone)]
struct Site {
    location: String,
    license: String,
    state: &'static str,
    system: &'static str,
    tz: Tz,
    open: u32,
    close: u32,
    integration: &'static str,
    sync_every: u32,
    office_ip: String,
    pos_ip: String,
    key_id: String,
    /// Set when this site's POS logs its raw key instead of a key id.
    raw_key: Option<String>,
    employees: Vec<Employee>,
    /// API calls per open hour at the daily peak.
    peak_calls: f64,
}

struct Writer {
    lines: Vec<(i64, String)>,
    truth: Truth,
}

impl Writer {
    fn push(&mut self, t: i64, v: Value) {
        self.lines.push((t, v.to_string()));
    }

    /// Records moved by `key_id` in the UTC hour `hour` (hours since the epoch).
    fn api_hour_records(&self, key_id: &str, hour: i64) -> f64 {
        let marker = format!("\"key_id\":\"{key_id}\"");
        self.lines
            .iter()
            .filter(|(t, line)| t.div_euclid(3_600_000) == hour && line.contains(&marker))
            .filter_map(|(_, line)| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| v["records"].as_f64())
            .sum()
    }

    /// Median of the same UTC hour on the previous `days` active days: what the detector calls normal.
    fn api_hour_median(&self, key_id: &str, hour: i64, days: i64) -> f64 {
        let mut past: Vec<f64> = (1..=days).map(|d| self.api_hour_records(key_id, hour - 24 * d)).filter(|v| *v > 0.0).collect();
        past.sort_by(f64::total_cmp);
        match past.len() {
            0 => 0.0,
            n if n % 2 == 1 => past[n / 2],
            n => (past[n / 2 - 1] + past[n / 2]) / 2.0,
        }
    }

    /// Add calls to `key_id`'s hour until it moves `factor` x its normal records.
    fn inflate_hour(&mut self, site: &Site, t0: i64, factor: f64) -> (i64, i64) {
        let hour = t0.div_euclid(3_600_000);
        let target = factor * self.api_hour_median(&site.key_id, hour, 28);
        let mut total = self.api_hour_records(&site.key_id, hour);
        let mut t = hour * 3_600_000 + 60_000;
        let start = t;
        while total + 150.0 <= target {
            self.push(t, api(site, t, "GET", "/packages/v2/active", 200, 150, &site.pos_ip, Some(&site.key_id)));
            total += 150.0;
            t += 50_000;
        }
        (start, t)
    }

    /// Drop every sync line of `license` in `[from, to]`: an outage.
    fn drop_syncs(&mut self, license: &str, from: i64, to: i64) {
        let license = format!("\"license\":\"{license}\"");
        self.lines.retain(|(t, line)| !(*t >= from && *t <= to && line.contains("\"family\":\"sync\"") && line.contains(&license)));
    }

    /// Drop ordinary failed logins of `user` in `[from, to]`, so that a
    /// look-alike is exactly what its label says and no random typo tips it over.
    fn quiet_failures(&mut self, user: &str, from: i64, to: i64) {
        let user = format!("\"user\":\"{user}\"");
        self.lines.retain(|(t, line)| !(*t >= from && *t <= to && line.contains(&user) && line.contains("\"outcome\":\"failure\"")));
    }
}

fn rfc3339(tz: Tz, t: i64) -> String {
    match tz.timestamp_millis_opt(t).single() {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        None => t.to_string(),
    }
}

fn utc(t: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(t).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Epoch ms of a local wall-clock time at a site (earliest on DST overlaps).
fn local(site: &Site, day: NaiveDate, minute: u32) -> i64 {
    let date = day + Duration::days((minute / 1440) as i64);
    let m = minute % 1440;
    let naive = date.and_hms_opt(m / 60, m % 60, 0).unwrap_or_default();
    match site.tz.from_local_datetime(&naive).earliest() {
        Some(d) => d.timestamp_millis(),
        // A time skipped by DST: one hour later exists.
        None => site.tz.from_local_datetime(&(naive + Duration::hours(1))).earliest().map_or(0, |d| d.timestamp_millis()),
    }
}

fn base(site: &Site, family: &str, t: i64, as_epoch: bool) -> Value {
    json!({
        "time": if as_epoch { json!(t) } else { json!(rfc3339(site.tz, t)) },
        "family": family,
        "system": site.system,
        "state": site.state,
        "license": site.license,
        "location": site.location,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn login(site: &Site, t: i64, user: &str, ip: &str, ok: bool, reason: Option<&str>) -> Value {
    let mut v = merge(base(site, "login", t, false), json!({
        "user": user, "outcome": if ok { "success" } else { "failure" }, "src_ip": ip,
        "mfa": ok, "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
    }));
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}

fn api(site: &Site, t: i64, method: &str, endpoint: &str, status: u16, records: u64, ip: &str, key: Option<&str>) -> Value {
    let mut v = merge(base(site, "api", t, true), json!({
        "integration": site.integration, "method": method, "endpoint": endpoint, "status": status,
        "records": records, "bytes": 300 + records * 180, "latency_ms": 40 + records % 200, "src_ip": ip,
    }));
    match (key, &site.raw_key) {
        (Some(k), _) => v["key_id"] = json!(k),
        (None, Some(raw)) => v["api_key"] = json!(raw),
        (None, None) => v["key_id"] = json!(site.key_id),
    }
    v
}

fn sync(site: &Site, t: i64, ok: bool, pending: u64, lag: u64, error: Option<&str>) -> Value {
    let mut v = merge(base(site, "sync", t, false), json!({
        "integration": site.integration, "outcome": if ok { "success" } else { "failure" },
        "pending": pending, "lag_seconds": lag,
    }));
    if let Some(e) = error {
        v["error"] = json!(e);
    }
    v
}

fn audit(site: &Site, t: i64, actor: &str, action: &str, extra: Value) -> Value {
    merge(merge(base(site, "audit", t, false), json!({"actor": actor, "action": action, "src_ip": site.office_ip})), extra)
}

fn build_sites(rng: &mut ChaCha8Rng, n: usize) -> Vec<Site> {
    (0..n)
        .map(|i| {
            let t = &SITES[i % SITES.len()];
            let round = i / SITES.len();
            let location = if round == 0 { t.name.to_string() } else { format!("{}-{}", t.name, round + 1) };
            let license = format!("{}{:04}", t.license_prefix, 1000 + i * 37 + rng.random_range(0..30));
            let employees = (0..rng.random_range(6..10))
                .map(|e| {
                    let user = format!("{}.{}{}", FIRST[rng.random_range(0..FIRST.len())], LAST[rng.random_range(0..LAST.len())], i * 10 + e);
                    let role = match e {
                        0 => "admin",
                        1 | 2 => "manager",
                        _ => "data_entry",
                    };
                    let off = rng.random_range(0..7);
                    let mut days = [true; 7];
                    days[off] = false;
                    days[(off + 3) % 7] = false;
                    let home_ip = (e < 3).then(|| format!("198.51.{}.{}", 100 + i, 10 + e));
                    Employee { user, role, days, home_ip }
                })
                .collect();
            Site {
                location,
                license,
                state: t.state,
                system: t.system,
                tz: t.tz,
                open: t.open,
                close: t.close,
                integration: t.integration,
                sync_every: t.sync_every,
                office_ip: format!("203.0.113.{}", 10 + i),
                pos_ip: format!("192.0.2.{}", 20 + i),
                key_id: format!("{}-{}-{:02}", t.integration, t.name, i + 1),
                raw_key: None,
                employees,
                peak_calls: rng.random_range(40.0..90.0),
            }
        })
        .collect()
}

/// Diurnal shape of sales, peaking at 4:20 pm local.
fn activity(minute_of_day: u32) -> f64 {
    let h = minute_of_day as f64 / 60.0;
    let peak = (-((h - 16.33) / 3.0).powi(2)).exp();
    0.25 + 0.75 * peak
}

fn normal_traffic(w: &mut Writer, rng: &mut ChaCha8Rng, site: &Site, day: NaiveDate, day_index: u32) {
    let weekday = day.weekday().num_days_from_monday() as usize;
    // Logins: each scheduled employee logs in near opening, and again after a break.
    for emp in &site.employees {
        if !emp.days[weekday] {
            continue;
        }
        let span = site.close.saturating_sub(site.open).max(60);
        let shift_start = if site.close - site.open >= 24 * 60 { rng.random_range(6 * 60..16 * 60) } else { site.open + rng.random_range(0..span.min(180)) };
        let ip = match (&emp.home_ip, rng.random_bool(0.1)) {
            (Some(home), true) => home.as_str(),
            _ => site.office_ip.as_str(),
        };
        let t = local(site, day, shift_start) + rng.random_range(0..60_000);
        if rng.random_bool(0.03) {
            w.push(t - 40_000, login(site, t - 40_000, &emp.user, ip, false, Some("invalid password")));
        }
        w.push(t, login(site, t, &emp.user, ip, true, None));
        // In the first week people who work from home do so at least once a
        // day, so their usual addresses are known before alerts start.
        let settling_in = day_index < 7 && emp.home_ip.is_some();
        if settling_in || rng.random_bool(0.5) {
            let again = (shift_start + rng.random_range(180..300)).min(site.close.saturating_sub(10).max(shift_start + 1));
            let t2 = local(site, day, again) + rng.random_range(0..60_000);
            let ip2 = if settling_in { emp.home_ip.as_deref().unwrap_or(ip) } else { ip };
            w.push(t2, login(site, t2, &emp.user, ip2, true, None));
        }
    }
    // API calls from the POS integration, shaped by the day's sales.
    let endpoints: [(&str, &str, u64, u64); 4] = [
        ("POST", "/sales/v2/receipts", 1, 6),
        ("GET", "/packages/v2/active", 20, 220),
        ("GET", "/items/v2/active", 10, 120),
        ("PUT", "/packages/v2/adjust", 1, 3),
    ];
    let (open, close) = (site.open, site.close);
    for hour_start in (open..close).step_by(60) {
        let rate = site.peak_calls * activity(hour_start + 30) * if close - open >= 24 * 60 && !(8 * 60..23 * 60).contains(&hour_start) { 0.3 } else { 1.0 };
        let calls = (rate * rng.random_range(0.85..1.15)).round() as u32;
        for _ in 0..calls {
            let t = local(site, day, hour_start) + rng.random_range(0..3_600_000);
            let (method, endpoint, lo, hi) = endpoints[match rng.random_range(0..100) {
                0..=59 => 0,
                60..=79 => 1,
                80..=94 => 2,
                _ => 3,
            }];
            let status = if rng.random_bool(0.004) { 500 } else if rng.random_bool(0.002) { 429 } else { 200 };
            let records = if status == 200 { rng.random_range(lo..=hi) } else { 0 };
            w.push(t, api(site, t, method, endpoint, status, records, &site.pos_ip, None));
        }
    }
    // Sync runs at the state's cadence, around the clock (POS keeps syncing overnight),
    // stepped in real time so that the day DST ends has no gap.
    let day_end = local(site, day + Duration::days(1), 0);
    let open_start = local(site, day, site.open);
    let open_end = local(site, day, site.close);
    let mut t = local(site, day, 0) + rng.random_range(0..site.sync_every as i64 * 60_000);
    while t < day_end {
        let at = t + rng.random_range(0..20_000);
        let pending = if at >= open_start && at < open_end { rng.random_range(0..4) } else { 0 };
        w.push(at, sync(site, at, true, pending, pending * 20, None));
        t += site.sync_every as i64 * 60_000;
    }
    // A few inventory adjustments by managers.
    for _ in 0..rng.random_range(0..4) {
        let manager = &site.employees[rng.random_range(1..3)];
        let t = local(site, day, site.open + rng.random_range(30..240)) + rng.random_range(0..60_000);
        w.push(t, audit(site, t, &manager.user, "inventory_adjusted", json!({"target": format!("1A4FF0{:010}", rng.random_range(0..9_999_999u64)), "records": rng.random_range(1..5)})));
    }
}

fn entry(id: &str, rule: &str, site: &Site, subject: &str, start: i64, end: i64, description: &str) -> TruthEntry {
    TruthEntry {
        id: id.into(),
        rule: rule.into(),
        also: Vec::new(),
        license: site.license.clone(),
        location: site.location.clone(),
        subject: subject.into(),
        start: utc(start),
        end: utc(end),
        description: description.into(),
    }
}

/// Inject the labelled incidents and look-alikes into the last week.
fn incidents(w: &mut Writer, sites: &[Site], opts: &GenerateOptions) {
    let n = sites.len();
    let last = opts.start + Duration::days(opts.days as i64 - 1);
    let day = |back: i64| last - Duration::days(back);
    let s = |i: usize| &sites[i % n];

    // Credential stuffing: 7 failures in 10 minutes on the admin of site 0 (lockout after 5).
    let site = s(0);
    let admin = site.employees[0].user.clone();
    let t0 = local(site, day(5), 14 * 60 + 7);
    for k in 0..7 {
        let t = t0 + k * 85_000;
        w.push(t, login(site, t, &admin, "185.220.101.34", false, Some("invalid password")));
    }
    let mut e = entry("lockout-stuffing", "login.lockout", site, &admin, t0, t0 + 6 * 85_000, "7 failed logins in 10 min from a Tor exit (2.2.3: lockout after 5)");
    e.also = vec!["login.failed_burst".into()];
    w.truth.incidents.push(e);

    // Failed burst: 4 failures in 12 minutes for a manager of site 1.
    let site = s(1);
    let user = site.employees[1].user.clone();
    let t0 = local(site, day(4), 11 * 60 + 40);
    for k in 0..4 {
        let t = t0 + k * 4 * 60_000;
        w.push(t, login(site, t, &user, "45.83.64.12", false, Some("invalid password")));
    }
    w.truth.incidents.push(entry("failed-burst", "login.failed_burst", site, &user, t0, t0 + 12 * 60_000, "4 failed logins in 12 min (5.1: alert on 3+)"));

    // Look-alike: two typos then success (below threshold) at site 2.
    let site = s(2);
    let user = site.employees[3].user.clone();
    let t0 = local(site, day(3), 10 * 60 + 5);
    w.quiet_failures(&user, t0 - 2 * 3_600_000, t0 + 2 * 3_600_000);
    w.push(t0, login(site, t0, &user, &site.office_ip, false, Some("invalid password")));
    w.push(t0 + 30_000, login(site, t0 + 30_000, &user, &site.office_ip, false, Some("invalid password")));
    w.push(t0 + 70_000, login(site, t0 + 70_000, &user, &site.office_ip, true, None));
    w.truth.lookalikes.push(entry("two-typos", "login.failed_burst", site, &user, t0, t0 + 70_000, "2 failures then success: below the 3-failure threshold"));

    // Shared account: one login used from 4 addresses within 6 minutes (001 mistake 3).
    let site = s(3);
    let shared = format!("frontdesk.{}", site.location);
    let t0 = local(site, day(2), 12 * 60 + 2);
    for (k, ip) in ["203.0.113.201", "203.0.113.202", "198.51.100.77", "203.0.113.203"].iter().enumerate() {
        let t = t0 + k as i64 * 90_000;
        w.push(t, login(site, t, &shared, ip, true, None));
    }
    w.truth.incidents.push(entry("shared-account", "login.shared_account", site, &shared, t0, t0 + 270_000, "one account from 4 IPs in 6 min (001 mistake 3: shared logins)"));

    // Leaked Metrc key hammering the API: 14 x 401 in 40 minutes at site 4 (2.4.4: 10+ per hour).
    let site = s(4);
    let t0 = local(site, day(3), 15 * 60 + 10);
    let key = site.key_id.clone();
    for k in 0..14 {
        let t = t0 + k * 170_000;
        w.push(t, api(site, t, "GET", "/packages/v2/active", 401, 0, "91.132.147.5", Some(&key)));
    }
    let system = site.system;
    w.truth.incidents.push(entry("api-key-abuse", "api.failed_burst", site, &key, t0, t0 + 13 * 170_000, &format!("14 failed calls in 40 min with one {system} key from an unknown host (2.4.4)")));
    w.truth.incidents.push(entry("api-new-ip", "api.new_ip", site, &key, t0, t0, "the same key, first seen from 91.132.147.5 (2.4.4: API calls from new IP)"));

    // BioTrack: 6 auth failures in 30 minutes (3.4.2: 5+ per hour) at the first BioTrack site.
    if let Some(site) = sites.iter().find(|s| s.system == "biotrack") {
        let t0 = local(site, day(2), 13 * 60 + 20);
        let key = site.key_id.clone();
        for k in 0..6 {
            let t = t0 + k * 300_000;
            w.push(t, api(site, t, "POST", "/v1/sales", 401, 0, "91.132.147.9", Some(&key)));
        }
        let mut e = entry("biotrack-auth-failures", "api.failed_burst", site, &key, t0, t0 + 25 * 60_000, "6 authentication failures in 30 min on BioTrack (3.4.2: 5+ per hour)");
        e.also = vec!["api.new_ip".into()];
        w.truth.incidents.push(e);
    }

    // Look-alike: a Metrc key with 6 failures in an hour (Metrc threshold is 10).
    if let Some(site) = sites.iter().filter(|s| s.system == "metrc").nth(2) {
        let t0 = local(site, day(1), 16 * 60 + 2);
        for k in 0..6 {
            let t = t0 + k * 540_000;
            w.push(t, api(site, t, "POST", "/sales/v2/receipts", 500, 0, &site.pos_ip, Some(&site.key_id)));
        }
        w.truth.lookalikes.push(entry("metrc-six-failures", "api.failed_burst", site, &site.key_id, t0, t0 + 45 * 60_000, "6 failed Metrc calls in an hour: below Metrc's 10"));
    }

    // Bulk export through the API (2.4.4 / 6.1): one call returning 48,000 packages, off hours.
    let site = s(1);
    let t0 = local(site, day(1), 23 * 60 + 40);
    w.push(t0, api(site, t0, "GET", "/packages/v2/export", 200, 48_000, "91.132.147.5", Some(&site.key_id)));
    let mut e = entry("api-bulk-export", "api.bulk_export", site, &site.key_id, t0, t0, "48,000 records in one export call at 23:40 (6.1: bulk export is critical)");
    // 48,000 records in an hour the key is usually silent in is also 2.4.4's unusual volume.
    e.also = vec!["api.off_hours".into(), "api.new_ip".into(), "api.volume_spike".into()];
    w.truth.incidents.push(e);

    // A vendor nobody configured starts calling the API for site 1 (3.4.2: new integration source).
    let site = s(1);
    let t0 = local(site, day(2), 14 * 60 + 12);
    for k in 0..3 {
        let t = t0 + k * 60_000;
        w.push(t, merge(api(site, t, "GET", "/packages/v2/active", 200, 180, "91.132.147.5", Some("greenbits-sync-01")), json!({"integration": "greenbits"})));
    }
    w.truth.incidents.push(entry("new-integration", "api.new_integration", site, "greenbits", t0, t0 + 120_000, "an unknown integration (greenbits) reading packages (3.4.2, 5.1)"));

    // The Nevada 4:20 rush: sync timeouts, backlog growing to 47 over 3 hours (001 mistake 2).
    let site = sites.iter().find(|s| s.state == "NV").unwrap_or(s(2));
    let t0 = local(site, day(4), 16 * 60 + 20);
    // Every run fails while the backlog grows: no successful sync in between.
    w.drop_syncs(&site.license, t0, t0 + 12 * 15 * 60_000);
    for k in 0..12 {
        let t = t0 + k * 15 * 60_000 + 3_000;
        let pending = 5 + k as u64 * 4 - (k as u64 / 11);
        w.push(t, sync(site, t, false, pending, (k as u64 + 1) * 900, Some("timeout waiting for tracking API")));
    }
    w.truth.incidents.push(entry("sync-backlog-420", "sync.failure", site, site.integration, t0, t0 + 11 * 15 * 60_000, "sync timeouts from 4:20 pm (001: Nevada 2024)"));
    w.truth.incidents.push(entry("sync-backlog-47", "sync.backlog", site, site.integration, t0, t0 + 11 * 15 * 60_000, "backlog of pending transactions growing past 40 to 49 (001: Nevada 2024 reached 47)"));
    // Look-alike: a Colorado POS catching up after a bulk import, its backlog above 40 but draining.
    let site = sites.iter().find(|s| s.state == "CO").unwrap_or(s(1));
    let t0 = local(site, day(5), 10 * 60 + 2);
    w.drop_syncs(&site.license, t0 - 15 * 60_000, t0 + 6 * 15 * 60_000);
    for (k, pending) in [58u64, 51, 44, 37, 22, 9].into_iter().enumerate() {
        let t = t0 + k as i64 * 15 * 60_000;
        w.push(t, sync(site, t, true, pending, pending * 20, None));
    }
    w.truth.lookalikes.push(entry("draining-backlog", "sync.backlog", site, site.integration, t0, t0 + 5 * 15 * 60_000, "58 pending transactions falling to 9: a backlog above 40 that is draining"));

    // Compromised admin: off-hours user creation, role escalation, MFA disabled, data export (6.1).
    let site = s(0);
    let admin = site.employees[0].user.clone();
    let t0 = local(site, day(2), 2 * 60 + 13);
    let ghost = format!("svc.{}.sync", site.location);
    w.push(t0, audit(site, t0, &admin, "user_created", json!({"target": &ghost, "role_after": "admin", "src_ip": "185.220.101.34"})));
    w.truth.incidents.push(entry("user-created-off-hours", "audit.user_created", site, &ghost, t0, t0, "admin account created at 02:13 from a Tor exit (6.1: user created without authorization)"));
    let t1 = t0 + 4 * 60_000;
    let victim = site.employees[4].user.clone();
    w.push(t1, audit(site, t1, &admin, "role_changed", json!({"target": &victim, "role_before": "data_entry", "role_after": "admin", "src_ip": "185.220.101.34"})));
    w.truth.incidents.push(entry("role-escalation", "audit.role_changed", site, &victim, t1, t1, "data_entry raised to admin at night (5.1: permissions changed)"));
    let t2 = t1 + 3 * 60_000;
    w.push(t2, audit(site, t2, &admin, "mfa_disabled", json!({"target": admin, "src_ip": "185.220.101.34"})));
    w.truth.incidents.push(entry("mfa-disabled", "audit.mfa_disabled", site, &admin, t2, t2, &format!("MFA disabled on an admin in {} (6.1; MFA is required in CA)", site.state)));
    let t3 = t2 + 9 * 60_000;
    w.push(t3, audit(site, t3, &admin, "data_exported", json!({"target": "packages", "records": 52_000, "src_ip": "185.220.101.34"})));
    w.truth.incidents.push(entry("data-export", "audit.data_export", site, &admin, t3, t3, "52,000 package records exported (6.1: bulk data export)"));
    let t4 = t3 + 60_000;
    let reset = site.employees[2].user.clone();
    w.push(t4, audit(site, t4, &admin, "password_reset", json!({"target": &reset, "src_ip": "185.220.101.34"})));
    w.truth.incidents.push(entry("password-reset", "audit.password_reset", site, &reset, t4, t4, "unexpected password reset of a manager at night (6.1)"));

    // The attacker's own login, at 02:05 before the admin changes above (5.1: logins outside business hours).
    let site = s(0);
    let t0 = local(site, day(2), 2 * 60 + 5);
    w.push(t0, login(site, t0, &admin, "185.220.101.34", true, None));
    w.truth.incidents.push(entry("off-hours-login", "login.off_hours", site, &admin, t0, t0, "admin login at 02:05 local from a Tor exit (5.1)"));
    w.truth.incidents.push(entry("new-ip-login", "login.new_ip", site, &admin, t0, t0, "admin's first login from a Tor exit (5.1, 6.1: login from unknown IP)"));

    // Look-alikes: a late-evening login inside hours, and a 3 am login at a 24-hour site.
    let manager = site.employees[1].user.clone();
    let t0 = local(site, day(1), site.close.saturating_sub(20));
    w.push(t0, login(site, t0, &manager, &site.office_ip, true, None));
    w.truth.lookalikes.push(entry("late-evening-login", "login.off_hours", site, &manager, t0, t0, "login 20 minutes before closing: inside hours"));
    if let Some(site) = sites.iter().find(|s| s.close - s.open >= 24 * 60) {
        let user = site.employees[2].user.clone();
        let t0 = local(site, day(1), 3 * 60 + 10);
        w.push(t0, login(site, t0, &user, &site.office_ip, true, None));
        w.truth.lookalikes.push(entry("night-shift-24h", "login.off_hours", site, &user, t0, t0, "3 am login at a 24-hour site"));
    }

    // API calls at 3 am from the POS of a store that closes at night (2.4.4: review next business day).
    let site = s(4);
    let t0 = local(site, day(0), 3 * 60);
    for k in 0..5 {
        let t = t0 + k * 240_000;
        w.push(t, api(site, t, "GET", "/packages/v2/active", 200, 150, &site.pos_ip, Some(&site.key_id)));
    }
    w.truth.incidents.push(entry("api-off-hours", "api.off_hours", site, &site.key_id, t0, t0 + 16 * 60_000, "5 API calls between 03:00 and 03:16 local"));

    // A manager terminated four months ago logs in again (Massachusetts 2023; 001 mistake 5).
    let site = &sites[n - 1];
    let t0 = local(site, day(1), 11 * 60);
    w.push(t0, login(site, t0, "derek.former", "98.51.7.20", true, None));
    w.truth.incidents.push(entry("terminated-login", "login.terminated_user", site, "derek.former", t0, t0, "login by a manager terminated 4 months earlier (1.2: insider threats)"));

    // A real-time state's POS stops syncing for 9 hours (000 2.5.1: escalate at 1 h, 4 h, 8 h).
    let site = s(0);
    let (from, to) = (local(site, day(3), 10 * 60), local(site, day(3), 19 * 60));
    w.drop_syncs(&site.license, from, to);
    w.truth.incidents.push(entry("sync-outage", "sync.lag", site, site.integration, from, to, &format!("no sync for 9 h in {} (real-time state; 2.5.1 ladder ends at 8 h+)", site.state)));
    // Look-alike: a 3-hour gap in Michigan, whose limit is 15 min + 8 h grace.
    if let Some(site) = sites.iter().find(|s| s.state == "MI") {
        let (from, to) = (local(site, day(2), 11 * 60), local(site, day(2), 14 * 60));
        w.drop_syncs(&site.license, from, to);
        w.truth.lookalikes.push(entry("mi-3h-gap", "sync.lag", site, site.integration, from, to, "3 h without sync where the limit is 8 h 15 min"));
    }

    // A key moving 3x its normal records in one hour (2.4.4: unusual data volume, 2x normal).
    let site = s(3).clone();
    let (from, to) = w.inflate_hour(&site, local(&site, day(1), 15 * 60), 3.0);
    w.truth.incidents.push(entry("volume-spike", "api.volume_spike", &site, &site.key_id, from, to, "3x the key's normal records for 15:00 (2.4.4: unusual data volume)"));
    // Look-alike: a busy hour at 1.6x normal.
    let site = s(5).clone();
    let (from, to) = w.inflate_hour(&site, local(&site, day(1), 14 * 60), 1.6);
    w.truth.lookalikes.push(entry("busy-hour", "api.volume_spike", &site, &site.key_id, from, to, "1.6x the normal records for the hour: below 2x"));

    // Key history: every POS key was created before the data starts. Denver's is 75 days old at
    // the end (Colorado rotates every 60: overdue); the others were rotated 30 days before the
    // start, and Oakland's previous key was revoked properly (look-alike).
    let first = local(s(0), opts.start, 0);
    for (i, site) in sites.iter().enumerate() {
        let admin = site.employees[0].user.clone();
        let key = site.key_id.clone();
        let created = if site.state == "CO" { local(site, day(0), 12 * 60) - 75 * 86_400_000 } else { first - 30 * 86_400_000 + i as i64 * 60_000 };
        w.push(created, audit(site, created, &admin, "api_key_created", json!({"target": key})));
        if site.state == "CO" {
            w.truth.incidents.push(entry("key-rotation-overdue", "audit.key_rotation_overdue", site, &key, created + 60 * 86_400_000, created + 75 * 86_400_000, "POS key 75 days old where Colorado requires rotation every 60 (001 mistake 1)"));
        }
    }
    let site = s(0);
    let old_key = format!("{}-previous", site.key_id);
    let (born, revoked) = (first - 150 * 86_400_000, first - 30 * 86_400_000 - 3_600_000);
    w.push(born, audit(site, born, &site.employees[0].user, "api_key_created", json!({"target": old_key})));
    w.push(revoked, audit(site, revoked, &site.employees[0].user, "api_key_revoked", json!({"target": old_key})));
    w.truth.lookalikes.push(entry("rotated-key", "audit.key_rotation_overdue", site, &old_key, born, revoked, "a key created 150 days ago and revoked at rotation"));

    // Ex-employee deactivated properly: the deactivation itself is an audit finding.
    let site = s(5);
    let t0 = local(site, day(6), 17 * 60 + 30);
    let manager = site.employees[1].user.clone();
    let leaver = site.employees[site.employees.len() - 1].user.clone();
    w.push(t0, audit(site, t0, &manager, "user_deactivated", json!({"target": &leaver})));
    w.truth.incidents.push(entry("user-deactivated", "audit.user_deactivated", site, &leaver, t0, t0, "a departing employee deactivated (5.1: review every deactivation)"));

    // Tampering: 62 inventory adjustments in 8 minutes by one user (Colorado 2024; 001 mistake 5).
    let site = s(1);
    let user = site.employees[3].user.clone();
    let t0 = local(site, day(0), 19 * 60 + 3);
    for k in 0..62 {
        let t = t0 + k * 7_700;
        w.push(t, audit(site, t, &user, "inventory_adjusted", json!({"target": format!("1A4FF0300000{:04}", 2200 + k), "records": 1})));
    }
    w.truth.incidents.push(entry("bulk-inventory-changes", "audit.bulk_changes", site, &user, t0, t0 + 61 * 7_700, "62 inventory records changed in 8 min by one user (001: 50+ changes in 10 min)"));

    // Look-alike: a busy manager makes 30 adjustments in 10 minutes.
    let site = s(2);
    let user = site.employees[1].user.clone();
    let t0 = local(site, day(1), 10 * 60 + 30);
    for k in 0..30 {
        let t = t0 + k * 19_000;
        w.push(t, audit(site, t, &user, "inventory_adjusted", json!({"target": format!("1A4FF0400000{:04}", k), "records": 1})));
    }
    w.truth.lookalikes.push(entry("busy-manager", "audit.bulk_changes", site, &user, t0, t0 + 29 * 19_000, "30 adjustments in 10 min: below 50"));

}

/// Generate into `out`: `events.ndjson`, `locations.csv`, `roster.csv`, `truth.json`.
pub fn generate(out: &Path, opts: &GenerateOptions) -> Result<Truth> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut sites = build_sites(&mut rng, opts.locations.max(1));
    // The plaintext-key mistake: the third site's POS logs its raw key.
    let raw_key_site = 2 % sites.len();
    let raw: String = (0..40).map(|_| char::from(b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"[rng.random_range(0..57)])).collect();
    sites[raw_key_site].raw_key = Some(raw.clone());

    let mut w = Writer { lines: Vec::new(), truth: Truth { seed: opts.seed, days: opts.days, ..Truth::default() } };
    w.truth.raw_keys.push(raw);
    for d in 0..opts.days {
        let day = opts.start + Duration::days(d as i64);
        for site in &sites {
            normal_traffic(&mut w, &mut rng, site, day, d);
        }
    }
    incidents(&mut w, &sites, opts);
    // Identical lines are one event (the archive dedups them), so write each once.
    w.lines.sort();
    w.lines.dedup();
    w.truth.events = w.lines.len() as u64;

    // Collector glitches: lines that must be dead-lettered, not dropped.
    let mid = w.lines.len() / 2;
    let bad = [
        "{\"time\":\"2026-11-02T10:00:00-08:00\",\"family\":\"login\",\"user\":\"trunc".to_string(),
        format!("{{\"time\":1762300000,\"family\":\"login\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"{}\",\"user\":\"a\",\"outcome\":\"success\",\"src_ip\":\"203.0.113.9\"}}", sites[0].license),
        format!("{{\"time\":\"2026-11-02T10:00:00Z\",\"family\":\"audit\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"{}\",\"actor\":\"x\",\"action\":\"teleported\"}}", sites[0].license),
        "GET /packages/v2/active HTTP/1.1 200".to_string(),
        format!("{{\"time\":\"2026-11-02T10:00:00Z\",\"family\":\"api\",\"system\":\"metrc\",\"state\":\"CA\",\"license\":\"{}\",\"integration\":\"flowhub\",\"method\":\"GET\",\"endpoint\":\"/x\",\"status\":200,\"src_ip\":\"10.0.0.300\",\"api_key\":\"{}\"}}", sites[0].license, w.truth.raw_keys[0]),
    ];
    w.truth.bad_lines = bad.len() as u64;

    let path = out.join("events.ndjson");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut file = BufWriter::with_capacity(1 << 20, file);
    for (i, (_, line)) in w.lines.iter().enumerate() {
        if i == mid {
            for b in &bad {
                writeln!(file, "{b}")?;
            }
        }
        writeln!(file, "{line}")?;
    }
    file.flush()?;

    let mut csv = String::from("location,license,state,system,timezone,open,close\n");
    for s in &sites {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let _ = writeln!(csv, "{},{},{},{},{},{},{}", s.location, s.license, s.state, s.system, s.tz.name(), hm(s.open), hm(s.close));
    }
    fs::write(out.join("locations.csv"), csv)?;

    let mut roster = String::from("user,location,role,status,terminated_at\n");
    for s in &sites {
        for e in &s.employees {
            let _ = writeln!(roster, "{},{},{},active,", e.user, s.location, e.role);
        }
        let _ = writeln!(roster, "frontdesk.{},{},data_entry,active,", s.location, s.location);
    }
    // A manager let go four months ago whose account was never disabled (001 mistake 5).
    let _ = writeln!(roster, "derek.former,{},manager,terminated,{}", sites[sites.len() - 1].location, utc(local(&sites[0], opts.start, 0) - 120 * 86_400_000));
    fs::write(out.join("roster.csv"), roster)?;

    fs::write(out.join("truth.json"), serde_json::to_string_pretty(&w.truth)? + "\n")?;
    Ok(w.truth)
}

