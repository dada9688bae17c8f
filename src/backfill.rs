//! `seedwatch rules backfill`: evaluate rules over archived history and add
//! their findings to the archive, so a new or changed rule can be tried on
//! past data before it goes live.
//!
//! The engines first rebuild their state as of `from` (the same warm-up a
//! restarted detector does, `seedwatch_detect::resume`); then the runtime's
//! driver runs with one input per family (its archived events in `[from, to)`,
//! in time order, from DataFusion), merged in event time as a live run's inputs
//! are, over N partitions. Finding ids are deterministic, so findings the live
//! pipeline already archived are recognised and not written twice.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use seedwatch_archive::query::run_query;
use seedwatch_archive::{open_session, ArchiveError, ArchiveWriter, CommitStats, Sink, Written};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::resume::conform;
use seedwatch_detect::load_rules;
use seedwatch_ingest::{DecodeStats, DecodedChunk};
use seedwatch_runtime::{Driver, DriverOptions, Input, Reader, RuntimeError};
use seedwatch_schemas::arrow::array::{AsArray, BooleanArray, RecordBatch};
use seedwatch_schemas::arrow::compute::filter_record_batch;
use seedwatch_schemas::{EventBatch, Family, Finding, Table};

/// What `seedwatch rules backfill` needs.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Archive root (read, and written unless `dry_run`).
    pub archive: PathBuf,
    /// Rules directory.
    pub rules: PathBuf,
    /// Only these rule ids (all when empty).
    pub only: Vec<String>,
    /// locations.csv, for schedule rules.
    pub locations: Option<PathBuf>,
    /// roster.csv, for reference rules.
    pub roster: Option<PathBuf>,
    /// Start of the range (ms, inclusive).
    pub from: i64,
    /// End of the range (ms, exclusive).
    pub to: i64,
    /// Report, write nothing.
    pub dry_run: bool,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// File holding the key that signs the archive's manifest (created if missing).
    pub signing_key: PathBuf,
}

/// Per-rule counts of a backfill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCount {
    /// Findings the rule produced over the range.
    pub findings: u64,
    /// Of those, findings the archive did not hold yet.
    pub new: u64,
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct BackfillReport {
    /// Events read in the range.
    pub events: u64,
    /// Archived rows replayed to rebuild state as of `from`.
    pub warmup_rows: u64,
    /// Counts for every evaluated rule (zero rows included).
    pub per_rule: BTreeMap<String, RuleCount>,
    /// The findings the archive did not hold yet, sorted.
    pub new_findings: Vec<Finding>,
    /// What was written (empty on a dry run).
    pub commit: CommitStats,
    /// Rules not evaluated for lack of reference data.
    pub skipped_rules: Vec<(String, &'static str)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Evaluate the rules over `[from, to)` of the archive.
pub fn backfill(opts: &BackfillOptions) -> Result<BackfillReport> {
    let started = Instant::now();
    if opts.from >= opts.to {
        return Err(anyhow!("--from must be before --to"));
    }
    let mut rules = load_rules(&opts.rules)?;
    if !opts.only.is_empty() {
        let known: HashSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        if let Some(unknown) = opts.only.iter().find(|id| !known.contains(id.as_str())) {
            let mut ids: Vec<&str> = known.into_iter().collect();
            ids.sort_unstable();
            return Err(anyhow!("unknown rule `{unknown}` in {} (known: {})", opts.rules.display(), ids.join(", ")));
        }
        rules.retain(|r| opts.only.contains(&r.id));
    }
    let reference = Arc::new(Reference::load(&opts.rules, opts.locations.as_deref(), opts.roster.as_deref())?);
    // Every event in the range is evaluated: history has no "late".
    let mut engines = crate::pipeline::engines(&rules, &reference, crate::pipeline::partition_count(0), i64::MAX)?;
    let engine = &engines[0];
    let mut report = BackfillReport { skipped_rules: engine.skipped().iter().map(|(r, w)| (r.clone(), *w)).collect(), ..BackfillReport::default() };
    for (rule, why) in engine.skipped() {
        tracing::warn!(rule = %rule, reason = why, "rule skipped");
    }
    report.per_rule = engine.rules().map(|r| (r.id.clone(), RuleCount::default())).collect();
    let families: Vec<Family> = Family::ALL.into_iter().filter(|f| engine.rules().any(|r| r.family == *f)).collect();
    let rule_list = report.per_rule.keys().map(|r| format!("'{}'", r.replace('\'', "''"))).collect::<Vec<_>>().join(", ");
    if rule_list.is_empty() {
        return Err(anyhow!("no rule to evaluate (all skipped for lack of reference data: pass --locations and --roster)"));
    }

    let archived = HashSet::new();
    // Each family's events in the range, in time order, are one input of the driver: the
    // families advance together in event time, as live.
    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?);
    let (inputs, archived, warmup_rows) = runtime.block_on(async {
        let ctx = open_session(&opts.archive).await?;
        let resumed = crate::pipeline::resume_partitions(&mut engines, &ctx, Some(opts.from), crate::pipeline::Judge::AtUntil).await?;
        let mut archived = archived;
        for batch in run_query(&ctx, &format!("SELECT finding_id FROM findings WHERE rule IN ({rule_list})")).await? {
            let ids = seedwatch_schemas::arrow::compute::cast(batch.column(0), &seedwatch_schemas::arrow::datatypes::DataType::Utf8)?;
            use seedwatch_schemas::arrow::array::AsArray;
            archived.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
        }
        let mut inputs: Vec<Box<dyn Input>> = Vec::new();
        for family in families {
            let sql = seedwatch_detect::resume::events_query(family, opts.from, opts.to);
            let stream = ctx.sql(&sql).await?.execute_stream().await?;
            inputs.push(Box::new(ArchiveInput { family, stream, runtime: Arc::clone(&runtime) }));
        }
        Ok::<_, anyhow::Error>((inputs, archived, resumed.map_or(0, |r| r.rows)))
    })?;
    report.warmup_rows = warmup_rows;

    let writer = if opts.dry_run {
        None
    } else {
        Some(crate::archive_admin::open_writer(&opts.archive, &opts.signing_key)?)
    };
    let sink = BackfillSink { writer, archived };
    let driver = Driver::new(sink, engines, DriverOptions { progress: opts.progress, ..DriverOptions::default() })?;
    let (done, _) = driver.run(Reader::new(inputs))?;
    report.events = done.decode.events_total();
    for (rule, n) in &done.emitted_per_rule {
        report.per_rule.entry(rule.clone()).or_default().findings = *n;
    }
    for f in &done.findings {
        report.per_rule.entry(f.rule.clone()).or_default().new += 1;
    }
    report.new_findings = done.findings;
    report.commit = done.commit;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One family's archived events in the range, in time order, as a driver input.
struct ArchiveInput {
    family: Family,
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ArchiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveInput").field("family", &self.family).finish_non_exhaustive()
    }
}

impl Input for ArchiveInput {
    fn next_chunk(&mut self) -> Result<Option<DecodedChunk>, RuntimeError> {
        use futures::StreamExt;
        let family = self.family;
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Input { what: format!("archived {family} events"), source };
        let Some(batch) = self.runtime.block_on(self.stream.next()) else { return Ok(None) };
        let batch = batch.map_err(|e| failed(Box::new(e)))?;
        let batch = conform(family, &batch).map_err(|e| failed(e.into()))?;
        let mut stats = DecodeStats { lines: batch.num_rows() as u64, ..DecodeStats::default() };
        stats.events[family.index()] = batch.num_rows() as u64;
        Ok(Some(DecodedChunk { events: vec![EventBatch { family, batch }], dead_letters: None, stats }))
    }

    fn kind(&self) -> &'static str {
        "archive"
    }
}

/// Backfill's sink: the events are the archive's own (handed on as new, never written
/// again); findings the archive does not hold yet are new, and are written unless this
/// is a dry run.
#[derive(Debug)]
struct BackfillSink {
    writer: Option<ArchiveWriter>,
    /// Ids of the archive's findings of the evaluated rules, and of those found since.
    archived: HashSet<String>,
}

impl Sink for BackfillSink {
    fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<Written, ArchiveError> {
        if table != Table::Findings {
            return Ok(Written { kept: batch.num_rows() as u64, duplicates: 0, new_rows: None });
        }
        let ids = batch
            .column_by_name("finding_id")
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| ArchiveError::Schema { table: table.name(), message: "no string finding_id column".into() })?;
        let new: BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| self.archived.insert(id.to_string())))).collect();
        let kept = new.true_count() as u64;
        if let Some(writer) = &mut self.writer {
            writer.write(table, &filter_record_batch(batch, &new).map_err(|e| ArchiveError::Query(e.to_string()))?)?;
        }
        Ok(Written { kept, duplicates: batch.num_rows() as u64 - kept, new_rows: Some(new) })
    }

    fn commit(&mut self) -> Result<CommitStats, ArchiveError> {
        self.writer.as_mut().map_or(Ok(CommitStats::default()), Sink::commit)
    }
}
