//! `seedwatch rules backfill`: evaluate rules over archived history and add
//! their findings to the archive, so a new or changed rule can be tried on
//! past data before it goes live.
//!
//! The engine first rebuilds its state as of `from` (the same warm-up a
//! restarted detector does, `seedwatch_detect::resume`), then reads each
//! family's events in `[from, to)` in time order with DataFusion and runs the
//! rules over them. Finding ids are deterministic, so findings the live
//! pipeline already archived are recognised and not written twice.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use seedwatch_archive::query::{run_query, stream_query};
use seedwatch_archive::{open_session, ArchiveWriter, CommitStats, Sink, WriterOptions};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::resume::conform;
use seedwatch_detect::{load_rules, Detector, RuleEngine};
use seedwatch_schemas::finding::findings_to_batch;
use seedwatch_schemas::{EventBatch, Family, Finding, Table};

use crate::pipeline::block_on;

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
    let reference = Reference::load(&opts.rules, opts.locations.as_deref(), opts.roster.as_deref())?;
    // Every event in the range is evaluated: history has no "late".
    let mut engine = RuleEngine::with_reference(rules, Arc::new(reference))?.with_allowed_lateness(i64::MAX);
    let mut report = BackfillReport { skipped_rules: engine.skipped().iter().map(|(r, w)| (r.clone(), *w)).collect(), ..BackfillReport::default() };
    for (rule, why) in engine.skipped() {
        tracing::warn!(rule = %rule, reason = why, "rule skipped");
    }
    report.per_rule = engine.rules().map(|r| (r.id.clone(), RuleCount::default())).collect();
    let families: Vec<Family> = Family::ALL.into_iter().filter(|f| engine.rules().any(|r| r.family == *f)).collect();
    let rule_list = report.per_rule.keys().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(", ");
    if rule_list.is_empty() {
        return Err(anyhow!("no rule to evaluate (all skipped for lack of reference data: pass --locations and --roster)"));
    }

    let mut findings = Vec::new();
    let (archived, newest) = block_on(async {
        let ctx = open_session(&opts.archive).await?;
        for step in engine.warmup_plan(opts.from) {
            report.warmup_rows += stream_query(&ctx, &step.sql, |batch| engine.replay(&step, &batch).map(|_| ()).map_err(anyhow::Error::from)).await?;
        }
        engine.advance(opts.from - 1);

        let mut archived: HashSet<String> = HashSet::new();
        for batch in run_query(&ctx, &format!("SELECT finding_id FROM findings WHERE rule IN ({rule_list})")).await? {
            let ids = seedwatch_schemas::arrow::compute::cast(batch.column(0), &seedwatch_schemas::arrow::datatypes::DataType::Utf8)?;
            use seedwatch_schemas::arrow::array::AsArray;
            archived.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
        }

        let range = seedwatch_detect::resume::time_range(opts.from, opts.to);
        let mut newest = i64::MIN;
        for family in families {
            let total = count(&ctx, &format!("SELECT count(*) FROM {} WHERE {range}", family.as_str())).await?;
            let sql = seedwatch_detect::resume::events_query(family, opts.from, opts.to);
            let mut done = 0u64;
            let mut last_progress = Instant::now();
            let mut progress_printed = false;
            stream_query(&ctx, &sql, |batch| {
                let batch = conform(family, &batch).map_err(|e| anyhow!("reading {family} events: {e}"))?;
                done += batch.num_rows() as u64;
                newest = newest.max(max_time(&batch));
                engine.process(&EventBatch { family, batch }, &mut findings)?;
                if opts.progress && last_progress.elapsed() >= Duration::from_secs(2) {
                    eprint!("\rbackfill: {family} {done} of {total} events ({:.0}%), {} findings so far   ", 100.0 * done as f64 / total.max(1) as f64, findings.len());
                    last_progress = Instant::now();
                    progress_printed = true;
                }
                Ok::<(), anyhow::Error>(())
            })
            .await
            .with_context(|| format!("backfilling {family}"))?;
            if progress_printed {
                eprintln!("\rbackfill: {family} {done} events read{}", " ".repeat(40));
            }
            report.events += done;
        }
        Ok((archived, newest))
    })?;
    if newest != i64::MIN {
        engine.advance(newest);
    }
    engine.flush(&mut findings);
    seedwatch_detect::engine::sort_findings(&mut findings);

    for f in &findings {
        let count = report.per_rule.entry(f.rule.clone()).or_default();
        count.findings += 1;
        if !archived.contains(&f.finding_id) {
            count.new += 1;
        }
    }
    report.new_findings = findings.into_iter().filter(|f| !archived.contains(&f.finding_id)).collect();
    if !opts.dry_run && !report.new_findings.is_empty() {
        let mut sink = ArchiveWriter::open(&opts.archive, WriterOptions::default()).with_context(|| format!("opening the archive at {}", opts.archive.display()))?;
        sink.write(Table::Findings, &findings_to_batch(&report.new_findings)?)?;
        report.commit = sink.commit()?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The newest `time` of an event batch (`i64::MIN` when empty).
fn max_time(batch: &seedwatch_schemas::arrow::array::RecordBatch) -> i64 {
    use seedwatch_schemas::arrow::array::AsArray;
    use seedwatch_schemas::arrow::datatypes::TimestampMillisecondType;
    batch
        .column_by_name("time")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .and_then(|t| t.values().iter().copied().max())
        .unwrap_or(i64::MIN)
}

/// The single integer a `SELECT count(*)` returns.
async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<u64> {
    use seedwatch_schemas::arrow::array::AsArray;
    use seedwatch_schemas::arrow::datatypes::Int64Type;
    let batches = run_query(ctx, sql).await?;
    Ok(batches.first().and_then(|b| b.column(0).as_primitive_opt::<Int64Type>()).map_or(0, |c| c.value(0).max(0) as u64))
}
