//! `seedwatch report`: the manuals' review checklists (000 §5.2, §7.2-7.5) as SQL files
//! over the archive.
//!
//! A report is a file `reports/NAME.sql`: a header of `--` lines (`title:`, `review:`,
//! `needs:` and a description), then one SQL statement. The statement reads the archive's
//! tables and views (`seedwatch query`'s), three parameters bound by DataFusion (never
//! pasted into the text): `$from` and `$to` (timestamps, the review period, `$to`
//! exclusive) and `$location` (a location id, or NULL for all), and reference tables the
//! runner adds:
//! - `policy(state, sync_limit_seconds, key_rotation_days, mfa_required, session_timeout_seconds)`:
//!   `policy.yaml` resolved for every state in the archive (defaults filled in);
//! - `locations(location, license, state, system, timezone, open, close)` from `--locations`;
//! - `roster(user, location, license, role, status, terminated_at)` from `--roster`, with
//!   `terminated_at` parsed as the detector reads it (a date ends at the end of that local day).
//!
//! A report that names a reference table in `needs:` refuses to run without its file.
//! Adding a report is a new file; no Rust.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SessionContext};
use seedwatch_archive::run_query;
use seedwatch_detect::reference::Reference;

/// Why a report could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The reports directory or a report file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A report file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Its line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No report has that name.
    #[error("no report `{name}` in {} (known: {known}); `seedwatch report list` describes them", dir.display())]
    Unknown {
        /// The name asked for.
        name: String,
        /// The reports directory.
        dir: PathBuf,
        /// The names there.
        known: String,
    },
    /// A reference file the report needs was not given.
    #[error("report `{report}` needs {table}.csv: pass --{table} FILE")]
    Needs {
        /// The report.
        report: String,
        /// The reference table.
        table: String,
    },
    /// A reference table could not be built.
    #[error("building the `{table}` table: {source}")]
    Reference {
        /// The table.
        table: &'static str,
        /// The error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// Querying the archive failed.
    #[error(transparent)]
    Archive(#[from] seedwatch_archive::ArchiveError),
    /// DataFusion failed planning or running the report.
    #[error("report `{report}`: {source}")]
    Query {
        /// The report.
        report: String,
        /// The error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
}

/// Reference tables a report may need.
const REFERENCE_TABLES: &[&str] = &["locations", "roster"];

/// One report file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file name without `.sql`.
    pub name: String,
    /// One line.
    pub title: String,
    /// Which review it belongs to and where the manuals ask for it.
    pub review: String,
    /// Reference tables it needs (`locations`, `roster`).
    pub needs: Vec<String>,
    /// The rest of the header.
    pub description: String,
    /// The statement.
    pub sql: String,
    /// Where it was read from.
    pub path: PathBuf,
}

/// The review period and scope a report runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportParams {
    /// Start of the period (UTC ms, inclusive).
    pub from: i64,
    /// End of the period (UTC ms, exclusive).
    pub to: i64,
    /// One location, or all.
    pub location: Option<String>,
}

/// Every `*.sql` file of `dir`, by name.
pub fn load_reports(dir: &Path) -> Result<Vec<Report>, ReportError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Read { path, source }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    paths.sort();
    paths.iter().map(|path| parse_report(path, &std::fs::read_to_string(path).map_err(read_err(path))?)).collect()
}

/// Read one report file's header and statement.
fn parse_report(path: &Path, text: &str) -> Result<Report, ReportError> {
    let invalid = |line: usize, message: String| ReportError::Invalid { path: path.to_path_buf(), line, message };
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let (mut title, mut review, mut needs, mut description) = (None, None, Vec::new(), Vec::new());
    let mut body_start = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix("--") else {
            if line.trim().is_empty() {
                continue;
            }
            body_start = i;
            break;
        };
        let comment = comment.trim();
        if let Some(v) = comment.strip_prefix("title:") {
            title = Some(v.trim().to_string());
        } else if let Some(v) = comment.strip_prefix("review:") {
            review = Some(v.trim().to_string());
        } else if let Some(v) = comment.strip_prefix("needs:") {
            for table in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !REFERENCE_TABLES.contains(&table) {
                    return Err(invalid(i + 1, format!("field `needs`: unknown table `{table}` (known: {})", REFERENCE_TABLES.join(", "))));
                }
                needs.push(table.to_string());
            }
        } else {
            description.push(comment.to_string());
        }
    }
    let sql: String = text.lines().skip(body_start).collect::<Vec<_>>().join("\n");
    if sql.trim().is_empty() {
        return Err(invalid(body_start + 1, "no SQL statement after the header".into()));
    }
    Ok(Report {
        title: title.ok_or_else(|| invalid(1, "field `title`: missing (a `-- title: ...` line)".into()))?,
        review: review.ok_or_else(|| invalid(1, "field `review`: missing (a `-- review: daily ...` line)".into()))?,
        name,
        needs,
        description: description.join(" ").trim().to_string(),
        sql,
        path: path.to_path_buf(),
    })
}

/// The report called `name` among `reports`.
pub fn find<'a>(reports: &'a [Report], name: &str, dir: &Path) -> Result<&'a Report, ReportError> {
    reports.iter().find(|r| r.name == name).ok_or_else(|| ReportError::Unknown {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        known: reports.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// Add the reference tables (see the module docs) to an archive session; returns the
/// `needs:` tables now present.
pub async fn register_reference(ctx: &SessionContext, reference: &Reference, has_locations: bool, has_roster: bool) -> Result<Vec<&'static str>, ReportError> {
    let mem = |table: &'static str, batch: Result<RecordBatch, datafusion::arrow::error::ArrowError>| -> Result<(), ReportError> {
        let err = |source| ReportError::Reference { table, source };
        let batch = batch.map_err(|e| err(e.into()))?;
        let provider = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(err)?;
        ctx.register_table(table, Arc::new(provider)).map_err(err)?;
        Ok(())
    };
    // A role that sees some licenses sees their locations and people only.
    let narrow = |table: &'static str| seedwatch_archive::query::narrow_table(ctx, table).map_err(|e| ReportError::Reference { table, source: datafusion::error::DataFusionError::External(Box::new(e)) });
    // Every state the archive knows, so a state missing from policy.yaml reads the defaults.
    let states_sql = "SELECT DISTINCT state FROM (SELECT state FROM login UNION ALL SELECT state FROM api UNION ALL SELECT state FROM sync UNION ALL SELECT state FROM audit) WHERE state IS NOT NULL ORDER BY state";
    let mut states: Vec<String> = Vec::new();
    for batch in run_query(ctx, states_sql).await? {
        let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8).map_err(|e| ReportError::Reference { table: "policy", source: e.into() })?;
        let column = column.as_any().downcast_ref::<StringArray>().map(|a| a.iter().flatten().map(String::from).collect::<Vec<_>>()).unwrap_or_default();
        states.extend(column);
    }
    let resolved: Vec<_> = states.iter().map(|s| reference.policy.state(s)).collect();
    let policy = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("state", DataType::Utf8, false),
            Field::new("sync_limit_seconds", DataType::Int64, false),
            Field::new("key_rotation_days", DataType::Int64, false),
            Field::new("mfa_required", DataType::Boolean, false),
            Field::new("session_timeout_seconds", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(&states)) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(resolved.iter().map(|p| (p.sync_interval_ms + p.sync_grace_ms) / 1000))),
            Arc::new(Int64Array::from_iter_values(resolved.iter().map(|p| i64::from(p.key_rotation_days)))),
            Arc::new(BooleanArray::from(resolved.iter().map(|p| p.mfa_required).collect::<Vec<_>>())),
            Arc::new(Int64Array::from_iter_values(resolved.iter().map(|p| p.session_timeout_ms / 1000))),
        ],
    );
    mem("policy", policy)?;
    let mut available = Vec::new();
    if has_locations {
        let mut rows: Vec<_> = reference.locations.values().map(|l| &l.row).collect();
        rows.sort_by(|a, b| a.location.cmp(&b.location));
        let column = |f: fn(&seedwatch_detect::reference::LocationRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r)))) as ArrayRef;
        let names = ["location", "license", "state", "system", "timezone", "open", "close"];
        let schema = Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>());
        let columns = vec![column(|r| &r.location), column(|r| &r.license), column(|r| &r.state), column(|r| &r.system), column(|r| &r.timezone), column(|r| &r.open), column(|r| &r.close)];
        mem("locations", RecordBatch::try_new(Arc::new(schema), columns))?;
        narrow("locations")?;
        available.push("locations");
    }
    if has_roster {
        let mut entries: Vec<_> = reference.roster.entries().collect();
        entries.sort_by_key(|e| e.line);
        let text = |f: fn(&seedwatch_detect::reference::RosterRow) -> &str| Arc::new(StringArray::from_iter(entries.iter().map(|e| Some(f(&e.row)).filter(|v| !v.is_empty())))) as ArrayRef;
        let schema = Schema::new(vec![
            Field::new("user", DataType::Utf8, false),
            Field::new("location", DataType::Utf8, true),
            Field::new("license", DataType::Utf8, true),
            Field::new("role", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, false),
            Field::new("terminated_at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
        ]);
        let terminated = TimestampMillisecondArray::from(entries.iter().map(|e| e.terminated_at_ms).collect::<Vec<_>>()).with_timezone("UTC");
        let columns = vec![text(|r| &r.user), text(|r| &r.location), text(|r| &r.license), text(|r| &r.role), text(|r| &r.status), Arc::new(terminated) as ArrayRef];
        mem("roster", RecordBatch::try_new(Arc::new(schema), columns))?;
        narrow("roster")?;
        available.push("roster");
    }
    Ok(available)
}

/// Plan `report` over `ctx` with `params` bound; the caller collects or writes the frame.
pub async fn plan(ctx: &SessionContext, report: &Report, params: &ReportParams, available: &[&str]) -> Result<DataFrame, ReportError> {
    if let Some(table) = report.needs.iter().find(|t| !available.contains(&t.as_str())) {
        return Err(ReportError::Needs { report: report.name.clone(), table: table.clone() });
    }
    let query_err = |source| ReportError::Query { report: report.name.clone(), source };
    let at = |ms: i64| ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into()));
    let values: HashMap<String, ScalarAndMetadata> = [("from", at(params.from)), ("to", at(params.to)), ("location", ScalarValue::Utf8(params.location.clone()))]
        .into_iter()
        .map(|(name, value)| (name.to_string(), ScalarAndMetadata::new(value, None)))
        .collect();
    let frame = ctx.sql_with_options(&report.sql, seedwatch_archive::query::read_only()).await.map_err(query_err)?;
    frame.with_param_values(ParamValues::Map(values)).map_err(query_err)
}

/// The default review period of a report: a day, a week, 30 or 90 days, by its `review`.
pub fn default_period_ms(report: &Report) -> i64 {
    const DAY: i64 = 86_400_000;
    let review = report.review.to_ascii_lowercase();
    if review.starts_with("weekly") {
        7 * DAY
    } else if review.starts_with("monthly") {
        30 * DAY
    } else if review.starts_with("quarterly") {
        90 * DAY
    } else {
        DAY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_gives_title_review_needs_and_description_and_bad_headers_name_their_line() {
        let text = "-- title: Failed logins\n-- review: daily (000 §7.2)\n-- needs: roster\n-- Who failed to log in.\n\nSELECT 1\n";
        let r = parse_report(Path::new("reports/failed-logins.sql"), text).expect("parses");
        assert_eq!((r.name.as_str(), r.title.as_str(), r.review.as_str(), r.needs.clone(), r.description.as_str()), ("failed-logins", "Failed logins", "daily (000 §7.2)", vec!["roster".to_string()], "Who failed to log in."));
        assert_eq!(r.sql.trim(), "SELECT 1");
        assert_eq!(default_period_ms(&r), 86_400_000);
        let e = parse_report(Path::new("r.sql"), "-- title: x\n-- review: daily\n-- needs: payroll\nSELECT 1").expect_err("unknown table");
        assert_eq!(e.to_string(), "r.sql:3: field `needs`: unknown table `payroll` (known: locations, roster)");
        let e = parse_report(Path::new("r.sql"), "-- review: weekly\nSELECT 1").expect_err("no title");
        assert!(e.to_string().starts_with("r.sql:1: field `title`"), "{e}");
        let e = parse_report(Path::new("r.sql"), "-- title: x\n-- review: weekly\n").expect_err("no sql");
        assert!(e.to_string().contains("no SQL statement"), "{e}");
    }
}
