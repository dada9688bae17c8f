//! The driver: inputs → reader → sink (dedup) → held rows → partitions → tasks → findings → sink.
//!
//! Every command configures this one loop: `run` with files or stdin and the
//! archive, `rules test` and the goldens with a [`MemorySink`]. A release hands
//! the tasks every held row at or before the reader's bound, then the newest
//! released time as the watermark; the tasks' findings are written before the
//! sink may write out the events they cite (`Sink::flush_full`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use seedwatch_archive::{CommitStats, Sink, Written};
use seedwatch_detect::RuleEngine;
use seedwatch_ingest::DecodeStats;
use seedwatch_schemas::arrow::array::{AsArray, BooleanArray, RecordBatch};
use seedwatch_schemas::arrow::compute::{concat_batches, filter_record_batch, max};
use seedwatch_schemas::arrow::datatypes::TimestampMillisecondType;
use seedwatch_schemas::finding::findings_to_batch;
use seedwatch_schemas::{EventBatch, Family, Finding, Severity, Table};

use crate::input::{Decoded, Input, Reader};
use crate::internal_events::{ArchiveCommitted, ArchiveWritten, BatchDetected, ChunkDecoded, EventsObserved, FindingsEmitted, OpenFindings, WatermarkAdvanced};
use crate::partition;
use crate::tasks::{Done, Tasks};
use crate::RuntimeError;

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Commit the sink at least this often.
    pub commit_every: Duration,
    /// Print a progress line to stderr every 2 s.
    pub progress: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self { commit_every: Duration::from_secs(30), progress: false }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct DriverReport {
    /// Decode counts over all inputs.
    pub decode: DecodeStats,
    /// Rows the sink already held, by table.
    pub duplicates: BTreeMap<&'static str, u64>,
    /// Every new finding, sorted.
    pub findings: Vec<Finding>,
    /// What the sink wrote.
    pub commit: CommitStats,
    /// Events beyond the allowed lateness of their license: archived, not evaluated.
    pub late_events: u64,
    /// Absence findings withdrawn because the key's own (delayed) events showed no gap.
    pub retracted_silences: u64,
    /// Most rows held at once, waiting for the other inputs to catch up.
    pub peak_held_rows: usize,
    /// Findings the rules emitted, by rule, including those the sink already held.
    pub emitted_per_rule: BTreeMap<String, u64>,
}

/// A sink that keeps nothing and holds every row new: for rule fixtures and goldens.
#[derive(Debug, Default)]
pub struct MemorySink;

impl Sink for MemorySink {
    fn write(&mut self, _table: Table, batch: &RecordBatch) -> Result<Written, seedwatch_archive::ArchiveError> {
        Ok(Written { kept: batch.num_rows() as u64, duplicates: 0, new_rows: None })
    }

    fn commit(&mut self) -> Result<CommitStats, seedwatch_archive::ArchiveError> {
        Ok(CommitStats::default())
    }
}

/// The driver. See the module docs.
#[derive(Debug)]
pub struct Driver<S: Sink> {
    sink: S,
    tasks: Tasks,
    /// Fresh rows per family not yet released.
    held: [Vec<RecordBatch>; 4],
    /// Newest event time released: the tasks' watermark.
    released: i64,
    report: DriverReport,
    options: DriverOptions,
}

impl<S: Sink> Driver<S> {
    /// A driver writing to `sink`, with one task per engine (partition `i` is `engines[i]`).
    pub fn new(sink: S, engines: Vec<RuleEngine>, options: DriverOptions) -> Result<Self, RuntimeError> {
        Ok(Self { sink, tasks: Tasks::spawn(engines)?, held: Default::default(), released: i64::MIN, report: DriverReport::default(), options })
    }

    /// Read every input to its end, detect, write, commit. Returns the report and the sink.
    pub fn run(mut self, inputs: Vec<Box<dyn Input>>) -> Result<(DriverReport, S), RuntimeError> {
        let started = Instant::now();
        let mut reader = Reader::new(inputs);
        let total_bytes = reader.total_bytes();
        // Reading and decoding run ahead on their own thread, a few chunks at most.
        let (tx, rx) = sync_channel::<Result<Decoded, RuntimeError>>(4);
        let read_thread = std::thread::Builder::new()
            .name("seedwatch-read".into())
            .spawn(move || {
                loop {
                    match reader.next() {
                        Ok(Some(decoded)) => {
                            if tx.send(Ok(decoded)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|source| RuntimeError::Spawn { what: "read", source })?;

        let (mut last_progress, mut last_commit, mut progress_printed) = (Instant::now(), Instant::now(), false);
        for decoded in rx {
            let decoded = decoded?;
            let bytes_done = decoded.bytes_done;
            self.accept(decoded)?;
            if last_progress.elapsed() >= Duration::from_secs(2) {
                let open = self.release(i64::MIN, true)?;
                OpenFindings { open: &open.iter().map(|(r, s, n)| (r.as_str(), *s, *n)).collect::<Vec<_>>() }.emit();
                if self.options.progress {
                    print_progress(&self.report, bytes_done, total_bytes, started);
                    progress_printed = true;
                }
                last_progress = Instant::now();
            }
            if last_commit.elapsed() >= self.options.commit_every {
                self.commit()?;
                last_commit = Instant::now();
            }
        }
        read_thread.join().map_err(|_| RuntimeError::ThreadLost("read"))?;
        self.finish()?;
        if progress_printed {
            eprintln!();
        }
        seedwatch_detect::engine::sort_findings(&mut self.report.findings);
        Ok((self.report, self.sink))
    }

    /// Archive a decoded chunk, hold its fresh rows, release what the bound allows.
    fn accept(&mut self, decoded: Decoded) -> Result<(), RuntimeError> {
        let kind = decoded.source_kind;
        if let Some(chunk) = decoded.chunk {
            ChunkDecoded { source_kind: kind, stats: &chunk.stats, seconds: decoded.seconds }.emit();
            self.report.decode.merge(&chunk.stats);
            for events in &chunk.events {
                // The sink first: a row it already holds (a re-run, a replayed tail) is not evaluated again.
                let written = self.write(Table::Events(events.family), &events.batch, kind)?;
                let fresh = written.new_rows_of(&events.batch)?.into_owned();
                if fresh.num_rows() > 0 {
                    EventsObserved { family: events.family, batch: &fresh }.emit();
                    self.held[events.family.index()].push(fresh);
                }
            }
            if let Some(dead) = &chunk.dead_letters {
                self.write(Table::DeadLetter, dead, kind)?;
            }
        }
        self.release(decoded.bound, false)?;
        self.sink.flush_full()?;
        Ok(())
    }

    /// Release every held row at or before `bound` to the tasks, advance them to the
    /// newest released time, and write their findings. Returns open findings when asked.
    fn release(&mut self, bound: i64, report_open: bool) -> Result<Vec<(String, Severity, u64)>, RuntimeError> {
        let partitions = self.tasks.len();
        let mut per_task: Vec<Vec<EventBatch>> = (0..partitions).map(|_| Vec::new()).collect();
        let mut held_rows = 0;
        let before = self.released;
        for family in Family::ALL {
            let held = std::mem::take(&mut self.held[family.index()]);
            if held.is_empty() {
                continue;
            }
            let batch = if held.len() == 1 { held.into_iter().next().unwrap_or_else(|| RecordBatch::new_empty(Table::Events(family).schema())) } else { concat_batches(&held[0].schema(), &held)? };
            let (ready, rest) = split_at_time(&batch, bound)?;
            if let Some(rest) = rest {
                held_rows += rest.num_rows();
                self.held[family.index()].push(rest);
            }
            let Some(ready) = ready else { continue };
            self.released = self.released.max(newest_time(&ready));
            for (p, part) in partition::split(&EventBatch { family, batch: ready }, partitions)? {
                per_task[p].push(part);
            }
        }
        self.report.peak_held_rows = self.report.peak_held_rows.max(held_rows);
        let nothing = per_task.iter().all(Vec::is_empty) && self.released == before;
        if nothing && !report_open {
            return Ok(Vec::new());
        }
        let advance = (self.released != before && self.released != i64::MIN).then_some(self.released);
        let done = self.tasks.release(per_task, advance, report_open)?;
        if let Some(watermark) = advance {
            WatermarkAdvanced { watermark }.emit();
        }
        self.collect(done, "release")
    }

    /// Release everything, close every open finding, commit.
    fn finish(&mut self) -> Result<(), RuntimeError> {
        self.release(i64::MAX, false)?;
        let done = self.tasks.flush()?;
        let open = self.collect(done, "end")?;
        OpenFindings { open: &open.iter().map(|(r, s, n)| (r.as_str(), *s, *n)).collect::<Vec<_>>() }.emit();
        self.commit()
    }

    /// Count what the tasks did and write their findings; returns the summed open findings.
    fn collect(&mut self, done: Vec<Done>, source_kind: &'static str) -> Result<Vec<(String, Severity, u64)>, RuntimeError> {
        let mut findings = Vec::new();
        let mut open: BTreeMap<(String, Severity), u64> = BTreeMap::new();
        let mut retracted = 0;
        for d in done {
            for (family, rows, stats, seconds) in &d.batches {
                self.report.late_events += stats.late_events;
                BatchDetected { family: *family, source_kind, rows: *rows, stats, seconds: *seconds }.emit();
            }
            for (rule, severity, n) in d.open {
                *open.entry((rule, severity)).or_default() += n;
            }
            retracted += d.retracted_silences;
            findings.extend(d.findings);
        }
        self.report.retracted_silences = retracted;
        self.emit_findings(findings, source_kind)?;
        Ok(open.into_iter().map(|((r, s), n)| (r, s, n)).collect())
    }

    fn emit_findings(&mut self, mut findings: Vec<Finding>, source_kind: &'static str) -> Result<(), RuntimeError> {
        if findings.is_empty() {
            return Ok(());
        }
        for f in &findings {
            *self.report.emitted_per_rule.entry(f.rule.clone()).or_default() += 1;
        }
        let batch = findings_to_batch(&findings)?;
        let written = self.write(Table::Findings, &batch, source_kind)?;
        // A finding an earlier run archived (re-emitted after a resume) is not news.
        if let Some(new_rows) = &written.new_rows {
            let mut keep = new_rows.values().iter();
            findings.retain(|_| keep.next().unwrap_or(false));
        }
        FindingsEmitted { findings: &findings }.emit();
        self.report.findings.append(&mut findings);
        Ok(())
    }

    fn write(&mut self, table: Table, batch: &RecordBatch, source_kind: &'static str) -> Result<Written, RuntimeError> {
        let written = self.sink.write(table, batch)?;
        ArchiveWritten { table, source_kind, duplicates: written.duplicates }.emit();
        if written.duplicates > 0 {
            *self.report.duplicates.entry(table.name()).or_default() += written.duplicates;
        }
        Ok(written)
    }

    fn commit(&mut self) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let stats = self.sink.commit()?;
        ArchiveCommitted { stats: &stats, seconds: started.elapsed().as_secs_f64() }.emit();
        self.report.commit.merge(&stats);
        Ok(())
    }
}

/// The rows at or before `bound`, and the rest (each `None` when empty).
fn split_at_time(batch: &RecordBatch, bound: i64) -> Result<(Option<RecordBatch>, Option<RecordBatch>), RuntimeError> {
    let some = |b: RecordBatch| (b.num_rows() > 0).then_some(b);
    if bound == i64::MAX {
        return Ok((some(batch.clone()), None));
    }
    let time = batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let Some(time) = time else { return Ok((some(batch.clone()), None)) };
    let ready = BooleanArray::from_unary(time, |t| t <= bound);
    match ready.true_count() {
        0 => Ok((None, some(batch.clone()))),
        n if n == batch.num_rows() => Ok((some(batch.clone()), None)),
        _ => {
            let rest = seedwatch_schemas::arrow::compute::not(&ready)?;
            Ok((some(filter_record_batch(batch, &ready)?), some(filter_record_batch(batch, &rest)?)))
        }
    }
}

fn newest_time(batch: &RecordBatch) -> i64 {
    batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()).and_then(max).unwrap_or(i64::MIN)
}

fn print_progress(report: &DriverReport, bytes_done: u64, total: Option<u64>, started: Instant) {
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
