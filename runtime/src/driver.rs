//! The driver: source → held rows per scope → sink (dedup) → partitions → tasks → findings → sink.
//!
//! Every command configures this one loop: `run` with a [`Reader`](crate::input::Reader)
//! over files or stdin and the archive, `rules backfill` with the archive as
//! input, `rules test` and the goldens with a [`MemorySink`], `detect` with a
//! Kafka source and a findings publisher. Rows wait ("are held") per scope
//! until the source says every input of the scope has reached them (the
//! bound); a release writes them to the sink, which drops rows it already
//! holds, routes the new ones to their partitions' tasks, advances those tasks
//! to the newest released time, and writes the tasks' findings before the sink
//! may write out the events they cite (`Sink::flush_full`). Held rows are not
//! in the sink yet, so the positions acknowledged to the source after a sink
//! commit stop at the oldest held row: a restart re-reads and evaluates them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use seedwatch_archive::{CommitStats, Sink, Written};
use seedwatch_detect::RuleEngine;
use seedwatch_ingest::DecodeStats;
use seedwatch_schemas::arrow::array::{AsArray, BooleanArray, RecordBatch};
use seedwatch_schemas::arrow::compute::{concat_batches, filter_record_batch, max, min};
use seedwatch_schemas::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use seedwatch_schemas::finding::findings_to_batch;
use seedwatch_schemas::{EventBatch, Family, Finding, Severity, Table};

use crate::internal_events::{
    ArchiveCommitted, ArchivePaused, ArchiveResumed, ArchiveWriteFailed, ArchiveWritten, BatchDetected, ChunkDecoded, CommitFenced, EventsObserved, FindingsEmitted, OpenFindings, OrderingReleaseForced, WatermarkAdvanced,
};
use crate::partition;
use crate::source::{Feedback, InputId, Polled, Rows, Scope, Source};
use crate::tasks::{Done, Tasks, Work};
use crate::{BoxError, RuntimeError};

/// Builds the engines of newly assigned partitions (`partitions`, of `count`), warm from the archive.
pub type Rebuild = Box<dyn FnMut(&[u32], u32) -> Result<Vec<RuleEngine>, BoxError> + Send>;
/// Hands new findings on once the sink has them (the Kafka findings topic).
pub type Publish = Box<dyn FnMut(&[Finding]) -> Result<(), BoxError> + Send>;

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Commit the sink (then acknowledge positions to the source) at least this often.
    pub commit_every: Duration,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Rows held for ordering, over all scopes, before every scope is released regardless.
    pub max_held_rows: usize,
    /// A scope that has read everything there is and heard nothing new for this long
    /// publishes the findings it holds open (a detector that runs for good).
    pub idle_after: Option<Duration>,
    /// When the source ends: close every open finding (its input ended), or keep them
    /// for a restart to rebuild (a detector asked to stop).
    pub flush_at_end: bool,
    /// Keep every new finding in the report (a run); a detector that runs for good only counts them.
    pub keep_findings: bool,
    /// Set to stop (a signal): ends a pause for disk space with its error. A run without
    /// one waits for space until it is interrupted.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self { commit_every: Duration::from_secs(30), progress: false, max_held_rows: usize::MAX, idle_after: None, flush_at_end: true, keep_findings: true, stop: None }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct DriverReport {
    /// Decode counts over all inputs.
    pub decode: DecodeStats,
    /// Rows the sink already held, by table.
    pub duplicates: BTreeMap<&'static str, u64>,
    /// New events the sink took.
    pub events: u64,
    /// Every new finding version, sorted (when `keep_findings`); see
    /// [`seedwatch_schemas::finding::latest_versions`] for one row per finding.
    pub findings: Vec<Finding>,
    /// New finding versions (kept or not).
    pub new_findings: u64,
    /// What the sink wrote.
    pub commit: CommitStats,
    /// Sink commits.
    pub commits: u64,
    /// Events beyond the allowed lateness of their license: archived, not evaluated.
    pub late_events: u64,
    /// Absence findings withdrawn because the key's own (delayed) events showed no gap.
    pub retracted_silences: u64,
    /// Most rows held at once, waiting for the other inputs to catch up.
    pub peak_held_rows: usize,
    /// Times rows were released before every input caught up (too many held).
    pub forced_releases: u64,
    /// Assignments taken (Kafka rebalances).
    pub rebalances: u64,
    /// Commits refused because another member had claimed a partition this one held.
    pub fenced: u64,
    /// Findings the rules opened, by rule, including those the sink already held.
    pub emitted_per_rule: BTreeMap<String, u64>,
    /// Rows exceptions dropped, by (rule, exception).
    pub suppressed: BTreeMap<(String, String), u64>,
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

/// Rows written since the last commit that make reading to the end a backlog
/// worth committing at once (see `Driver::backlog_done`).
const BACKLOG_ROWS: u64 = 1_000;
/// How long a fenced member waits for the new assignment its group owes it before it gives up
/// (twice the detector's default `max.poll.interval.ms`).
const FENCED_LIMIT: Duration = Duration::from_secs(120);

/// How often a pipeline paused on a full disk tries again, at most.
const PAUSED_RETRY_EVERY: Duration = Duration::from_secs(5);

/// Rows of one scope not yet released.
#[derive(Debug)]
struct Held {
    /// Rows of this scope at or before this time may be released.
    bound: i64,
    /// Newest event time released: the watermark of this scope's tasks.
    released: i64,
    /// Per input, per family.
    rows: BTreeMap<InputId, [Vec<RecordBatch>; 4]>,
    count: usize,
    last_rows: Instant,
    /// Open findings were published since the last rows came.
    snapshot_taken: bool,
    /// The inputs' kind (`file`, `kafka`, …), a metric label.
    source_kind: &'static str,
}

impl Held {
    fn new() -> Self {
        Self { bound: i64::MIN, released: i64::MIN, rows: BTreeMap::new(), count: 0, last_rows: Instant::now(), snapshot_taken: false, source_kind: "unknown" }
    }
}

/// The driver. See the module docs.
pub struct Driver<S: Sink> {
    sink: S,
    tasks: Tasks,
    held: BTreeMap<Scope, Held>,
    /// Per input, where it resumes once what was read is durable.
    resume_at: BTreeMap<InputId, i64>,
    /// The source's generation this driver's tasks belong to.
    generation: u64,
    rebuild: Option<Rebuild>,
    publish: Option<Publish>,
    retracted: BTreeMap<u32, u64>,
    bytes_done: u64,
    /// Rows the sink kept since the last commit.
    uncommitted_rows: u64,
    /// A commit was refused (another member claimed a partition): since when, and why.
    /// Everything read is ignored until the new assignment arrives.
    fenced: Option<(Instant, seedwatch_archive::ArchiveError)>,
    /// The archive's disk is full, since when (see `on_sink`).
    paused: Option<Instant>,
    report: DriverReport,
    options: DriverOptions,
}

impl<S: Sink> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("sink", &self.sink).field("tasks", &self.tasks).field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl<S: Sink> Driver<S> {
    /// A driver writing to `sink`, with one task per engine: partition `i` of `engines.len()` is `engines[i]`.
    pub fn new(sink: S, engines: Vec<RuleEngine>, options: DriverOptions) -> Result<Self, RuntimeError> {
        let count = engines.len() as u32;
        let tasks = Tasks::spawn((0..count).zip(engines).collect(), count)?;
        Ok(Self {
            sink,
            tasks,
            held: BTreeMap::new(),
            resume_at: BTreeMap::new(),
            generation: 0,
            rebuild: None,
            publish: None,
            retracted: BTreeMap::new(),
            bytes_done: 0,
            uncommitted_rows: 0,
            fenced: None,
            paused: None,
            report: DriverReport::default(),
            options,
        })
    }

    /// How to build the tasks of a new assignment (a source that reports `Assigned`).
    pub fn with_rebuild(mut self, rebuild: Rebuild) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    /// Where new findings go once the sink has them.
    pub fn with_publisher(mut self, publish: Publish) -> Self {
        self.publish = Some(publish);
        self
    }

    /// Read `source` until it ends, detect, write, commit. Returns the report and the sink.
    pub fn run<Src: Source>(mut self, mut source: Src) -> Result<(DriverReport, S), RuntimeError> {
        let total_bytes = source.total_bytes();
        let input_ends = source.ends();
        let fence = source.fence();
        self.generation = fence.load(Ordering::Acquire);
        // The source reads ahead on its own thread, a few chunks at most.
        let (tx, rx) = sync_channel::<Result<Polled, RuntimeError>>(4);
        let (feedback_tx, feedback_rx) = channel::<Feedback>();
        let source_thread = std::thread::Builder::new()
            .name("seedwatch-source".into())
            .spawn(move || read_source(&mut source, tx, feedback_rx))
            .map_err(|source| RuntimeError::Spawn { what: "source", source })?;
        let result = self.drive(rx, &feedback_tx, &fence, total_bytes, input_ends);
        if let Err(RuntimeError::Archive(error)) = &result {
            // Nothing past the last commit is acknowledged to the source: the next run reads it
            // again. (Stopped while paused for space, it was counted as it paused.)
            if self.paused.is_none() {
                ArchiveWriteFailed { error }.emit();
            }
        }
        drop(feedback_tx);
        source_thread.join().map_err(|_| RuntimeError::ThreadLost("source"))?;
        result?;
        seedwatch_detect::engine::sort_findings(&mut self.report.findings);
        Ok((self.report, self.sink))
    }

    fn drive(&mut self, rx: Receiver<Result<Polled, RuntimeError>>, feedback: &Sender<Feedback>, fence: &AtomicU64, total_bytes: Option<u64>, input_ends: bool) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let (mut last_report, mut last_commit, mut progress_printed) = (Instant::now(), Instant::now(), false);
        loop {
            let polled = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(polled) => Some(polled?),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Read under an assignment that was lost since: its `Assigned` is on the way.
            let stale = fence.load(Ordering::Acquire) != self.generation || self.fenced.is_some();
            match polled {
                Some(Polled::Rows(rows)) if !stale => self.accept(rows)?,
                Some(Polled::Bound { scope, bound }) if !stale => {
                    self.held.entry(scope).or_insert_with(Held::new).bound = bound;
                    self.release(scope, None)?;
                    self.on_sink(S::flush_full)?;
                }
                Some(Polled::Assigned { partitions, count, generation }) => {
                    self.reassign(&partitions, count, generation)?;
                    let _ = feedback.send(Feedback::Warm { generation });
                    last_commit = Instant::now();
                }
                _ => {}
            }
            if self.fenced.as_ref().is_some_and(|(since, _)| since.elapsed() >= FENCED_LIMIT) {
                if let Some((_, error)) = self.fenced.take() {
                    return Err(error.into());
                }
            }
            if stale {
                continue;
            }
            self.release_if_too_many_held()?;
            self.snapshot_idle_scopes()?;
            let every = if total_bytes.is_some() { Duration::from_secs(2) } else { Duration::from_secs(5) };
            if last_report.elapsed() >= every {
                let done = self.tasks.run_all(|| Work::Report)?;
                let open = self.collect(done, "report")?;
                OpenFindings { open: &open.iter().map(|(r, s, n)| (r.as_str(), *s, *n)).collect::<Vec<_>>() }.emit();
                if self.options.progress {
                    self.print_progress(total_bytes, started);
                    progress_printed = total_bytes.is_some();
                }
                last_report = Instant::now();
            }
            // A file read to its end is committed once, by `finish`, with the findings its end
            // releases: committed apart, a stop between the two would lose those findings (a
            // restart finds every event archived and re-evaluates none).
            if last_commit.elapsed() >= self.options.commit_every || (!input_ends && self.backlog_done()) {
                self.commit(feedback)?;
                last_commit = Instant::now();
            }
        }
        if fence.load(Ordering::Acquire) == self.generation && self.fenced.is_none() {
            self.finish(feedback)?;
        }
        if progress_printed {
            eprintln!();
        }
        Ok(())
    }

    /// Hold a chunk's events (its dead letters go to the sink at once).
    fn accept(&mut self, rows: Rows) -> Result<(), RuntimeError> {
        let Rows { input, scope, chunk, source_kind, resume_at, bytes_done, seconds } = rows;
        ChunkDecoded { source_kind, stats: &chunk.stats, seconds }.emit();
        self.report.decode.merge(&chunk.stats);
        self.bytes_done = bytes_done;
        if let Scope::Partition(p) = scope {
            if !self.tasks.owns(p) {
                // Not ours (any more): its owner reads it from the last committed offset.
                tracing::debug!(partition = p, "rows of a partition this member does not own; left to its owner");
                return Ok(());
            }
        }
        if let Some(dead) = &chunk.dead_letters {
            self.write(Table::DeadLetter, dead, source_kind)?;
        }
        if let Some(position) = resume_at {
            self.resume_at.insert(input, position);
        }
        let held = self.held.entry(scope).or_insert_with(Held::new);
        held.last_rows = Instant::now();
        held.snapshot_taken = false;
        held.source_kind = source_kind;
        for events in chunk.events {
            let n = events.batch.num_rows();
            if n > 0 {
                held.count += n;
                held.rows.entry(input).or_default()[events.family.index()].push(events.batch);
            }
        }
        let total = self.held.values().map(|h| h.count).sum();
        self.report.peak_held_rows = self.report.peak_held_rows.max(total);
        Ok(())
    }

    /// Release the rows of `scope` at or before its bound (or `force`'s): to the sink,
    /// then the new ones to their tasks with the scope's watermark; write the findings.
    fn release(&mut self, scope: Scope, force: Option<i64>) -> Result<(), RuntimeError> {
        let Some(held) = self.held.get_mut(&scope) else {
            return Ok(());
        };
        let bound = force.unwrap_or(held.bound);
        if bound == i64::MIN {
            return Ok(());
        }
        let mut ready: [Vec<RecordBatch>; 4] = Default::default();
        let mut newest = held.released;
        let mut still_held = 0;
        for per_family in held.rows.values_mut() {
            for family in Family::ALL {
                let batches = std::mem::take(&mut per_family[family.index()]);
                if batches.is_empty() {
                    continue;
                }
                let (now, rest) = split_at_time(&concat(&batches)?, bound)?;
                if let Some(rest) = rest {
                    still_held += rest.num_rows();
                    per_family[family.index()].push(rest);
                }
                if let Some(now) = now {
                    newest = newest.max(newest_time(&now));
                    ready[family.index()].push(now);
                }
            }
        }
        held.rows.retain(|_, f| f.iter().any(|b| !b.is_empty()));
        held.count = still_held;
        let advance = (newest > held.released).then_some(newest);
        held.released = newest;
        let source_kind = held.source_kind;
        if advance.is_none() && ready.iter().all(Vec::is_empty) {
            return Ok(());
        }

        // The sink first: a row it already holds (a re-run, a replayed tail) is not evaluated again.
        let mut per_partition: BTreeMap<u32, Vec<EventBatch>> = BTreeMap::new();
        for family in Family::ALL {
            let parts = std::mem::take(&mut ready[family.index()]);
            if parts.is_empty() {
                continue;
            }
            let batch = concat(&parts)?;
            let written = self.write(Table::Events(family), &batch, source_kind)?;
            let fresh = written.new_rows_of(&batch)?.into_owned();
            if fresh.num_rows() == 0 {
                continue;
            }
            self.report.events += fresh.num_rows() as u64;
            EventsObserved { family, batch: &fresh }.emit();
            let events = EventBatch { family, batch: fresh };
            match scope {
                Scope::AllPartitions => {
                    for (p, part) in partition::split(&events, self.tasks.count() as usize)? {
                        per_partition.entry(p as u32).or_default().push(part);
                    }
                }
                Scope::Partition(p) => per_partition.entry(p).or_default().push(events),
            }
        }
        let targets: Vec<u32> = match scope {
            Scope::AllPartitions => self.tasks.partitions().collect(),
            Scope::Partition(p) => self.tasks.owns(p).then_some(p).into_iter().collect(),
        };
        let work = targets.into_iter().map(|p| (p, Work::Release { batches: per_partition.remove(&p).unwrap_or_default(), advance })).collect();
        if let Some((p, _)) = per_partition.into_iter().next() {
            return Err(RuntimeError::NotOwned(p));
        }
        let done = self.tasks.run(work)?;
        if advance.is_some() {
            let watermark = self.held.values().map(|h| h.released).max().unwrap_or(i64::MIN);
            WatermarkAdvanced { watermark }.emit();
        }
        self.collect(done, "release")?;
        Ok(())
    }

    /// Too many rows held (an input far behind the others): release every scope now.
    fn release_if_too_many_held(&mut self) -> Result<(), RuntimeError> {
        let total: usize = self.held.values().map(|h| h.count).sum();
        if total <= self.options.max_held_rows {
            return Ok(());
        }
        let scopes: Vec<(Scope, usize)> = self.held.iter().filter(|(_, h)| h.count > 0).map(|(s, h)| (*s, h.count)).collect();
        for (scope, rows) in scopes {
            let partition = match scope {
                Scope::AllPartitions => -1,
                Scope::Partition(p) => p as i32,
            };
            OrderingReleaseForced { partition, rows }.emit();
            self.report.forced_releases += 1;
            self.release(scope, Some(i64::MAX))?;
        }
        self.on_sink(S::flush_full)?;
        Ok(())
    }

    /// Scopes that have read everything and heard nothing for `idle_after` publish their open findings.
    fn snapshot_idle_scopes(&mut self) -> Result<(), RuntimeError> {
        let Some(idle_after) = self.options.idle_after else {
            return Ok(());
        };
        let idle: Vec<Scope> = self
            .held
            .iter_mut()
            .filter(|(_, h)| h.bound == i64::MAX && h.count == 0 && !h.snapshot_taken && h.last_rows.elapsed() >= idle_after)
            .map(|(s, h)| {
                h.snapshot_taken = true;
                *s
            })
            .collect();
        for scope in idle {
            let targets: Vec<u32> = match scope {
                Scope::AllPartitions => self.tasks.partitions().collect(),
                Scope::Partition(p) => self.tasks.owns(p).then_some(p).into_iter().collect(),
            };
            let done = self.tasks.run(targets.into_iter().map(|p| (p, Work::Snapshot)).collect())?;
            let open = self.collect(done, "idle")?;
            OpenFindings { open: &open.iter().map(|(r, s, n)| (r.as_str(), *s, *n)).collect::<Vec<_>>() }.emit();
        }
        Ok(())
    }

    /// A new assignment: drop what was not committed, rebuild the tasks of the partitions now owned.
    fn reassign(&mut self, partitions: &[u32], count: u32, generation: u64) -> Result<(), RuntimeError> {
        self.report.rebalances += 1;
        self.on_sink(S::discard)?;
        // Claimed before anything of the new assignment is read: from here on, a member that
        // held these partitions before cannot commit what it still holds.
        self.sink.claim(partitions)?;
        self.fenced = None;
        self.held.clear();
        self.resume_at.clear();
        self.retracted.clear();
        let rebuild = self.rebuild.as_mut().ok_or(RuntimeError::NoRebuild)?;
        let engines = rebuild(partitions, count).map_err(RuntimeError::Rebuild)?;
        // The old tasks stop (their threads end, their state is freed) before the new ones start.
        self.tasks = Tasks::spawn(Vec::new(), count)?;
        self.tasks = Tasks::spawn(partitions.iter().copied().zip(engines).collect(), count)?;
        self.generation = generation;
        Ok(())
    }

    /// Release everything and close every open finding (the input ended), or keep
    /// them for a restart (stopped); then commit.
    fn finish(&mut self, feedback: &Sender<Feedback>) -> Result<(), RuntimeError> {
        if self.options.flush_at_end {
            let scopes: Vec<Scope> = self.held.keys().copied().collect();
            for scope in scopes {
                self.release(scope, Some(i64::MAX))?;
            }
            let done = self.tasks.run_all(|| Work::Flush)?;
            let open = self.collect(done, "end")?;
            OpenFindings { open: &open.iter().map(|(r, s, n)| (r.as_str(), *s, *n)).collect::<Vec<_>>() }.emit();
        }
        self.commit(feedback)
    }

    /// Count what the tasks did and write their findings; returns the summed open findings.
    fn collect(&mut self, done: Vec<Done>, source_kind: &'static str) -> Result<Vec<(String, Severity, u64)>, RuntimeError> {
        let mut findings = Vec::new();
        let mut open: BTreeMap<(String, Severity), u64> = BTreeMap::new();
        for d in done {
            for (family, rows, stats, seconds) in &d.batches {
                self.report.late_events += stats.late_events;
                for s in &stats.suppressed {
                    *self.report.suppressed.entry((s.rule.to_string(), s.exception.to_string())).or_default() += s.rows;
                }
                BatchDetected { family: *family, source_kind, rows: *rows, stats, seconds: *seconds }.emit();
            }
            for (rule, severity, n) in d.open {
                *open.entry((rule, severity)).or_default() += n;
            }
            self.retracted.insert(d.partition, d.retracted_silences);
            findings.extend(d.findings);
        }
        self.report.retracted_silences = self.retracted.values().sum();
        self.emit_findings(findings, source_kind)?;
        Ok(open.into_iter().map(|((r, s), n)| (r, s, n)).collect())
    }

    fn emit_findings(&mut self, mut findings: Vec<Finding>, source_kind: &'static str) -> Result<(), RuntimeError> {
        if findings.is_empty() {
            return Ok(());
        }
        for f in findings.iter().filter(|f| f.version == 1) {
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
        if let Some(publish) = self.publish.as_mut() {
            if !findings.is_empty() {
                publish(&findings).map_err(RuntimeError::Publish)?;
            }
        }
        self.report.new_findings += findings.len() as u64;
        if self.options.keep_findings {
            self.report.findings.append(&mut findings);
        }
        Ok(())
    }

    /// A backlog was read to its end: every scope has read all there is and released
    /// every row, and at least [`BACKLOG_ROWS`] rows wait for a commit. Committing then,
    /// not at the next interval, makes a catch-up durable (and its offsets committed) as
    /// soon as it is done; a trickle of live rows still waits for the interval.
    fn backlog_done(&self) -> bool {
        self.uncommitted_rows >= BACKLOG_ROWS && !self.held.is_empty() && self.held.values().all(|h| h.bound == i64::MAX && h.count == 0)
    }

    fn write(&mut self, table: Table, batch: &RecordBatch, source_kind: &'static str) -> Result<Written, RuntimeError> {
        let written = self.sink.write(table, batch)?;
        self.uncommitted_rows += written.kept;
        ArchiveWritten { table, source_kind, duplicates: written.duplicates }.emit();
        if written.duplicates > 0 {
            *self.report.duplicates.entry(table.name()).or_default() += written.duplicates;
        }
        Ok(written)
    }

    /// Make the sink durable, then tell the source how far that reaches per input:
    /// to its oldest row still held, else to where it was read.
    fn commit(&mut self, feedback: &Sender<Feedback>) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let stats = match self.on_sink(S::commit) {
            Ok(stats) => stats,
            Err(error @ seedwatch_archive::ArchiveError::Fenced { .. }) => return self.fenced_out(error),
            Err(error) => return Err(error.into()),
        };
        self.uncommitted_rows = 0;
        ArchiveCommitted { stats: &stats, seconds: started.elapsed().as_secs_f64() }.emit();
        self.report.commit.merge(&stats);
        self.report.commits += 1;
        if self.resume_at.is_empty() {
            return Ok(());
        }
        let mut oldest_held: BTreeMap<InputId, i64> = BTreeMap::new();
        for held in self.held.values() {
            for (input, per_family) in &held.rows {
                for batch in per_family.iter().flatten() {
                    if let Some(line) = oldest_line(batch) {
                        let entry = oldest_held.entry(*input).or_insert(line);
                        *entry = (*entry).min(line);
                    }
                }
            }
        }
        let positions = self.resume_at.iter().map(|(input, at)| (*input, oldest_held.get(input).copied().unwrap_or(*at))).collect();
        let _ = feedback.send(Feedback::Durable { generation: self.generation, positions });
        Ok(())
    }

    /// Run `op` on the sink. While the archive's disk is full, pause: stop reading (the
    /// source blocks behind its channel; a Kafka consumer falls behind and, past
    /// `max.poll.interval.ms`, leaves its group, which fences this member's commit and
    /// hands its uncommitted rows to another), keep everything the sink holds (see
    /// [`Sink`]), and run `op` again every few seconds until it goes through. A stop
    /// request ends the pause with the error: nothing past the last commit was
    /// acknowledged, so the next start reads it again.
    fn on_sink<T>(&mut self, mut op: impl FnMut(&mut S) -> Result<T, seedwatch_archive::ArchiveError>) -> Result<T, seedwatch_archive::ArchiveError> {
        let mut wait = Duration::from_millis(200);
        loop {
            match op(&mut self.sink) {
                Err(error) if error.is_disk_full() => {
                    if self.paused.is_none() {
                        ArchivePaused { error: &error }.emit();
                        self.paused = Some(Instant::now());
                    }
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        if self.options.stop.as_ref().is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                            return Err(error);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    wait = (wait * 2).min(PAUSED_RETRY_EVERY);
                }
                result => {
                    if let Some(since) = self.paused.take() {
                        ArchiveResumed { seconds: since.elapsed().as_secs_f64() }.emit();
                    }
                    return result;
                }
            }
        }
    }

    /// Another member claimed a partition this one holds (this one was evicted from its group,
    /// or a rebalance overtook its commit): drop everything not committed, which the new
    /// owner reads again from the committed offsets, and wait for the new assignment.
    fn fenced_out(&mut self, error: seedwatch_archive::ArchiveError) -> Result<(), RuntimeError> {
        CommitFenced { error: &error }.emit();
        self.report.fenced += 1;
        self.on_sink(S::discard)?;
        self.held.clear();
        self.resume_at.clear();
        self.uncommitted_rows = 0;
        self.fenced = Some((Instant::now(), error));
        Ok(())
    }

    fn print_progress(&self, total: Option<u64>, started: Instant) {
        let report = &self.report;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let held: usize = self.held.values().map(|h| h.count).sum();
        let line = format!(
            "progress: {} lines, {:.1} MB{}, {:.0} lines/s, {} dead letters, {} findings, {} rows held for ordering",
            report.decode.lines,
            self.bytes_done as f64 / 1e6,
            total.filter(|t| *t > 0).map(|t| format!(" ({:.0}%)", 100.0 * self.bytes_done as f64 / t as f64)).unwrap_or_default(),
            report.decode.lines as f64 / secs,
            report.decode.dead_total(),
            report.new_findings,
            held,
        );
        let mut err = std::io::stderr().lock();
        // A file's progress redraws one line; a stream's (stdin, Kafka) is a log line every few seconds.
        let _ = if total.is_some() { write!(err, "\r{line}   ") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }
}

/// The source's thread: poll, pass on, apply feedback between polls; after the end,
/// apply the last feedback (the final commit's positions), then close.
fn read_source<Src: Source>(source: &mut Src, tx: SyncSender<Result<Polled, RuntimeError>>, feedback: Receiver<Feedback>) {
    'read: loop {
        while let Ok(f) = feedback.try_recv() {
            if let Err(e) = source.feedback(f) {
                let _ = tx.send(Err(e));
                break 'read;
            }
        }
        match source.poll() {
            // Nothing happened: worth passing on only if the driver is waiting.
            Ok(Some(Polled::Quiet)) => {
                if let Err(TrySendError::Disconnected(_)) = tx.try_send(Ok(Polled::Quiet)) {
                    break;
                }
            }
            Ok(Some(polled)) => {
                if tx.send(Ok(polled)).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    // The driver finishes once the channel closes.
    drop(tx);
    for f in feedback {
        if let Err(e) = source.feedback(f) {
            tracing::warn!(error = %e, "source feedback after the end failed");
        }
    }
    source.close();
}

fn concat(batches: &[RecordBatch]) -> Result<RecordBatch, RuntimeError> {
    match batches {
        [one] => Ok(one.clone()),
        _ => Ok(concat_batches(&batches[0].schema(), batches)?),
    }
}

/// The rows at or before `bound`, and the rest (each `None` when empty).
fn split_at_time(batch: &RecordBatch, bound: i64) -> Result<(Option<RecordBatch>, Option<RecordBatch>), RuntimeError> {
    let some = |b: RecordBatch| (b.num_rows() > 0).then_some(b);
    if bound == i64::MAX {
        return Ok((some(batch.clone()), None));
    }
    let time = batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let Some(time) = time else {
        return Ok((some(batch.clone()), None));
    };
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

/// The smallest `line` (a Kafka offset) of a held batch.
fn oldest_line(batch: &RecordBatch) -> Option<i64> {
    batch.column_by_name("line").and_then(|c| c.as_primitive_opt::<Int64Type>()).and_then(min)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use seedwatch_ingest::source::LineSpan;
    use seedwatch_ingest::{Decoder, Fingerprinter, LineChunk, Redactor};

    use super::*;

    /// A source that plays a script; it bumps its generation as it hands out item `bump_at`
    /// (a rebalance noticed just after those rows were read), and records the feedback.
    struct Scripted {
        items: VecDeque<Polled>,
        bump_at: Option<usize>,
        given: usize,
        fence: Arc<AtomicU64>,
        feedback: Arc<Mutex<Vec<Feedback>>>,
    }

    impl Scripted {
        fn new(items: Vec<Polled>, bump_at: Option<usize>, feedback: &Arc<Mutex<Vec<Feedback>>>) -> Self {
            Self { items: items.into(), bump_at, given: 0, fence: Arc::new(AtomicU64::new(0)), feedback: Arc::clone(feedback) }
        }
    }

    impl Source for Scripted {
        fn poll(&mut self) -> Result<Option<Polled>, RuntimeError> {
            if self.bump_at == Some(self.given) {
                self.fence.fetch_add(1, Ordering::AcqRel);
            }
            self.given += 1;
            Ok(self.items.pop_front())
        }

        fn feedback(&mut self, feedback: Feedback) -> Result<(), RuntimeError> {
            self.feedback.lock().map_err(|_| RuntimeError::ThreadLost("test"))?.push(feedback);
            Ok(())
        }

        fn fence(&self) -> Arc<AtomicU64> {
            Arc::clone(&self.fence)
        }
    }

    fn ms(t: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp_millis())
    }

    /// Sync events of license `license` at `times`, numbered from `first_offset` as Kafka offsets.
    fn rows(input: InputId, partition: u32, license: &str, times: &[&str], first_offset: u64) -> Polled {
        let mut chunk = LineChunk::new();
        for (i, t) in times.iter().enumerate() {
            let line = format!(r#"{{"time":"{t}","family":"sync","system":"metrc","state":"CA","license":"{license}","integration":"flowhub","outcome":"success"}}"#);
            let start = chunk.data.len();
            chunk.data.extend_from_slice(line.as_bytes());
            chunk.lines.push(LineSpan { start, end: chunk.data.len(), number: first_offset + i as u64, original_len: line.len() });
        }
        let redactor = Redactor::new(Fingerprinter::new(b"driver-test-secret-0123").unwrap_or_else(|e| panic!("{e}")));
        let decoded = Decoder::new(redactor).decode_chunk(&chunk, ms("2026-11-06T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"));
        let resume_at = Some(first_offset as i64 + times.len() as i64);
        Polled::Rows(Rows { input, scope: Scope::Partition(partition), chunk: decoded, source_kind: "kafka", resume_at, bytes_done: 0, seconds: 0.0 })
    }

    fn engines(n: usize) -> Vec<RuleEngine> {
        (0..n).map(|_| RuleEngine::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"))).collect()
    }

    fn stop_options() -> DriverOptions {
        DriverOptions { flush_at_end: false, keep_findings: false, commit_every: Duration::from_secs(3600), ..DriverOptions::default() }
    }

    #[test]
    fn positions_acknowledged_after_a_commit_stop_at_the_oldest_row_still_held() {
        let feedback = Arc::new(Mutex::new(Vec::new()));
        let source = Scripted::new(
            vec![
                rows(7, 0, "L1", &["2026-11-05T10:00:00Z", "2026-11-05T10:01:00Z", "2026-11-05T10:02:00Z"], 100),
                Polled::Bound { scope: Scope::Partition(0), bound: ms("2026-11-05T10:01:00Z") },
            ],
            None,
            &feedback,
        );
        let driver = Driver::new(MemorySink, engines(2), stop_options()).unwrap_or_else(|e| panic!("{e}"));
        let (report, _) = driver.run(source).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.events, report.peak_held_rows), (2, 3), "two rows released, three held at most");
        // The 10:02 row (offset 102) was never released: a restart must read it again.
        let feedback = feedback.lock().unwrap_or_else(|e| panic!("{e}")).clone();
        assert_eq!(feedback, vec![Feedback::Durable { generation: 0, positions: vec![(7, 102)] }]);
    }

    #[test]
    fn a_backlog_read_to_its_end_is_committed_at_once_and_a_trickle_waits() {
        let feedback = Arc::new(Mutex::new(Vec::new()));
        let backlog: Vec<String> = (0..BACKLOG_ROWS).map(|i| format!("2026-11-05T10:{:02}:{:02}Z", i / 60 % 60, i % 60)).collect();
        let backlog: Vec<&str> = backlog.iter().map(String::as_str).collect();
        let source = Scripted::new(
            vec![
                rows(7, 0, "L1", &backlog, 0),
                Polled::Bound { scope: Scope::Partition(0), bound: i64::MAX },
                rows(7, 0, "L1", &["2026-11-05T11:00:00Z"], BACKLOG_ROWS),
                Polled::Bound { scope: Scope::Partition(0), bound: i64::MAX },
            ],
            None,
            &feedback,
        );
        let driver = Driver::new(MemorySink, engines(1), stop_options()).unwrap_or_else(|e| panic!("{e}"));
        let (report, _) = driver.run(source).unwrap_or_else(|e| panic!("{e}"));
        // The interval is an hour: the first commit is the backlog's, the second the end's.
        assert_eq!((report.events, report.commits), (BACKLOG_ROWS + 1, 2));
        let feedback = feedback.lock().unwrap_or_else(|e| panic!("{e}")).clone();
        let durable = |at: u64| Feedback::Durable { generation: 0, positions: vec![(7, at as i64)] };
        assert_eq!(feedback, vec![durable(BACKLOG_ROWS), durable(BACKLOG_ROWS + 1)]);
    }

    #[test]
    fn rows_read_under_a_lost_assignment_are_ignored_and_the_new_one_is_rebuilt() {
        let feedback = Arc::new(Mutex::new(Vec::new()));
        let source = Scripted::new(
            vec![
                // Read just before the rebalance was noticed: no longer this member's to evaluate.
                rows(7, 0, "L1", &["2026-11-05T10:00:00Z", "2026-11-05T10:01:00Z"], 100),
                Polled::Bound { scope: Scope::Partition(0), bound: i64::MAX },
                Polled::Assigned { partitions: vec![1], count: 2, generation: 1 },
                rows(8, 1, "L2", &["2026-11-05T11:00:00Z"], 40),
                Polled::Bound { scope: Scope::Partition(1), bound: i64::MAX },
            ],
            Some(0),
            &feedback,
        );
        let rebuilt = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&rebuilt);
        let rebuild: Rebuild = Box::new(move |partitions, count| {
            seen.lock().map_err(|_| "poisoned")?.push((partitions.to_vec(), count));
            Ok(engines(partitions.len()))
        });
        let driver = Driver::new(MemorySink, engines(1), stop_options()).unwrap_or_else(|e| panic!("{e}")).with_rebuild(rebuild);
        let (report, _) = driver.run(source).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.events, report.rebalances), (1, 1), "only the new assignment's row");
        assert_eq!(*rebuilt.lock().unwrap_or_else(|e| panic!("{e}")), vec![(vec![1], 2)]);
        let feedback = feedback.lock().unwrap_or_else(|e| panic!("{e}")).clone();
        assert_eq!(feedback, vec![Feedback::Warm { generation: 1 }, Feedback::Durable { generation: 1, positions: vec![(8, 41)] }]);
    }
}
