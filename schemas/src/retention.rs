//! How long each archive table is kept: the manuals' table (000 §5.4, "Log Retention
//! Requirements") as defaults, its minimums enforced.
//!
//! | table | log type (000 §5.4) | default | minimum |
//! | --- | --- | --- | --- |
//! | login | login logs | 3 years | 1 year |
//! | api | API logs | 3 years | 1 year |
//! | audit | user management logs | 7 years | 3 years |
//! | sync | transaction logs | 5 years | 1 year (the manual: "per state requirement") |
//! | findings | security incident logs | indefinite | 7 years |
//! | dead_letter | (any family's unreadable lines) | 1 year | 1 year |

use chrono::{Months, NaiveDate};
use serde::Deserialize;

use crate::{Family, Table};

/// How long rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar years.
    Years(u32),
    /// Days.
    Days(u32),
    /// Never removed.
    Indefinite,
}

impl Period {
    /// The first day that is still kept on `as_of`: days before it are past retention.
    /// `None` when nothing is ever past it.
    pub fn cutoff(self, as_of: NaiveDate) -> Option<NaiveDate> {
        match self {
            Period::Years(y) => as_of.checked_sub_months(Months::new(y.saturating_mul(12))),
            Period::Days(d) => as_of.checked_sub_days(chrono::Days::new(u64::from(d))),
            Period::Indefinite => None,
        }
    }

    /// Whether this keeps rows at least as long as `minimum` (a number of years) on every
    /// calendar: days count as years only by 366 each.
    fn at_least(self, minimum_years: u32) -> bool {
        match self {
            Period::Years(y) => y >= minimum_years,
            Period::Days(d) => u64::from(d) >= 366 * u64::from(minimum_years),
            Period::Indefinite => true,
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Years(1) => write!(f, "1 year"),
            Period::Years(y) => write!(f, "{y} years"),
            Period::Days(1) => write!(f, "1 day"),
            Period::Days(d) => write!(f, "{d} days"),
            Period::Indefinite => write!(f, "indefinite"),
        }
    }
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "indefinite" {
            return Ok(Period::Indefinite);
        }
        let (number, unit) = text.split_once(' ').ok_or_else(|| format!("`{text}`: expected `N years`, `N days` or `indefinite`"))?;
        let n: u32 = number.parse().map_err(|_| format!("`{text}`: `{number}` is not a whole number"))?;
        match unit.trim() {
            "year" | "years" => Ok(Period::Years(n)),
            "day" | "days" => Ok(Period::Days(n)),
            other => Err(format!("`{text}`: unknown unit `{other}` (years or days)")),
        }
    }
}

/// The `retention` section of policy.yaml: one period per table, as text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Login logs.
    pub login: Option<String>,
    /// API logs.
    pub api: Option<String>,
    /// Sync (transaction) logs.
    pub sync: Option<String>,
    /// Audit (user management) logs.
    pub audit: Option<String>,
    /// Findings and, while they are kept, the days holding their evidence.
    pub findings: Option<String>,
    /// Dead letters.
    pub dead_letter: Option<String>,
}

/// Each table's resolved period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    periods: [(Table, Period); 6],
}

/// The default and the minimum (in years) of `table`, from 000 §5.4.
const fn manual(table: Table) -> (Period, u32) {
    match table {
        Table::Events(Family::Login) | Table::Events(Family::Api) => (Period::Years(3), 1),
        Table::Events(Family::Audit) => (Period::Years(7), 3),
        Table::Events(Family::Sync) => (Period::Years(5), 1),
        Table::Findings => (Period::Indefinite, 7),
        Table::DeadLetter => (Period::Years(1), 1),
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self { periods: Table::ALL.map(|t| (t, manual(t).0)) }
    }
}

impl Retention {
    /// The configured periods over the manual's defaults. An error names the field and why
    /// (a period shorter than the manual's minimum is refused, not raised to it silently).
    pub fn from_config(config: &RetentionConfig) -> Result<Self, (&'static str, String)> {
        let mut retention = Self::default();
        for (table, period) in retention.periods.iter_mut() {
            let given = match table {
                Table::Events(Family::Login) => &config.login,
                Table::Events(Family::Api) => &config.api,
                Table::Events(Family::Sync) => &config.sync,
                Table::Events(Family::Audit) => &config.audit,
                Table::Findings => &config.findings,
                Table::DeadLetter => &config.dead_letter,
            };
            let Some(text) = given else { continue };
            let parsed: Period = text.parse().map_err(|why| (table.name(), why))?;
            let minimum = manual(*table).1;
            if !parsed.at_least(minimum) {
                return Err((table.name(), format!("{parsed} is below the minimum of {} (000 §5.4)", Period::Years(minimum))));
            }
            *period = parsed;
        }
        Ok(retention)
    }

    /// How long `table` is kept.
    pub fn period(&self, table: Table) -> Period {
        self.periods.iter().find(|(t, _)| *t == table).map_or(Period::Indefinite, |(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn the_manuals_table_is_the_default_and_its_minimums_hold() {
        let r = Retention::default();
        assert_eq!(r.period(Table::Events(Family::Audit)), Period::Years(7));
        assert_eq!(r.period(Table::Findings), Period::Indefinite);
        let config = |login: &str| RetentionConfig { login: Some(login.into()), ..RetentionConfig::default() };
        assert_eq!(Retention::from_config(&config("2 years")).map(|r| r.period(Table::Events(Family::Login))), Ok(Period::Years(2)));
        assert_eq!(Retention::from_config(&config("366 days")).map(|r| r.period(Table::Events(Family::Login))), Ok(Period::Days(366)));
        assert_eq!(Retention::from_config(&config("365 days")), Err(("login", "365 days is below the minimum of 1 year (000 §5.4)".to_string())));
        assert!(Retention::from_config(&config("6 months")).is_err_and(|(field, why)| field == "login" && why.contains("unknown unit")));
        let findings = RetentionConfig { findings: Some("5 years".into()), ..RetentionConfig::default() };
        assert_eq!(Retention::from_config(&findings), Err(("findings", "5 years is below the minimum of 7 years (000 §5.4)".to_string())));
    }

    #[test]
    fn the_cutoff_is_the_first_day_kept() {
        assert_eq!(Period::Years(3).cutoff(date("2029-09-05")), Some(date("2026-09-05")));
        // A leap day counts back to the 28th.
        assert_eq!(Period::Years(1).cutoff(date("2028-02-29")), Some(date("2027-02-28")));
        assert_eq!(Period::Days(10).cutoff(date("2026-09-11")), Some(date("2026-09-01")));
        assert_eq!(Period::Indefinite.cutoff(date("2026-09-11")), None);
    }
}
