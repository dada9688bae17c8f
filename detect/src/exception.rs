//! Exceptions: activity known to be fine that a rule should not fire on (an office's
//! addresses, a service account, an integration's key, a maintenance window).
//!
//! They are data, not code: `exceptions.yaml` beside the rules, or `except:` on a rule.
//! Each names a reason, an owner and an expiry date, because an exception nobody owns
//! outlives the reason it was made for. An exception is one SQL predicate over the
//! family's columns, so the detector (which drops matching rows after the rule's filter
//! and counts them) and `seedwatch query`'s `suppressed` view (which shows them) agree.
//! Expiry is judged by event time: an exception covers events up to the end of its expiry
//! day (UTC), so a replay of last year's logs is judged by the exceptions of that time.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::physical_expr::PhysicalExpr;
use seedwatch_schemas::sql_functions::parse_net;
use serde::Deserialize;

/// An exception as written in YAML. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    /// Stable name, reported in metrics and in the `suppressed` view.
    pub id: String,
    /// Why this activity is fine.
    pub reason: String,
    /// Who answers for it (a person or a team's address).
    pub owner: String,
    /// Last day it applies (`2027-06-30`, UTC), or an RFC 3339 time.
    pub expires: String,
    /// Rules it applies to: ids, `family.*` or `*` (required in `exceptions.yaml`;
    /// not allowed in a rule's `except:`).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Source addresses or ranges (`203.0.113.0/24`, `2001:db8::/32`, `198.51.100.7`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Accounts that act: login and API `user`, audit `actor` (the rule's actor column).
    #[serde(default)]
    pub users: Vec<String>,
    /// API key ids.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Integrations (`flowhub`, `dutchie`, ...).
    #[serde(default)]
    pub integrations: Vec<String>,
    /// Licenses.
    #[serde(default)]
    pub licenses: Vec<String>,
    /// Location ids.
    #[serde(default)]
    pub locations: Vec<String>,
    /// A maintenance window: events inside it are excepted.
    #[serde(default)]
    pub window: Option<WindowConfig>,
    /// Any further SQL condition over the family's columns.
    #[serde(default, rename = "where")]
    pub sql: Option<String>,
}

/// A maintenance window (`from` inclusive, `to` exclusive): RFC 3339, or dates (UTC;
/// a `to` date includes that whole day).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Start.
    pub from: String,
    /// End.
    pub to: String,
}

/// The `exceptions.yaml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionsFile {
    /// The exceptions, in any order.
    pub exceptions: Vec<ExceptionConfig>,
}

/// An exception compiled for one rule.
#[derive(Debug, Clone)]
pub struct CompiledException {
    /// Its id.
    pub id: Arc<str>,
    /// Where it is written (`file:line`).
    pub origin: String,
    /// Why it exists.
    pub reason: String,
    /// Who owns it.
    pub owner: String,
    /// End of its last day, UTC ms: events at or after this are not excepted.
    pub expires_ms: i64,
    /// The predicate as SQL (its expiry included), for the `suppressed` view.
    pub sql: String,
    /// The same, compiled against the rule's family.
    pub predicate: Arc<dyn PhysicalExpr>,
}

impl CompiledException {
    /// Rows of `batch` it excepts (nulls read as not excepted).
    pub fn evaluate(&self, batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<BooleanArray, String> {
        let value = self.predicate.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| e.to_string())?;
        let mask = value.as_boolean_opt().ok_or("an exception did not return booleans")?;
        Ok(if mask.null_count() > 0 { datafusion::arrow::compute::prep_null_mask_filter(mask) } else { mask.clone() })
    }
}

/// The exceptions of one rule, before compiling: what the rule needs to know of each.
#[derive(Debug, Clone)]
pub struct ExceptionSource {
    /// The config.
    pub config: ExceptionConfig,
    /// Its file.
    pub file: String,
    /// The line of its `id`.
    pub line: usize,
    /// Whether the rule was named by id (not by a pattern): then a column the
    /// rule's family lacks is an error rather than "does not apply".
    pub named: bool,
}

/// A configuration problem: (line, message naming the field).
pub type Problem = (usize, String);

/// Whether a `rules:` pattern covers `rule_id`.
pub fn covers(pattern: &str, rule_id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => rule_id.starts_with(prefix),
        None => pattern == rule_id,
    }
}

/// The UTC ms at which `text` ends: RFC 3339 as given; a date ends at the next midnight UTC.
pub fn parse_end(text: &str) -> Option<i64> {
    crate::reference::parse_termination(text, chrono_tz::UTC)
}

/// The UTC ms at which `text` starts: RFC 3339 as given; a date starts at its midnight UTC.
pub fn parse_start(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)).timestamp_millis())
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn in_list(column: &str, values: &[String]) -> String {
    let list: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("{column} IN ({})", list.join(", "))
}

/// A UTC instant as a SQL literal, readable in the `suppressed` view.
fn time_literal(ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// The SQL predicate of `config` over a family whose columns are `has(name)`, with the
/// rule's actor column; `Ok(None)` when it names a column the family lacks.
pub fn predicate_sql(config: &ExceptionConfig, has: impl Fn(&str) -> bool, actor: Option<&str>) -> Result<Option<String>, (&'static str, String)> {
    let mut parts = Vec::new();
    let expires = parse_end(&config.expires).ok_or(("expires", format!("`{}` is not a date (2027-06-30) or an RFC 3339 time", config.expires)))?;
    parts.push(format!("time < {}", time_literal(expires)));
    if !config.ips.is_empty() {
        if !has("src_ip") {
            return Ok(None);
        }
        let mut ranges = Vec::new();
        for ip in &config.ips {
            let net = parse_net(ip).ok_or(("ips", format!("`{ip}` is not an address or a range (203.0.113.0/24)")))?;
            ranges.push(format!("ip_in_range(src_ip, {})", quote(&net.to_string())));
        }
        parts.push(format!("({})", ranges.join(" OR ")));
    }
    if !config.users.is_empty() {
        let Some(actor) = actor else { return Ok(None) };
        parts.push(in_list(actor, &config.users));
    }
    for (column, values) in [("key_id", &config.keys), ("integration", &config.integrations), ("license", &config.licenses), ("location", &config.locations)] {
        if !values.is_empty() {
            if !has(column) {
                return Ok(None);
            }
            parts.push(in_list(column, values));
        }
    }
    if let Some(w) = &config.window {
        let from = parse_start(&w.from).ok_or(("window", format!("`from`: `{}` is not a date or an RFC 3339 time", w.from)))?;
        let to = parse_end(&w.to).ok_or(("window", format!("`to`: `{}` is not a date or an RFC 3339 time", w.to)))?;
        if to <= from {
            return Err(("window", "`to` must be after `from`".into()));
        }
        parts.push(format!("time >= {} AND time < {}", time_literal(from), time_literal(to)));
    }
    if let Some(sql) = &config.sql {
        parts.push(format!("({sql})"));
    }
    if parts.len() == 1 {
        return Err(("id", format!("exception `{}` names nothing to except (ips, users, keys, integrations, licenses, locations, window or where)", config.id)));
    }
    Ok(Some(parts.join(" AND ")))
}

/// Read `exceptions.yaml`: its exceptions with the line of each `id`.
pub fn load_file(path: &Path) -> Result<Vec<(ExceptionConfig, usize)>, Problem> {
    let text = std::fs::read_to_string(path).map_err(|e| (0, e.to_string()))?;
    let file: ExceptionsFile = serde_yaml::from_str(&text).map_err(|e| (e.location().map_or(0, |l| l.line()), e.to_string()))?;
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(file.exceptions.len());
    for config in file.exceptions {
        let line = id_line(&text, &config.id);
        if config.rules.is_empty() {
            return Err((line, format!("field `rules`: exception `{}` must name the rules it applies to (ids, `family.*`, or `*`)", config.id)));
        }
        if let Some(first) = seen.insert(config.id.clone(), line) {
            return Err((line, format!("field `id`: `{}` is already defined on line {first}", config.id)));
        }
        out.push((config, line));
    }
    Ok(out)
}

/// `suppressed`: the archived events each rule's exceptions dropped, one row per (event,
/// rule), credited to the first exception that holds (as the detector counts them). It is
/// the filter's matches: a schedule or reference rule's check after the filter, a
/// threshold's count, are not applied.
pub fn suppressed_view_sql(rules: &[crate::CompiledRule]) -> String {
    let columns = "event_id, time, license, location, source, line";
    let mut selects = Vec::new();
    for rule in rules {
        for (j, exception) in rule.exceptions.iter().enumerate() {
            let earlier: Vec<String> = rule.exceptions[..j].iter().map(|e| format!("({})", e.sql)).collect();
            let not_earlier = if earlier.is_empty() { String::new() } else { format!(" AND NOT COALESCE({}, false)", earlier.join(" OR ")) };
            selects.push(format!(
                "SELECT {rule} AS rule_id, {exception} AS exception_id, {columns} FROM {table} WHERE ({filter}) AND COALESCE({sql}, false){not_earlier}",
                rule = quote(&rule.id),
                exception = quote(&exception.id),
                table = rule.family.as_str(),
                filter = rule.filter_sql,
                sql = exception.sql,
            ));
        }
    }
    if selects.is_empty() {
        selects.push(format!(
            "SELECT CAST(NULL AS VARCHAR) AS rule_id, CAST(NULL AS VARCHAR) AS exception_id, CAST(NULL AS VARCHAR) AS event_id, {} AS time, \
             CAST(NULL AS VARCHAR) AS license, CAST(NULL AS VARCHAR) AS location, CAST(NULL AS VARCHAR) AS source, CAST(NULL AS BIGINT) AS line WHERE false",
            time_literal(0)
        ));
    }
    format!("CREATE OR REPLACE VIEW suppressed AS {}", selects.join(" UNION ALL "))
}

/// The 1-based line of `id: <id>` in a YAML text (0 if absent).
pub fn id_line(text: &str, id: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            l.strip_prefix("id:").is_some_and(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == id)
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> ExceptionConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = "id: hq\nreason: office egress\nowner: it@example.com\nexpires: 2027-06-30\n";

    #[test]
    fn the_predicate_holds_every_condition_and_the_expiry() {
        let c = config(&format!("{BASE}ips: [203.0.113.0/24]\nusers: [svc-sync]\n"));
        let sql = predicate_sql(&c, |_| true, Some("user")).unwrap_or_else(|e| panic!("{e:?}")).unwrap_or_default();
        // 2027-07-01T00:00:00Z: the end of the expiry day.
        assert!(sql.starts_with("time < TIMESTAMP '2027-07-01T00:00:00.000Z'"), "{sql}");
        assert!(sql.contains("ip_in_range(src_ip, '203.0.113.0/24')") && sql.contains("user IN ('svc-sync')"), "{sql}");
    }

    #[test]
    fn a_column_the_family_lacks_means_not_applicable_and_bad_values_name_the_field() {
        let c = config(&format!("{BASE}keys: [k1]\n"));
        assert_eq!(predicate_sql(&c, |col| col != "key_id", Some("user")).ok().flatten(), None);
        for (extra, field) in [("ips: [300.1.1.1]\n", "ips"), ("window: {from: 2027-01-02, to: 2027-01-01}\n", "window"), ("", "id")] {
            let c = config(&format!("{BASE}{extra}"));
            let e = predicate_sql(&c, |_| true, Some("user")).err().unwrap_or_else(|| panic!("accepted {extra}"));
            assert_eq!(e.0, field, "{e:?}");
        }
        let c = config(&BASE.replace("2027-06-30", "someday").replace("expires", "expires").to_string().replace("owner", "users: [a]\nowner"));
        assert_eq!(predicate_sql(&c, |_| true, Some("user")).err().map(|e| e.0), Some("expires"));
    }

    #[test]
    fn patterns_cover_ids_families_and_everything() {
        assert!(covers("login.new_ip", "login.new_ip") && covers("login.*", "login.new_ip") && covers("*", "api.bulk_export"));
        assert!(!covers("login.*", "api.new_ip") && !covers("login.new_ip", "login.new_ip_v2"));
    }

    #[test]
    fn lines_of_ids() {
        assert_eq!(id_line("exceptions:\n  - id: a\n    reason: r\n  - id: \"b\"\n", "b"), 4);
    }
}
