//! The embedded pipeline: files (or stdin) → decode → detect → archive, on
//! two threads joined by a bounded channel. The stages only meet through
//! `Source`, `Detector` and `Sink` and the batch types in `schemas`, so the
//! channel can be replaced by Kafka without touching them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use seedwatch_archive::{ArchiveWriter, CommitStats, Sink, WriterOptions, Written};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, Detector, RuleEngine};
use seedwatch_ingest::{file_source, stdin_source, ChunkLimits, DecodeStats, DecodedChunk, Decoder, Fingerprinter, LineChunk, Redactor, Source};
use seedwatch_schemas::finding::findings_to_batch;
use seedwatch_schemas::{EventBatch, Finding, Table};

use crate::internal_events::{ArchiveCommitted, ArchiveWritten, BatchDetected, ChunkDecoded, EventsObserved, FindingsEmitted, OpenFindings, RulesLoaded, WatermarkAdvanced};

/// A long run makes what it archived durable at least this often (and says so in
/// `seedwatch_archive_last_commit_timestamp_seconds`).
const COMMIT_EVERY: Duration = Duration::from_secs(30);

/// What `seedwatch run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Input files; `-` is stdin.
    pub inputs: Vec<PathBuf>,
    /// Archive root.
    pub archive: PathBuf,
    /// Rules directory.
    pub rules: PathBuf,
    /// Optional locations.csv (validated now; used by schedule rules).
    pub locations: Option<PathBuf>,
    /// Optional roster.csv (validated now; used by reference rules).
    pub roster: Option<PathBuf>,
    /// File holding the local fingerprint secret (created if missing).
    pub fingerprint_key: PathBuf,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// How far behind the newest event an event may arrive and still be evaluated (ms).
    pub allowed_lateness_ms: i64,
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
    /// Events beyond the allowed lateness: archived, not evaluated.
    pub late_events: u64,
    /// State restored from the archive before reading input.
    pub resumed: Option<Resumed>,
}

enum Message {
    Chunk { decoded: DecodedChunk, bytes_done: u64, seconds: f64, source_kind: &'static str },
    Failed(anyhow::Error),
}

/// Run the embedded pipeline. Configuration is loaded and checked before any
/// input is read, so a bad rule or a missing file stops the run with nothing written.
pub fn run(opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let rules = load_rules(&opts.rules)?;
    let reference = Reference::load(&opts.rules, opts.locations.as_deref(), opts.roster.as_deref())?;
    let redactor = Redactor::new(Fingerprinter::load_or_create(&opts.fingerprint_key)?)?;
    let mut sources: Vec<(Box<dyn Source>, &'static str)> = Vec::new();
    for input in &opts.inputs {
        if input.as_os_str() == "-" {
            sources.push((Box::new(stdin_source(ChunkLimits::default())), "stdin"));
        } else {
            sources.push((Box::new(file_source(input, ChunkLimits::default())?), "file"));
        }
    }
    if sources.is_empty() {
        return Err(anyhow!("no input: pass --input FILE (or - for stdin)"));
    }
    let total_bytes: Option<u64> = sources.iter().map(|(s, _)| s.size_hint()).sum();
    let mut engine = RuleEngine::with_reference(rules, Arc::new(reference))?.with_allowed_lateness(opts.allowed_lateness_ms);
    for (rule, why) in engine.skipped() {
        tracing::warn!(rule = %rule, reason = why, "rule skipped");
    }
    RulesLoaded { absence_limits: &engine.absence_limits(seedwatch_schemas::STATE_CODES), rules: engine.rules().count() }.emit();
    let resumed = resume_from_archive(&mut engine, &opts.archive, None)?;
    let mut sink = ArchiveWriter::open(&opts.archive, WriterOptions::default())
        .with_context(|| format!("opening the archive at {}", opts.archive.display()))?;

    let inputs = sources.len();
    let (tx, rx) = sync_channel::<Message>(4);
    let decoder_thread = thread::Builder::new().name("seedwatch-decode".into()).spawn(move || {
        let mut decoder = Decoder::new(redactor);
        let mut chunk = LineChunk::new();
        let mut bytes_before = 0;
        for (mut source, source_kind) in sources {
            loop {
                let t = Instant::now();
                let more = match source.next_chunk(&mut chunk) {
                    Ok(more) => more,
                    Err(e) => {
                        let _ = tx.send(Message::Failed(e.into()));
                        return;
                    }
                };
                if !more {
                    break;
                }
                let now_ms = chrono::Utc::now().timestamp_millis();
                let message = match decoder.decode_chunk(&chunk, now_ms) {
                    Ok(decoded) => Message::Chunk { decoded, bytes_done: bytes_before + source.bytes_read(), seconds: t.elapsed().as_secs_f64(), source_kind },
                    Err(e) => Message::Failed(e.into()),
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
            bytes_before += source.bytes_read();
        }
    })?;

    let skipped_rules = engine.skipped().iter().map(|(r, why)| (r.clone(), *why)).collect();
    let mut report = RunReport { inputs, skipped_rules, resumed, ..RunReport::default() };
    let mut findings = Vec::new();
    let mut last_progress = Instant::now();
    let mut last_commit = Instant::now();
    let mut progress_printed = false;
    let mut watermark = i64::MIN;
    for message in rx {
        let (decoded, bytes_done, seconds, source_kind) = match message {
            Message::Chunk { decoded, bytes_done, seconds, source_kind } => (decoded, bytes_done, seconds, source_kind),
            Message::Failed(e) => return Err(e),
        };
        ChunkDecoded { source_kind, stats: &decoded.stats, seconds }.emit();
        report.decode.merge(&decoded.stats);
        for events in &decoded.events {
            archive_and_detect(&mut sink, &mut engine, events, source_kind, &mut report, &mut findings)?;
        }
        if let Some(newest) = decoded.max_event_time() {
            engine.advance(newest);
            watermark = watermark.max(newest);
            WatermarkAdvanced { watermark }.emit();
        }
        if let Some(dead) = &decoded.dead_letters {
            write(&mut sink, Table::DeadLetter, dead, source_kind, &mut report)?;
        }
        emit_findings(&mut sink, &mut findings, source_kind, &mut report)?;
        sink.flush_full()?;
        if last_progress.elapsed() >= Duration::from_secs(2) {
            OpenFindings { open: &engine.open_findings() }.emit();
            if opts.progress {
                print_progress(&report, bytes_done, total_bytes, started);
                progress_printed = true;
            }
            last_progress = Instant::now();
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            commit(&mut sink, &mut report)?;
            last_commit = Instant::now();
        }
    }
    decoder_thread.join().map_err(|_| anyhow!("the decoder thread panicked"))?;
    engine.flush(&mut findings);
    emit_findings(&mut sink, &mut findings, "end", &mut report)?;
    OpenFindings { open: &engine.open_findings() }.emit();
    commit(&mut sink, &mut report)?;
    if progress_printed {
        eprintln!();
    }
    seedwatch_detect::engine::sort_findings(&mut report.findings);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Archive one batch, then detect on the rows the archive did not hold yet:
/// rows an earlier run archived (a re-run, a replayed Kafka tail) are dropped
/// there and not evaluated again, so none counts twice.
pub(crate) fn archive_and_detect(
    sink: &mut ArchiveWriter,
    engine: &mut RuleEngine,
    events: &EventBatch,
    source_kind: &'static str,
    report: &mut RunReport,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let written = write(sink, Table::Events(events.family), &events.batch, source_kind, report)?;
    let fresh = match written.new_rows_of(&events.batch)? {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(batch) => Some(EventBatch { family: events.family, batch }),
    };
    let events = fresh.as_ref().unwrap_or(events);
    EventsObserved { family: events.family, batch: &events.batch }.emit();
    let t = Instant::now();
    let stats = engine.process(events, findings)?;
    report.late_events += stats.late_events;
    BatchDetected { family: events.family, source_kind, rows: events.batch.num_rows(), stats: &stats, seconds: t.elapsed().as_secs_f64() }.emit();
    Ok(())
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
/// DataFusion (see `seedwatch_detect::resume`), as of `until` or, when `None`,
/// just after the newest archived event. `None` when the archive holds no events.
pub fn resume_from_archive(engine: &mut RuleEngine, archive: &std::path::Path, until: Option<i64>) -> Result<Option<Resumed>> {
    if !archive.is_dir() {
        return Ok(None);
    }
    block_on(async {
        let ctx = seedwatch_archive::open_session(archive).await?;
        resume_from_session(engine, &ctx, until, Judge::AtUntil).await
    })
}

/// Whether a restored engine judges absences at once, as of the newest archived event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// `advance(until - 1)`: what the previous run would have concluded (a file re-run).
    AtUntil,
    /// Leave the watermark unset. A Kafka detector re-reads the uncommitted tail
    /// of several topics, some of which the archive may hold further than
    /// others (a crash between two files of one commit): setting the watermark
    /// to the newest archived event would make the others' re-read events late.
    /// The first batch released after the restore sets it instead.
    OnNextBatch,
}

/// [`resume_from_archive`] over an open session, whose family tables may be
/// narrowed (the Kafka detector restores one partition's licenses at a time).
pub async fn resume_from_session(engine: &mut RuleEngine, ctx: &datafusion::prelude::SessionContext, until: Option<i64>, judge: Judge) -> Result<Option<Resumed>> {
    let started = Instant::now();
    let until = match until {
        Some(t) => t,
        None => match seedwatch_archive::query::newest_event_time(ctx).await? {
            Some(newest) => newest + 1,
            None => return Ok(None),
        },
    };
    let mut rows = 0;
    for step in engine.warmup_plan(until) {
        let n = seedwatch_archive::query::stream_query(ctx, &step.sql, |batch| engine.replay(&step, &batch).map(|_| ()).map_err(anyhow::Error::from))
            .await
            .with_context(|| format!("restoring {} from the archive", step.rules.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ")))?;
        tracing::debug!(family = step.family.as_str(), kind = ?step.kind, rows = n, "warm-up step replayed");
        rows += n;
    }
    if judge == Judge::AtUntil {
        // Absences are judged as of the last archived moment, as the previous run would have.
        engine.advance(until - 1);
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

/// Decode and detect a whole source with no archive: chunk by chunk, each
/// chunk's batches then `advance`, then `flush`. For rule fixtures and tests;
/// `run` does the same with the archive in between.
pub fn detect_source(engine: &mut RuleEngine, decoder: &mut Decoder, source: &mut dyn Source) -> Result<Detected> {
    let mut out = Detected::default();
    let mut chunk = LineChunk::new();
    while source.next_chunk(&mut chunk)? {
        let decoded = decoder.decode_chunk(&chunk, 0)?;
        out.decode.merge(&decoded.stats);
        for batch in &decoded.events {
            out.late_events += engine.process(batch, &mut out.findings)?.late_events;
        }
        if let Some(watermark) = decoded.max_event_time() {
            engine.advance(watermark);
        }
    }
    engine.flush(&mut out.findings);
    Ok(out)
}

pub(crate) fn commit(sink: &mut ArchiveWriter, report: &mut RunReport) -> Result<()> {
    let t = Instant::now();
    let stats = sink.commit()?;
    ArchiveCommitted { stats: &stats, seconds: t.elapsed().as_secs_f64() }.emit();
    report.commit.merge(&stats);
    Ok(())
}

pub(crate) fn write(sink: &mut ArchiveWriter, table: Table, batch: &seedwatch_schemas::arrow::record_batch::RecordBatch, source_kind: &'static str, report: &mut RunReport) -> Result<Written> {
    let written = sink.write(table, batch)?;
    ArchiveWritten { table, source_kind, duplicates: written.duplicates }.emit();
    if written.duplicates > 0 {
        *report.duplicates.entry(table.name()).or_default() += written.duplicates;
    }
    Ok(written)
}

pub(crate) fn emit_findings(sink: &mut ArchiveWriter, findings: &mut Vec<Finding>, source_kind: &'static str, report: &mut RunReport) -> Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    let batch = findings_to_batch(findings)?;
    let written = write(sink, Table::Findings, &batch, source_kind, report)?;
    // A finding an earlier run archived (re-emitted after a resume) is not news.
    if let Some(new_rows) = &written.new_rows {
        let mut keep = new_rows.values().iter();
        findings.retain(|_| keep.next().unwrap_or(false));
    }
    FindingsEmitted { findings }.emit();
    report.findings.append(findings);
    Ok(())
}

fn print_progress(report: &RunReport, bytes_done: u64, total: Option<u64>, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let pct = total.filter(|t| *t > 0).map(|t| format!(" ({:.0}%)", 100.0 * bytes_done as f64 / t as f64)).unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\rprogress: {} lines, {:.1} MB{pct}, {:.0} lines/s, {} dead letters, {} findings   ",
        report.decode.lines,
        bytes_done as f64 / 1e6,
        report.decode.lines as f64 / secs,
        report.decode.dead_total(),
        report.findings.len()
    );
    let _ = err.flush();
}
