//! SQL over the archive with DataFusion.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{col, lit, LogicalPlan, LogicalPlanBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use seedwatch_schemas::Table;

use crate::printable::{printable_batch, Target};
use crate::store::ArchiveRoot;
use crate::writer::parquet_files;
use crate::ArchiveError;

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of row objects.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown format `{other}` (expected table, csv or json)")),
        }
    }
}

fn query_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Query(e.to_string())
}

/// The schema a table has in SQL: its file schema plus the `date` partition column.
pub fn sql_schema(table: Table) -> Arc<Schema> {
    let mut fields: Vec<Field> = file_schema(table).fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("date", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The schema the Parquet files are read with: the table's, with strings read
/// as string views. A view of 12 bytes or less (key ids, IPv4 addresses,
/// licenses) is stored inline, so grouping and comparing them never touches
/// or copies the string bytes; longer ones point into the decoded page. This
/// made the analyst queries of benchmark 6 1.5-2.6x faster than `Utf8`.
fn file_schema(table: Table) -> Arc<Schema> {
    let fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| if f.data_type() == &DataType::Utf8 { f.as_ref().clone().with_data_type(DataType::Utf8View) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The schema a Delta table is scanned with: [`file_schema`] plus `date`.
fn scan_schema(table: Table) -> Arc<Schema> {
    let mut fields: Vec<Field> = file_schema(table).fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(crate::layout::DATE_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Which rows a session shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Visibility {
    /// Every row (the archive's own user, detectors, maintenance).
    #[default]
    All,
    /// Only rows of these licenses (a role's, see `seedwatch::access`). Tables without a
    /// `license` column (dead letters: lines that could not be read cannot be attributed)
    /// show nothing, and so does an empty set.
    Licenses(BTreeSet<String>),
}

/// A session with every archive table registered (`login`, `api`, `sync`,
/// `audit`, `findings`, `dead_letter`) and the `findings_latest` view. Tables with no files yet are empty, not
/// missing, so the same SQL works on any archive.
pub async fn open_session(root: impl Into<ArchiveRoot>) -> Result<SessionContext, ArchiveError> {
    open_session_for(root, &Visibility::All).await
}

/// [`open_session`] showing only what `visibility` allows. Each table is registered as a
/// view whose plan filters the table by license; the table itself is registered nowhere,
/// so no SQL (subquery, join, CTE, `information_schema`) can name it, and every view over
/// the tables (`findings_latest`, `suppressed`) sees only the filtered rows.
pub async fn open_session_for(root: impl Into<ArchiveRoot>, visibility: &Visibility) -> Result<SessionContext, ArchiveError> {
    let root: ArchiveRoot = root.into();
    let missing = match &root {
        ArchiveRoot::Local(path) => !path.is_dir(),
        ArchiveRoot::S3(_) => !root.any_under("").await?,
    };
    if missing {
        return Err(ArchiveError::Query(format!("{root} is not an archive (run `seedwatch run --archive {root}` first)")));
    }
    // The visibility rides along in the session, for `run_user_query` and `narrow_table`.
    let config = SessionConfig::new().with_information_schema(true).with_extension(Arc::new(visibility.clone()));
    let ctx = SessionContext::new_with_config(config);
    seedwatch_schemas::sql_functions::register(&ctx);
    for table in Table::ALL {
        if let Some(delta) = crate::delta::open(&root, table).await? {
            // Registers the table's object store (a bucket) with the session too.
            delta.update_datafusion_session(&ctx.state()).map_err(crate::delta::delta_err(table))?;
            register(&ctx, table, crate::delta::provider(&delta, table, scan_schema(table))?, visibility)?;
            continue;
        }
        let Some(root) = root.local() else {
            let empty = MemTable::try_new(sql_schema(table), vec![vec![]]).map_err(query_err)?;
            register(&ctx, table, Arc::new(empty), visibility)?;
            continue;
        };
        let dir = root.join(table.name());
        // An archive written before the table format (read as it is; `archive migrate` converts it).
        if parquet_files(&dir)?.is_empty() {
            let empty = MemTable::try_new(sql_schema(table), vec![vec![]]).map_err(query_err)?;
            register(&ctx, table, Arc::new(empty), visibility)?;
            continue;
        }
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
        let url = format!("{}/", dir.canonicalize().map_err(crate::io_err("resolving", &dir))?.display());
        let config = datafusion::datasource::listing::ListingTableConfig::new(datafusion::datasource::listing::ListingTableUrl::parse(&url).map_err(query_err)?)
            .with_listing_options(options)
            .with_schema(file_schema(table));
        let listing = datafusion::datasource::listing::ListingTable::try_new(config).map_err(query_err)?;
        register(&ctx, table, Arc::new(listing), visibility)?;
    }
    run_query(&ctx, &findings_latest_view()).await?;
    Ok(ctx)
}

/// Register `provider` as `table`, narrowed to what `visibility` shows.
fn register(ctx: &SessionContext, table: Table, provider: Arc<dyn TableProvider>, visibility: &Visibility) -> Result<(), ArchiveError> {
    let provider = match visibility {
        Visibility::All => provider,
        Visibility::Licenses(licenses) => narrowed(table.name(), provider, licenses)?,
    };
    ctx.register_table(table.name(), provider).map_err(query_err)?;
    Ok(())
}

/// What `ctx` shows (set by [`open_session_for`]; everything for a session made elsewhere).
pub fn visibility(ctx: &SessionContext) -> Visibility {
    ctx.state().config().get_extension::<Visibility>().map_or(Visibility::All, |v| v.as_ref().clone())
}

/// Narrow a table registered after the session opened (the reports' `locations` and
/// `roster`) to the session's visibility, by its `license` column (no column: no rows).
pub fn narrow_table(ctx: &SessionContext, name: &str) -> Result<(), ArchiveError> {
    let Visibility::Licenses(licenses) = visibility(ctx) else { return Ok(()) };
    let provider = ctx.deregister_table(name).map_err(query_err)?.ok_or_else(|| ArchiveError::Query(format!("no table `{name}` to narrow")))?;
    ctx.register_table(name, narrowed(name, provider, &licenses)?).map_err(query_err)?;
    Ok(())
}

/// `provider` behind a view that keeps the rows of `licenses`. The view's plan holds the
/// provider itself (inlined into every query that names the table, so filters still reach
/// the files), and nothing else does.
fn narrowed(name: &str, provider: Arc<dyn TableProvider>, licenses: &BTreeSet<String>) -> Result<Arc<dyn TableProvider>, ArchiveError> {
    let license_type = provider.schema().field_with_name("license").map(|f| f.data_type().clone()).ok();
    let keep = match license_type {
        Some(data_type) if !licenses.is_empty() => {
            let value = |l: &String| if data_type == DataType::Utf8View { ScalarValue::Utf8View(Some(l.clone())) } else { ScalarValue::Utf8(Some(l.clone())) };
            col("license").in_list(licenses.iter().map(|l| lit(value(l))).collect(), false)
        }
        _ => lit(false),
    };
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None).and_then(|b| b.filter(keep)).and_then(|b| b.build()).map_err(query_err)?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// What a person's SQL may do: read. No DDL (`CREATE EXTERNAL TABLE`, `CREATE VIEW`, `DROP`),
/// no DML (`INSERT`, `COPY ... TO`), no statements (`SET`, transactions).
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Run a person's `sql` (`query`, the shell) read-only, and collect the result. Where the
/// session shows only some licenses, `EXPLAIN` is refused: a plan's metrics count the rows
/// the filter dropped.
pub async fn run_user_query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, ArchiveError> {
    let plan = ctx.state().create_logical_plan(sql).await.map_err(query_err)?;
    read_only().verify_plan(&plan).map_err(|e| ArchiveError::Query(format!("{e} (queries over the archive are read-only)")))?;
    if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) && visibility(ctx) != Visibility::All {
        return Err(ArchiveError::Query("EXPLAIN is refused to a role that sees only some licenses (a plan's row counts include the rows of others)".into()));
    }
    let df = ctx.execute_logical_plan(plan).await.map_err(query_err)?;
    df.collect().await.map_err(query_err)
}

/// `findings_latest`: the newest version of each finding, as a SOC's queue shows it. The
/// newest is the highest version; a person's status change on a version comes after the
/// detector's row of that version. Rows written before versions existed read as version 1,
/// open.
fn findings_latest_view() -> String {
    let columns: Vec<String> = sql_schema(Table::Findings)
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "version" => "coalesce(version, 1) AS version".to_string(),
            "status" => "coalesce(status, 'open') AS status".to_string(),
            "updated_at" => "coalesce(updated_at, detected_at) AS updated_at".to_string(),
            name => format!("\"{name}\""),
        })
        .collect();
    format!(
        "CREATE VIEW findings_latest AS SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY finding_id \
         ORDER BY coalesce(version, 1) DESC, coalesce(updated_at, detected_at) DESC, changed_by IS NULL) AS seedwatch_newest \
         FROM findings) WHERE seedwatch_newest = 1",
        columns.join(", ")
    )
}

/// Narrow the family tables (`login`, `api`, `sync`, `audit`) of `ctx` to the
/// rows matching `predicate` (SQL over their columns), so that queries written
/// for the whole archive see only, say, the licenses of one Kafka partition.
/// Each table becomes a view over `<table>_unfiltered`; filters on `date`
/// still reach the files, so partition pruning keeps working.
pub async fn restrict_events(ctx: &SessionContext, predicate: &str) -> Result<(), ArchiveError> {
    for family in seedwatch_schemas::Family::ALL {
        let name = family.as_str();
        let unfiltered = format!("{name}_unfiltered");
        let provider = ctx.deregister_table(name).map_err(query_err)?.ok_or_else(|| ArchiveError::Query(format!("no table `{name}` to restrict")))?;
        ctx.register_table(unfiltered.as_str(), provider).map_err(query_err)?;
        run_query(ctx, &format!("CREATE VIEW {name} AS SELECT * FROM {unfiltered} WHERE {predicate}")).await?;
    }
    Ok(())
}

/// Run `sql` and collect the result.
pub async fn run_query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, ArchiveError> {
    let df = ctx.sql(sql).await.map_err(query_err)?;
    df.collect().await.map_err(query_err)
}

/// Run `sql` and hand each result batch to `each` as it is produced, so a
/// large result (a replay of weeks of events) is never held whole. Returns rows seen.
pub async fn stream_query<E: From<ArchiveError>>(ctx: &SessionContext, sql: &str, mut each: impl FnMut(RecordBatch) -> Result<(), E>) -> Result<u64, E> {
    use futures::StreamExt;
    let df = ctx.sql(sql).await.map_err(query_err)?;
    let mut stream = df.execute_stream().await.map_err(query_err)?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(query_err)?;
        rows += batch.num_rows() as u64;
        if batch.num_rows() > 0 {
            each(batch)?;
        }
    }
    Ok(rows)
}

/// The newest event time in the archive's event tables, if it has any.
pub async fn newest_event_time(ctx: &SessionContext) -> Result<Option<i64>, ArchiveError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let sql = seedwatch_schemas::Family::ALL.iter().map(|f| format!("SELECT max(time) AS newest FROM {}", f.as_str())).collect::<Vec<_>>().join(" UNION ALL ");
    let mut newest = None;
    for batch in run_query(ctx, &sql).await? {
        let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None)).map_err(query_err)?;
        for t in column.as_primitive::<TimestampMillisecondType>().iter().flatten() {
            newest = newest.max(Some(t));
        }
    }
    Ok(newest)
}

/// Render batches in `format`, values from logs neutralised (see [`crate::printable`]).
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String, ArchiveError> {
    match format {
        OutputFormat::Table => {
            let shown = batches.iter().map(|b| printable_batch(b, Target::Terminal)).collect::<Result<Vec<_>, _>>()?;
            datafusion::arrow::util::pretty::pretty_format_batches(&shown).map(|t| t.to_string()).map_err(query_err)
        }
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    writer.write(&printable_batch(b, Target::Csv)?).map_err(query_err)?;
                }
            }
            String::from_utf8(buf).map_err(query_err)
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut buf);
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                writer.write_batches(&refs).map_err(query_err)?;
                writer.finish().map_err(query_err)?;
            }
            let text = String::from_utf8(buf).map_err(query_err)?;
            // An empty result is an empty array, not an empty string.
            Ok(if text.trim().is_empty() { "[]".to_string() } else { crate::printable::json_text(text) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ListBuilder, StringBuilder};

    #[test]
    fn csv_shows_a_list_column_as_text() {
        let mut evidence = ListBuilder::new(StringBuilder::new());
        evidence.values().append_value("e1");
        evidence.values().append_value("e2");
        evidence.append(true);
        evidence.append(false);
        let column = evidence.finish();
        let schema = Arc::new(Schema::new(vec![Field::new("evidence", column.data_type().clone(), true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap_or_else(|e| panic!("{e}"));
        let csv = format_batches(&[batch], OutputFormat::Csv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(csv, "evidence\n\"[e1, e2]\"\n\"\"\n");
    }

    #[test]
    fn no_format_prints_a_raw_control_character() {
        let users = datafusion::arrow::array::StringArray::from(vec!["\x1b[2J\x1b]0;pwned\x07mallory", "=1+1"]);
        let schema = Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(users)]).unwrap_or_else(|e| panic!("{e}"));
        for format in [OutputFormat::Table, OutputFormat::Csv, OutputFormat::Json] {
            let shown = format_batches(std::slice::from_ref(&batch), format).unwrap_or_else(|e| panic!("{e}"));
            assert!(!shown.contains(['\x1b', '\x07']), "{format:?}: {shown:?}");
            assert!(shown.contains("mallory"), "{format:?}: {shown:?}");
        }
        let csv = format_batches(&[batch], OutputFormat::Csv).unwrap_or_else(|e| panic!("{e}"));
        assert!(csv.ends_with("\n'=1+1\n"), "{csv:?}");
    }
}
