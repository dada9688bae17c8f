//! The embedded pipeline: `seedwatch run` configures the runtime's one driver
//! (`seedwatch_runtime::Driver`) with file or stdin inputs, N in-process
//! partitions and the archive as the sink. Rule fixtures and goldens use the same
//! driver with a memory sink (`detect_source`); the Kafka detector
//! (`detect_daemon`) configures it too, and restores state with the functions here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use seedwatch_archive::CommitStats;
use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, CompiledRule, Detector, RuleEngine};
use seedwatch_ingest::{file_source, stdin_source, ChunkLimits, DecodeStats, Decoder, Fingerprinter, Redactor, Source};
use seedwatch_runtime::{DecodePool, Driver, DriverOptions, Input, LineInput, MemorySink, Reader};
use seedwatch_schemas::Finding;

use crate::internal_events::RulesLoaded;

/// How far ahead of its arrival an event may be dated unless told otherwise.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 15 * 60 * 1000;

/// What `seedwatch run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Input files; `-` is stdin. Each is its own stream, merged in event time.
    pub inputs: Vec<PathBuf>,
    /// Archive root.
    pub archive: seedwatch_archive::ArchiveRoot,
    /// Rules directory.
    pub rules: PathBuf,
    /// Optional locations.csv (validated now; used by schedule rules).
    pub locations: Option<PathBuf>,
    /// Optional roster.csv (validated now; used by reference rules).
    pub roster: Option<PathBuf>,
    /// File holding the local fingerprint secret (created if missing).
    pub fingerprint_key: PathBuf,
    /// File holding the key that signs the archive's manifest (created if missing).
    pub signing_key: PathBuf,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// How far behind its license's newest event an event may arrive and still be evaluated (ms).
    pub allowed_lateness_ms: i64,
    /// How far ahead of its arrival an event may be dated (ms); later ones are dead-lettered.
    pub max_clock_skew_ms: i64,
    /// In-process partitions (tasks), each with its own rule engine; 0 picks the number of cores.
    pub partitions: usize,
    /// Where finding versions are posted as alerts, if anywhere.
    pub alertmanager: Option<crate::alertmanager::Alertmanager>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Decode counts over all inputs.
    pub decode: DecodeStats,
    /// Rows skipped because the archive already had them, by table.
    pub duplicates: BTreeMap<&'static str, u64>,
    /// Every finding emitted.
    pub findings: Vec<Finding>,
    /// What the archive wrote.
    pub commit: CommitStats,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Number of inputs read.
    pub inputs: usize,
    /// Rules not evaluated for lack of reference data, with the reason.
    pub skipped_rules: Vec<(String, &'static str)>,
    /// Events beyond the allowed lateness of their license: archived, not evaluated.
    pub late_events: u64,
    /// Absence findings withdrawn: the key's own delayed events showed no gap.
    pub retracted_silences: u64,
    /// Rows exceptions dropped, by (rule, exception).
    pub suppressed: BTreeMap<(String, String), u64>,
    /// Partitions (tasks) the run used.
    pub partitions: usize,
    /// Most rows held at once waiting for the other inputs (the reader keeps it near a chunk per input).
    pub peak_held_rows: usize,
    /// State restored from the archive before reading input.
    pub resumed: Option<Resumed>,
}

/// The number of partitions `requested` means: 0 is one per core.
pub fn partition_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Build `partitions` engines over the same rules and reference data.
pub fn engines(rules: &[CompiledRule], reference: &Arc<Reference>, partitions: usize, allowed_lateness_ms: i64) -> Result<Vec<RuleEngine>> {
    (0..partitions.max(1))
        .map(|_| Ok(RuleEngine::with_reference(rules.to_vec(), Arc::clone(reference))?.with_allowed_lateness(allowed_lateness_ms)))
        .collect()
}

/// The operator's locations, which every line's location and state must agree with (see
/// [`seedwatch_ingest::Tenancy`]); `None` without a locations file.
pub fn tenancy(reference: &Reference) -> Option<Arc<seedwatch_ingest::Tenancy>> {
    if reference.locations.is_empty() {
        return None;
    }
    let rows = reference.locations.values().map(|l| (l.row.location.as_str(), l.row.license.as_str(), l.row.state.as_str()));
    Some(Arc::new(seedwatch_ingest::Tenancy::new(rows)))
}

/// Run the embedded pipeline. Configuration is loaded and checked before any
/// input is read, so a bad rule or a missing file stops the run with nothing written.
pub fn run(opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let reference = Arc::new(Reference::load(&opts.rules, opts.locations.as_deref(), opts.roster.as_deref())?);
    let partitions = partition_count(opts.partitions);
    let mut engines = engines(&load_rules(&opts.rules)?, &reference, partitions, opts.allowed_lateness_ms)?;
    let redactor = Redactor::new(Fingerprinter::load_or_create(&opts.fingerprint_key)?);
    // Each input its own stream with its own decoder (the clock-skew bound is arrival's).
    let tenancy = tenancy(&reference);
    let decoder = || {
        let decoder = Decoder::new(redactor.clone()).with_max_clock_skew(opts.max_clock_skew_ms);
        match &tenancy {
            Some(t) => decoder.with_tenancy(Arc::clone(t)),
            None => decoder,
        }
    };
    // Decode is most of the work: every input's chunks are decoded on one pool, a thread per core.
    let pool = DecodePool::new(None)?;
    let mut inputs: Vec<Box<dyn Input>> = Vec::new();
    for input in &opts.inputs {
        let (source, kind): (Box<dyn Source>, _) = if input.as_os_str() == "-" {
            (Box::new(stdin_source(ChunkLimits::default())), "stdin")
        } else {
            (Box::new(file_source(input, ChunkLimits::default())?), "file")
        };
        inputs.push(Box::new(LineInput::new(source, decoder(), kind).decode_on(&pool)));
    }
    if inputs.is_empty() {
        return Err(anyhow!("no input: pass --input FILE (or - for stdin)"));
    }
    let engine = &engines[0];
    for (rule, why) in engine.skipped() {
        tracing::warn!(rule = %rule, reason = why, "rule skipped");
    }
    let licenses = reference.licenses();
    let rule_ids: Vec<&str> = engine.rules().map(|r| r.id.as_str()).collect();
    RulesLoaded { absence_limits: &engine.absence_limits(seedwatch_schemas::STATE_CODES), rules: &rule_ids, licenses: &licenses }.emit();
    let skipped_rules = engine.skipped().iter().map(|(r, why)| (r.clone(), *why)).collect();
    // The writer first: opening it finishes what a stopped writer recorded but left out of
    // place, and the state must be rebuilt from those events too.
    let sink = crate::archive_admin::open_writer(&opts.archive, &opts.signing_key)?;
    let resumed = resume_from_archive(&mut engines, &opts.archive)?;

    let report_inputs = inputs.len();
    let mut driver = Driver::new(sink, engines, DriverOptions { progress: opts.progress, ..DriverOptions::default() })?;
    if let Some(mut alertmanager) = opts.alertmanager.clone() {
        driver = driver.with_publisher(Box::new(move |findings| {
            alertmanager.post_or_count(findings);
            Ok(())
        }));
    }
    let (done, _sink) = driver.run(Reader::new(inputs))?;
    Ok(RunReport {
        decode: done.decode,
        duplicates: done.duplicates,
        findings: done.findings,
        commit: done.commit,
        seconds: started.elapsed().as_secs_f64(),
        inputs: report_inputs,
        skipped_rules,
        late_events: done.late_events,
        retracted_silences: done.retracted_silences,
        suppressed: done.suppressed,
        partitions,
        peak_held_rows: done.peak_held_rows,
        resumed,
    })
}

/// What [`resume_from_archive`] restored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resumed {
    /// State is as if every archived event before this time had been seen.
    pub until: i64,
    /// Archived rows read.
    pub rows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A restarted detector remembers what earlier runs learned: windows, hourly
/// baselines, seen-sets and open absences are rebuilt from the archive with
/// DataFusion (see `seedwatch_detect::resume`), just after the newest archived
/// event, in one pass whose rows each go to the engine of their license's
/// partition (`engines[p]` owns partition `p`). `None` when the archive holds no events.
pub fn resume_from_archive(engines: &mut [RuleEngine], archive: &seedwatch_archive::ArchiveRoot) -> Result<Option<Resumed>> {
    if !archive.exists()? {
        return Ok(None);
    }
    block_on(async {
        let ctx = seedwatch_archive::open_session(archive).await?;
        resume_partitions(engines, &ctx, None, Judge::AtUntil).await
    })
}

/// Whether a restored engine judges absences at once, as of the newest archived event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// `advance(until - 1)`: what the previous run would have concluded (a file re-run).
    AtUntil,
    /// Leave the watermark, and every license's event time, unset. A Kafka detector
    /// re-reads the uncommitted tail of several topics, some of which the archive may
    /// hold further than others (a crash between two files of one commit): judged
    /// against the newest archived event, the others' re-read events would be late.
    /// The first batch released after the restore sets them instead.
    OnNextBatch,
}

/// [`resume_from_archive`] over an open session, whose family tables may be
/// narrowed (the Kafka detector restores one partition's licenses at a time).
pub async fn resume_from_session(engine: &mut RuleEngine, ctx: &datafusion::prelude::SessionContext, until: Option<i64>, judge: Judge) -> Result<Option<Resumed>> {
    resume_partitions(std::slice::from_mut(engine), ctx, until, judge).await
}

/// Restore the engines of `engines.len()` partitions (`engines[p]` owns the
/// licenses of partition `p`). The horizon is never later than the wall clock
/// plus the default clock skew: an event archived with a clock years ahead
/// (before such lines were dead-lettered) must not age every key by decades.
pub async fn resume_partitions(engines: &mut [RuleEngine], ctx: &datafusion::prelude::SessionContext, until: Option<i64>, judge: Judge) -> Result<Option<Resumed>> {
    let started = Instant::now();
    let Some(first) = engines.first() else { return Ok(None) };
    let until = match until {
        Some(t) => t,
        None => match seedwatch_archive::query::newest_event_time(ctx).await? {
            Some(newest) => (newest + 1).min(chrono::Utc::now().timestamp_millis() + DEFAULT_MAX_CLOCK_SKEW_MS),
            None => return Ok(None),
        },
    };
    let partitions = engines.len();
    let mut rows = 0;
    for step in first.warmup_plan(until) {
        let n = seedwatch_archive::query::stream_query(ctx, &step.sql, |batch| {
            for (p, part) in seedwatch_runtime::partition::split_batch(&batch, partitions)? {
                engines[p].replay(&step, &part)?;
            }
            Ok::<(), anyhow::Error>(())
        })
        .await
        .with_context(|| format!("restoring {} from the archive", step.rules.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ")))?;
        tracing::debug!(family = step.family.as_str(), kind = ?step.kind, rows = n, "warm-up step replayed");
        rows += n;
    }
    for engine in engines.iter_mut() {
        match judge {
            // Absences are judged as of the last archived moment, as the previous run would have.
            Judge::AtUntil => {
                // What this publishes, the previous run published.
                engine.advance(until - 1, &mut Vec::new());
            }
            Judge::OnNextBatch => engine.forget_event_time(),
        }
    }
    // Findings the replay reopened continue from their archived versions.
    let mut latest = Vec::new();
    seedwatch_archive::query::stream_query(ctx, "SELECT * FROM findings_latest", |batch| {
        latest.extend(seedwatch_schemas::finding::findings_from_batch(&batch)?);
        Ok::<(), anyhow::Error>(())
    })
    .await
    .context("reading the archived versions of open findings")?;
    for engine in engines.iter_mut() {
        engine.restore_versions(&latest);
    }
    let resumed = Resumed { until, rows, seconds: started.elapsed().as_secs_f64() };
    tracing::info!(rows, seconds = resumed.seconds, "detector state restored from the archive");
    Ok(Some(resumed))
}

/// Run a future on a small runtime: the pipeline is threads, DataFusion is async.
pub fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(future)
}

/// What [`detect_source`] saw.
#[derive(Debug, Default)]
pub struct Detected {
    /// Findings, after the final flush.
    pub findings: Vec<Finding>,
    /// Decode counts.
    pub decode: DecodeStats,
    /// Events beyond the allowed lateness.
    pub late_events: u64,
}

/// Decode and detect a whole source with no archive, through the same driver
/// as `run` (one partition, a memory sink). For rule fixtures and goldens.
pub fn detect_source(engine: RuleEngine, decoder: Decoder, source: Box<dyn Source>) -> Result<Detected> {
    let driver = Driver::new(MemorySink, vec![engine], DriverOptions::default())?;
    let (report, _) = driver.run(Reader::new(vec![Box::new(LineInput::new(source, decoder, "file"))]))?;
    Ok(Detected { findings: report.findings, decode: report.decode, late_events: report.late_events })
}
