//! Where a table's files live and what they hold: one place for the paths every part of the
//! archive (writer, compaction, retention, the manifest's checks) reads and writes.
//!
//! Each file holds its rows' `date` (the day of the table's time column, `YYYY-MM-DD`) as a
//! column of its own, and the Delta tables have no partition column. A writer's file holds
//! one day and sits in that day's folder, `<table>/date=YYYY-MM-DD/`; compaction puts a small
//! table's days of one month into one file in `<table>/month=YYYY-MM/` (a file costs ~2.5 kB
//! whatever it holds: a quiet site's day of logins is a few hundred rows). Queries skip files
//! by the `date` and time ranges each file's Delta statistics give, whichever folder it is in.
//!
//! Until the day layout's successor, `date` was a Delta partition column, taken from the
//! folder and not stored in the files: `seedwatch archive migrate` rewrites such tables.

use std::sync::Arc;

use chrono::NaiveDate;
use seedwatch_schemas::arrow::array::{ArrayRef, RecordBatch, StringArray};
use seedwatch_schemas::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use seedwatch_schemas::Table;

use crate::ArchiveError;

/// The column holding each row's day, `YYYY-MM-DD` (UTC).
pub const DATE_COLUMN: &str = "date";

/// Milliseconds in a day: a time's day number is `time.div_euclid(DAY_MS)`.
pub const DAY_MS: i64 = 86_400_000;

/// What a table's files hold: its columns, then [`DATE_COLUMN`].
pub fn stored_schema(table: Table) -> SchemaRef {
    let mut fields: Vec<Field> = table.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DATE_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The date of a day number since the epoch.
pub fn day_date(day: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS).map(|d| d.date_naive())
}

/// `YYYY-MM-DD` of a day number since the epoch.
pub fn day_string(day: i64) -> String {
    match day_date(day) {
        Some(d) => d.format("%Y-%m-%d").to_string(),
        None => format!("day-{day}"),
    }
}

/// The folder (under the table) of a writer's files of `day`: `date=YYYY-MM-DD`.
pub fn day_dir(day: i64) -> String {
    format!("date={}", day_string(day))
}

/// The folder (under the table) of compacted files of `date`'s month: `month=YYYY-MM`.
pub fn month_dir(date: NaiveDate) -> String {
    format!("month={}", month_of(date))
}

/// `YYYY-MM` of a day.
pub fn month_of(date: NaiveDate) -> String {
    date.format("%Y-%m").to_string()
}

/// What a data file's path says of the days it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// A writer's file (or a compacted day): one day.
    Day(NaiveDate),
    /// A compacted month (its first day): some of its days.
    Month(NaiveDate),
}

impl Span {
    /// The first and last day the file may hold.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        match self {
            Span::Day(date) => (*date, *date),
            Span::Month(first) => (*first, *first + chrono::Months::new(1) - chrono::Days::new(1)),
        }
    }

    /// Whether the file may hold rows of days in `[from, to]`.
    pub fn overlaps(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
        let (first, last) = self.days();
        from.is_none_or(|from| last >= from) && to.is_none_or(|to| first <= to)
    }
}

/// The span of a data file from its path (under the root or under its table): its
/// `date=YYYY-MM-DD` or `month=YYYY-MM` folder; `None` for anything else.
pub fn span_of(path: &str) -> Option<Span> {
    let mut parts = path.rsplit('/');
    let name = parts.next()?;
    if !name.ends_with(".parquet") {
        return None;
    }
    let folder = parts.next()?;
    if let Some(date) = folder.strip_prefix("date=") {
        return NaiveDate::parse_from_str(date, "%Y-%m-%d").ok().map(Span::Day);
    }
    let month = folder.strip_prefix("month=")?;
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok().map(Span::Month)
}

/// A [`DATE_COLUMN`] of `rows` rows, all `date` (`YYYY-MM-DD`).
pub fn date_column(date: &str, rows: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(date, rows)))
}

/// `batch` (in the table's schema) with the [`DATE_COLUMN`] of `day` appended, as written.
pub fn with_date(table: Table, batch: &RecordBatch, day: i64) -> Result<RecordBatch, ArchiveError> {
    let mut columns = batch.columns().to_vec();
    columns.push(date_column(&day_string(day), batch.num_rows()));
    RecordBatch::try_new(stored_schema(table), columns).map_err(|e| ArchiveError::Schema { table: table.name(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn a_path_names_its_day_or_its_month() {
        assert_eq!(span_of("login/date=2026-09-01/part-a.parquet"), Some(Span::Day(d("2026-09-01"))));
        assert_eq!(span_of("date=2026-09-01/part-a.parquet"), Some(Span::Day(d("2026-09-01"))));
        assert_eq!(span_of("login/month=2026-09/part-compact-a.parquet"), Some(Span::Month(d("2026-09-01"))));
        assert_eq!(span_of("login/_delta_log/00000000000000000010.checkpoint.parquet"), None);
        assert_eq!(span_of("login/month=2026-13/part.parquet"), None);
        assert_eq!(span_of("login/date=2026-09-01/part.json"), None);
    }

    #[test]
    fn a_month_overlaps_the_ranges_that_touch_any_of_its_days() {
        let september = Span::Month(d("2026-09-01"));
        assert_eq!(september.days(), (d("2026-09-01"), d("2026-09-30")));
        assert!(september.overlaps(Some(d("2026-09-30")), None));
        assert!(!september.overlaps(Some(d("2026-10-01")), None));
        assert!(september.overlaps(None, Some(d("2026-09-01"))));
        assert!(!september.overlaps(None, Some(d("2026-08-31"))));
        assert!(Span::Day(d("2026-09-01")).overlaps(Some(d("2026-09-01")), Some(d("2026-09-01"))));
        assert_eq!(day_dir(0), "date=1970-01-01");
        assert_eq!(month_dir(d("2026-09-17")), "month=2026-09");
    }
}
