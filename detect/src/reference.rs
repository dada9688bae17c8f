//! Reference tables: `locations.csv` (business hours, timezones) and
//! `roster.csv` (who works where, who has been terminated).
//!
//! Read as people export them: a UTF-8 byte order mark, CRLF line ends, quoted
//! fields and header names in any case with spaces around them are all fine, and a
//! roster may carry columns seedwatch does not use (an HR export's email, department).
//! Loaded once; every error names the file, line and column.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
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
pub struct RosterRow {
    /// Tracking-system user name.
    pub user: String,
    /// Location the account belongs to (matched against the events' `location`).
    #[serde(default)]
    pub location: String,
    /// License the account belongs to, for rosters kept per license rather than per
    /// location (matched against the events' `license`).
    #[serde(default)]
    pub license: String,
    /// Role in the tracking system.
    #[serde(default)]
    pub role: String,
    /// `active` or `terminated` (any case).
    pub status: String,
    /// When access ended: RFC 3339, a date-time without offset, or a date (see
    /// [`parse_termination`]); required when terminated.
    #[serde(default)]
    pub terminated_at: String,
}

fn config_error(path: &Path, line: usize, message: String) -> DetectError {
    DetectError::Config { file: path.display().to_string(), line, message }
}

/// Header names as written by people and spreadsheets (`" Terminated At"`) to field names.
fn normalize_header(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// Rows of a CSV file with their line numbers. `required` columns must be in the header.
fn read_rows<T: DeserializeOwned>(path: &Path, required: &[&str]) -> Result<Vec<(usize, T)>, DetectError> {
    let bytes = std::fs::read(path).map_err(|e| config_error(path, 0, format!("cannot read the file: {e}")))?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(body);
    let headers: csv::StringRecord = reader.headers().map_err(|e| config_error(path, 1, e.to_string()))?.iter().map(normalize_header).collect();
    if let Some(missing) = required.iter().find(|name| !headers.iter().any(|h| h == **name)) {
        let found: Vec<&str> = headers.iter().collect();
        return Err(config_error(path, 1, format!("field `{missing}`: no such column (the header has: {})", found.join(", "))));
    }
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
    for (line, row) in read_rows::<LocationRow>(path, &["location", "license", "state", "system", "timezone", "open", "close"])? {
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
    /// Its line in the file.
    pub line: usize,
    /// When access ended (UTC ms), for a terminated account.
    pub terminated_at_ms: Option<i64>,
}

/// What a roster row names the account's place by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// A location id (the events' `location`, which defaults to the license).
    Location(String),
    /// A license number (the events' `license`).
    License(String),
}

/// `roster.csv`, keyed by (place, user): the same user name at two operators is two
/// accounts, and one's termination says nothing about the other.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// By user name, then place (a user is listed at a few places at most).
    by_user: HashMap<String, Vec<(Place, RosterEntry)>>,
    len: usize,
}

impl Roster {
    /// The account `user` at `location` (else under `license`), if listed.
    pub fn get(&self, location: &str, license: &str, user: &str) -> Option<&RosterEntry> {
        let places = self.by_user.get(user)?;
        let at = |wanted: &dyn Fn(&Place) -> bool| places.iter().find(|(p, _)| wanted(p)).map(|(_, e)| e);
        at(&|p| matches!(p, Place::Location(l) if l == location)).or_else(|| at(&|p| matches!(p, Place::License(l) if l == license)))
    }

    /// Whether no account is listed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Accounts listed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every account, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &RosterEntry> {
        self.by_user.values().flatten().map(|(_, e)| e)
    }

    /// Add an account; the entry already listed when (place, user) is taken.
    fn insert(&mut self, place: Place, entry: RosterEntry) -> Result<(), &RosterEntry> {
        let places = self.by_user.entry(entry.row.user.clone()).or_default();
        if let Some(i) = places.iter().position(|(p, _)| *p == place) {
            return Err(&places[i].1);
        }
        places.push((place, entry));
        self.len += 1;
        Ok(())
    }
}

/// Reference data the detectors join against. Empty tables are allowed: the
/// rules that need them are skipped (the pipeline says so).
#[derive(Debug, Clone, Default)]
pub struct Reference {
    /// locations.csv by location id.
    pub locations: HashMap<String, Location>,
    /// roster.csv by (place, user).
    pub roster: Roster,
    /// policy.yaml, per state and system.
    pub policy: crate::policy::Policy,
}

impl Reference {
    /// The licenses locations.csv names, sorted; empty without it.
    pub fn licenses(&self) -> Vec<&str> {
        let mut licenses: Vec<&str> = self.locations.values().map(|l| l.row.license.as_str()).collect();
        licenses.sort_unstable();
        licenses.dedup();
        licenses
    }

    /// Load `policy.yaml` from the rules directory (built-in defaults when absent)
    /// and the reference files that are given.
    pub fn load(rules_dir: &Path, locations: Option<&Path>, roster: Option<&Path>) -> Result<Self, DetectError> {
        let locations = locations.map(load_locations).transpose()?.unwrap_or_default();
        let roster = roster.map(|path| load_roster(path, &locations)).transpose()?.unwrap_or_default();
        Ok(Self { policy: crate::policy::load_policy(&rules_dir.join("policy.yaml"))?, locations, roster })
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

/// Load `roster.csv`, keyed by (location or license, user). Termination times without an
/// offset are local to the account's location (its timezone in `locations`; UTC when the
/// location is not there). The same account listed twice is an error naming both lines.
pub fn load_roster(path: &Path, locations: &HashMap<String, Location>) -> Result<Roster, DetectError> {
    let mut roster = Roster::default();
    let mut unplaced_times = 0usize;
    for (line, row) in read_rows::<RosterRow>(path, &["user", "status"])? {
        let err = |m: String| config_error(path, line, m);
        let place = match (row.location.is_empty(), row.license.is_empty()) {
            (false, _) => Place::Location(row.location.clone()),
            (true, false) => Place::License(row.license.clone()),
            (true, true) => return Err(err("field `location`: empty, and no `license` either (one says where the account is)".into())),
        };
        let tz = match &place {
            Place::Location(id) => locations.get(id).map(|l| l.tz),
            Place::License(license) => locations.values().find(|l| l.row.license == *license).map(|l| l.tz),
        };
        let terminated_at_ms = match (row.status.to_ascii_lowercase().as_str(), row.terminated_at.is_empty()) {
            ("active", true) => None,
            ("active" | "terminated", false) => {
                unplaced_times += usize::from(tz.is_none());
                let at = parse_termination(&row.terminated_at, tz.unwrap_or(Tz::UTC));
                Some(at.ok_or_else(|| err(format!("field `terminated_at`: `{}` is not a date (2026-08-30, 08/30/2026) or a date and time (2026-08-30T17:00:00, with or without an offset)", row.terminated_at)))?)
            }
            ("terminated", true) => return Err(err("field `terminated_at`: empty, but required when the status is terminated".into())),
            _ => return Err(err(format!("field `status`: `{}` is not active or terminated", row.status))),
        };
        let (kind, at) = match &place {
            Place::Location(id) => ("location", id.clone()),
            Place::License(license) => ("license", license.clone()),
        };
        let user = row.user.clone();
        if let Err(first) = roster.insert(place, RosterEntry { row, line, terminated_at_ms }) {
            return Err(err(format!("field `user`: `{user}` at {kind} `{at}` is already listed on line {}", first.line)));
        }
    }
    if unplaced_times > 0 {
        tracing::warn!(file = %path.display(), rows = unplaced_times, "roster rows whose location is not in locations.csv: their termination times without an offset are read as UTC");
    }
    Ok(roster)
}

/// When access ended, as HR exports write it: RFC 3339 (`2026-08-30T17:00:00-07:00`), a
/// date and time without an offset (`2026-08-30 17:00`, local to `tz`), or a date
/// (`2026-08-30`, `08/30/2026`: access ends at the end of that local day). `None` when
/// the text is none of these.
pub fn parse_termination(text: &str, tz: Tz) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    const DATE_TIMES: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p"];
    if let Some(local) = DATE_TIMES.iter().find_map(|f| NaiveDateTime::parse_from_str(text, f).ok()) {
        return local_to_utc_ms(local, tz);
    }
    let date = ["%Y-%m-%d", "%m/%d/%Y"].iter().find_map(|f| NaiveDate::parse_from_str(text, f).ok())?;
    local_to_utc_ms(date.checked_add_days(Days::new(1))?.and_time(NaiveTime::MIN), tz)
}

/// A local wall-clock time in `tz` as UTC ms: the earlier instant when the clock repeats
/// (access ends at the first one), the first instant after a skipped hour.
fn local_to_utc_ms(local: NaiveDateTime, tz: Tz) -> Option<i64> {
    let resolved = tz.from_local_datetime(&local).earliest().or_else(|| tz.from_local_datetime(&(local + chrono::Duration::hours(1))).earliest());
    resolved.map(|t| t.timestamp_millis())
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
        let e = load_roster(f.path(), &HashMap::new()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(":2:") && e.contains("terminated_at"), "{e}");
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).map_or(0, |d| d.timestamp_millis())
    }

    #[test]
    fn termination_times_as_hr_exports_write_them() {
        let la: Tz = "America/Los_Angeles".parse().unwrap_or(Tz::UTC);
        let cases = [
            ("2026-08-30T17:00:00-04:00", "2026-08-30T21:00:00Z"),
            ("2026-08-30 17:00:00Z", "2026-08-30T17:00:00Z"),
            // Without an offset: local to the location.
            ("2026-08-30T17:00:00", "2026-08-31T00:00:00Z"),
            ("2026-08-30 17:00", "2026-08-31T00:00:00Z"),
            ("08/30/2026 5:00 PM", "2026-08-31T00:00:00Z"),
            // A date: access ends at the end of that local day.
            ("2026-08-30", "2026-08-31T07:00:00Z"),
            ("8/30/2026", "2026-08-31T07:00:00Z"),
            ("2026-11-01", "2026-11-02T08:00:00Z"),
            // 02:30 on the spring-forward day does not exist: the first instant after it.
            ("2026-03-08 02:30", "2026-03-08T10:30:00Z"),
            // 01:30 on the fall-back day happens twice: the first.
            ("2026-11-01 01:30", "2026-11-01T08:30:00Z"),
        ];
        for (text, utc) in cases {
            assert_eq!(parse_termination(text, la), Some(ms(utc)), "{text}");
        }
        for bad in ["", "yesterday", "2026-13-01", "30/08/2026", "2026-08-30T25:00"] {
            assert_eq!(parse_termination(bad, la), None, "{bad}");
        }
    }

    #[test]
    fn a_roster_as_an_hr_export_writes_it() {
        let locations = write("location,license,state,system,timezone,open,close\noakland,C10-1,CA,metrc,America/Los_Angeles,09:00,21:00\n");
        let locations = load_locations(locations.path()).unwrap_or_else(|e| panic!("{e}"));
        // BOM, CRLF, headers in any case with spaces, quoted fields, a column seedwatch does not use.
        let text = "\u{feff} User , Location ,Role, Status ,Terminated At,Email\r\n\
                    derek.former,oakland,manager,Terminated,2026-08-30,d@example.com\r\n\
                    \"lopez, maria\",oakland,\"clerk, front\",ACTIVE,,m@example.com\r\n";
        let f = write(text);
        let roster = load_roster(f.path(), &locations).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(roster.len(), 2);
        let derek = roster.get("oakland", "C10-1", "derek.former").map(|e| e.terminated_at_ms);
        assert_eq!(derek, Some(Some(ms("2026-08-31T07:00:00Z"))), "end of 30 August in Oakland");
        let maria = roster.get("oakland", "C10-1", "lopez, maria").map(|e| (e.terminated_at_ms, e.row.role.as_str()));
        assert_eq!(maria, Some((None, "clerk, front")));
    }

    #[test]
    fn the_same_user_name_at_two_places_is_two_accounts() {
        let f = write("user,location,license,status,terminated_at\njsmith,oakland,,terminated,2026-08-30T00:00:00Z\njsmith,denver,,active,\nops,,C10-9,terminated,2026-01-01T00:00:00Z\n");
        let roster = load_roster(f.path(), &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert!(roster.get("oakland", "C10-1", "jsmith").is_some_and(|e| e.terminated_at_ms.is_some()));
        assert!(roster.get("denver", "402R-1", "jsmith").is_some_and(|e| e.terminated_at_ms.is_none()));
        assert!(roster.get("boulder", "402R-2", "jsmith").is_none(), "not listed there");
        // A row kept per license matches the events' license, whatever their location.
        assert!(roster.get("any-store", "C10-9", "ops").is_some_and(|e| e.terminated_at_ms.is_some()));
    }

    #[test]
    fn roster_errors_name_the_line_and_field() {
        let cases = [
            ("user,location,status,terminated_at\nbob,sf,active,\nbob,sf,terminated,2026-08-30\n", ":3:", "already listed on line 2"),
            ("user,location,status,terminated_at\nbob,sf,terminated,last tuesday\n", ":2:", "field `terminated_at`"),
            ("user,location,status\nbob,sf,on leave\n", ":2:", "field `status`"),
            ("user,location,status\nbob,,active\n", ":2:", "field `location`"),
            ("user,location,terminated_at\nbob,sf,\n", ":1:", "field `status`: no such column"),
        ];
        for (text, line, what) in cases {
            let f = write(text);
            let e = load_roster(f.path(), &HashMap::new()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(line) && e.contains(what), "{text:?}: {e}");
            assert_eq!(e.lines().count(), 1, "one line: {e}");
        }
    }
}
