//! Reference tables: `locations.csv` (business hours, timezones) and
//! `roster.csv` (who works where, who has been terminated).
//!
//! Loaded once; every error names the file, line and column.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;

use crate::DetectError;

/// One row of `locations.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationRow {
    /// Operator's location id.
    pub location: String,
    /// State license number.
    pub license: String,
    /// Two-letter state code.
    pub state: String,
    /// `metrc` or `biotrack`.
    pub system: String,
    /// IANA timezone, e.g. `America/Los_Angeles`.
    pub timezone: String,
    /// Local opening time, `HH:MM`.
    pub open: String,
    /// Local closing time, `HH:MM` (`24:00` for end of day).
    pub close: String,
}

/// A location with its hours parsed.
#[derive(Debug, Clone)]
pub struct Location {
    /// The row as written.
    pub row: LocationRow,
    /// Parsed timezone.
    pub tz: Tz,
    /// Opening time, minutes after local midnight.
    pub open_minute: u32,
    /// Closing time, minutes after local midnight (1440 for `24:00`).
    pub close_minute: u32,
}

impl Location {
    /// Open around the clock.
    pub fn is_24_hours(&self) -> bool {
        self.open_minute == 0 && self.close_minute == 1440
    }
}

/// One row of `roster.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterRow {
    /// Tracking-system user name.
    pub user: String,
    /// Location the user works at.
    pub location: String,
    /// Role in the tracking system.
    pub role: String,
    /// `active` or `terminated`.
    pub status: String,
    /// RFC 3339 time of termination, empty while active.
    #[serde(default)]
    pub terminated_at: String,
}

fn config_error(path: &Path, line: usize, message: String) -> DetectError {
    DetectError::Config { file: path.display().to_string(), line, message }
}

fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<(usize, T)>, DetectError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| config_error(path, 0, e.to_string()))?;
    let headers = reader.headers().map_err(|e| config_error(path, 1, e.to_string()))?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| config_error(path, e.position().map_or(0, |p| p.line() as usize), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let row = record.deserialize(Some(&headers)).map_err(|e| config_error(path, line, e.to_string()))?;
        rows.push((line, row));
    }
    Ok(rows)
}

fn parse_minute(text: &str) -> Option<u32> {
    if text == "24:00" {
        return Some(1440);
    }
    let t = NaiveTime::parse_from_str(text, "%H:%M").ok()?;
    Some(chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t))
}

/// Load `locations.csv`, keyed by location id.
pub fn load_locations(path: &Path) -> Result<HashMap<String, Location>, DetectError> {
    let mut out = HashMap::new();
    for (line, row) in read_rows::<LocationRow>(path)? {
        let err = |m: String| config_error(path, line, m);
        let tz: Tz = row.timezone.parse().map_err(|_| err(format!("field `timezone`: `{}` is not an IANA timezone", row.timezone)))?;
        let open_minute = parse_minute(&row.open).filter(|m| *m < 1440).ok_or_else(|| err(format!("field `open`: `{}` is not HH:MM", row.open)))?;
        let close_minute = parse_minute(&row.close).ok_or_else(|| err(format!("field `close`: `{}` is not HH:MM or 24:00", row.close)))?;
        if !seedwatch_schemas::SYSTEMS.contains(&row.system.as_str()) {
            return Err(err(format!("field `system`: `{}` is not metrc or biotrack", row.system)));
        }
        if !seedwatch_schemas::STATE_CODES.contains(&row.state.as_str()) {
            return Err(err(format!("field `state`: `{}` is not a state code", row.state)));
        }
        if out.contains_key(&row.location) {
            return Err(err(format!("field `location`: `{}` is listed twice", row.location)));
        }
        out.insert(row.location.clone(), Location { row, tz, open_minute, close_minute });
    }
    Ok(out)
}

/// A roster row with its termination time parsed.
#[derive(Debug, Clone)]
pub struct RosterEntry {
    /// The row as written.
    pub row: RosterRow,
    /// Termination time (UTC ms) when the user is terminated.
    pub terminated_at_ms: Option<i64>,
}

/// Reference data the detectors join against. Empty tables are allowed: the
/// rules that need them are skipped (the pipeline says so).
#[derive(Debug, Clone, Default)]
pub struct Reference {
    /// locations.csv by location id.
    pub locations: HashMap<String, Location>,
    /// roster.csv by user.
    pub roster: HashMap<String, RosterEntry>,
    /// policy.yaml, per state and system.
    pub policy: crate::policy::Policy,
}

impl Reference {
    /// Load `policy.yaml` from the rules directory (built-in defaults when absent)
    /// and the reference files that are given.
    pub fn load(rules_dir: &Path, locations: Option<&Path>, roster: Option<&Path>) -> Result<Self, DetectError> {
        Ok(Self {
            policy: crate::policy::load_policy(&rules_dir.join("policy.yaml"))?,
            locations: locations.map(load_locations).transpose()?.unwrap_or_default(),
            roster: roster.map(load_roster).transpose()?.unwrap_or_default(),
        })
    }
}

impl Location {
    /// Whether `t` (UTC ms) falls inside the location's local business hours.
    /// Hours that cross midnight (`18:00`-`02:00`) are supported.
    pub fn is_open_at(&self, t: i64) -> bool {
        if self.is_24_hours() {
            return true;
        }
        let Some(utc) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t) else { return true };
        let local = utc.with_timezone(&self.tz);
        let minute = chrono::Timelike::hour(&local) * 60 + chrono::Timelike::minute(&local);
        if self.open_minute <= self.close_minute {
            minute >= self.open_minute && minute < self.close_minute
        } else {
            minute >= self.open_minute || minute < self.close_minute
        }
    }
}

/// Load `roster.csv`, keyed by user.
pub fn load_roster(path: &Path) -> Result<HashMap<String, RosterEntry>, DetectError> {
    let mut out = HashMap::new();
    for (line, row) in read_rows::<RosterRow>(path)? {
        let err = |m: String| config_error(path, line, m);
        let terminated_at_ms = match row.status.as_str() {
            "active" => None,
            "terminated" => Some(
                chrono::DateTime::parse_from_rfc3339(&row.terminated_at)
                    .map_err(|_| err(format!("field `terminated_at`: `{}` is not RFC 3339 (required when terminated)", row.terminated_at)))?
                    .timestamp_millis(),
            ),
            other => return Err(err(format!("field `status`: `{other}` is not active or terminated"))),
        };
        out.insert(row.user.clone(), RosterEntry { row, terminated_at_ms });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(f.path(), text).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    #[test]
    fn loads_locations_and_reports_bad_rows_by_line() {
        let good = "location,license,state,system,timezone,open,close\nsf-1,C10-1,CA,metrc,America/Los_Angeles,09:00,21:00\nden-24,402R-1,CO,metrc,America/Denver,00:00,24:00\n";
        let f = write(good);
        let locations = load_locations(f.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(locations["den-24"].is_24_hours());
        assert_eq!(locations["sf-1"].close_minute, 21 * 60);
        let bad = write(&good.replace("America/Denver", "Mars/Olympus"));
        let e = load_locations(bad.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(":3:") && e.contains("timezone"), "{e}");
    }

    #[test]
    fn business_hours_follow_the_local_clock_across_dst() {
        let f = write("location,license,state,system,timezone,open,close\nsf,L1,CA,metrc,America/Los_Angeles,09:00,21:00\nlv,L2,NV,metrc,America/Los_Angeles,00:00,24:00\nbar,L3,CA,metrc,America/Los_Angeles,18:00,02:00\n");
        let locations = load_locations(f.path()).unwrap_or_else(|e| panic!("{e}"));
        let ms = |s: &str| chrono::DateTime::parse_from_rfc3339(s).map_or(0, |d| d.timestamp_millis());
        let sf = &locations["sf"];
        // 09:30 local is 16:30 UTC in PDT (before 2026-11-01) and 17:30 UTC in PST (after).
        assert!(sf.is_open_at(ms("2026-10-30T16:30:00Z")));
        assert!(!sf.is_open_at(ms("2026-11-02T16:30:00Z")), "08:30 PST is before opening");
        assert!(sf.is_open_at(ms("2026-11-02T17:30:00Z")));
        // 20:59 and 21:00 local on each side of the change.
        assert!(sf.is_open_at(ms("2026-10-30T20:59:00-07:00")));
        assert!(!sf.is_open_at(ms("2026-11-02T21:00:00-08:00")));
        // The repeated hour on 2026-11-01 (01:00-02:00 twice) is closed both times.
        assert!(!sf.is_open_at(ms("2026-11-01T01:30:00-07:00")));
        assert!(!sf.is_open_at(ms("2026-11-01T01:30:00-08:00")));
        assert!(locations["lv"].is_open_at(ms("2026-11-01T01:30:00-08:00")), "24-hour sites are always open");
        assert!(locations["bar"].is_open_at(ms("2026-11-02T01:00:00-08:00")), "hours may cross midnight");
        assert!(!locations["bar"].is_open_at(ms("2026-11-02T03:00:00-08:00")));
    }

    #[test]
    fn roster_requires_a_termination_time() {
        let f = write("user,location,role,status,terminated_at\nbob,sf-1,manager,terminated,\n");
        let e = load_roster(f.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(":2:") && e.contains("terminated_at"), "{e}");
    }
}
