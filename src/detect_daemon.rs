//! `seedwatch detect --brokers …`: the detector as a member of a Kafka
//! consumer group.
//!
//! Work is split by partition number: collectors key every event by license,
//! so partition `p` of each family topic holds the same licenses, and the
//! `range` assignor hands partition `p` of every topic to one member. Each
//! assigned partition number is a *task* with its own [`RuleEngine`], rebuilt
//! from the archive when the task is assigned (the archive is narrowed to the
//! task's licenses with the `seedwatch_partition(license)` SQL function).
//!
//! A task releases events in event-time order across its four topics: rows are
//! held until every topic of the task has been read at least as far in event
//! time (or has nothing more to read), so a fast topic never makes a slow
//! one's events late. Released rows are archived first, detected on if new,
//! and findings go to the archive and the findings topic.
//!
//! Offsets are committed only after an archive commit (every
//! `commit_interval`, and at shutdown), and only up to the rows that commit
//! holds. A crash or a lost partition therefore replays at most the
//! uncommitted tail; the archive drops rows it already holds, so the archive
//! (events and findings) gets everything exactly once. On a rebalance all
//! uncommitted work is dropped and every task is rebuilt from the archive,
//! which is what the new owner of a partition does too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Int32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimestampMillisecondType};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use seedwatch_archive::{ArchiveWriter, Sink, WriterOptions};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::rule::CompiledRule;
use seedwatch_detect::{Detector, RuleEngine};
use seedwatch_ingest::source::LineSpan;
use seedwatch_ingest::{DecodedChunk, Decoder, Fingerprinter, LineChunk, Redactor};
use seedwatch_kafka::{partition_for, GroupConsumer, KafkaConfig, Message, Producer, Rebalanced, Topic};
use seedwatch_schemas::arrow::record_batch::RecordBatch;
use seedwatch_schemas::{EventBatch, Family, Finding, Table};

use crate::internal_events::{ConsumerLag, OffsetCommitFailed, OffsetsCommitted, OpenFindings, OrderingReleaseForced, PartitionsAssigned, WatermarkAdvanced, WatermarkCheckFailed};
use crate::pipeline::{self, RunReport};

/// Messages decoded together (one Arrow batch per topic partition per round).
const ROUND_MESSAGES: usize = 50_000;
/// Longest a poll round waits before what it has is processed.
const ROUND_TIME: Duration = Duration::from_millis(250);
/// How often an empty topic partition that holds back a task is checked against its high watermark.
const CATCH_UP_CHECK: Duration = Duration::from_millis(250);
/// How often consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
const SOURCE_KIND: &str = "kafka";

/// What `seedwatch detect` needs.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// The cluster.
    pub kafka: KafkaConfig,
    /// Consumer group id.
    pub group: String,
    /// Static group membership id (`group.instance.id`), stable across restarts.
    pub instance_id: Option<String>,
    /// Archive root (shared by the group's members).
    pub archive: PathBuf,
    /// Rules directory.
    pub rules: PathBuf,
    /// Optional locations.csv.
    pub locations: Option<PathBuf>,
    /// Optional roster.csv.
    pub roster: Option<PathBuf>,
    /// File holding the local fingerprint secret (created if missing).
    pub fingerprint_key: PathBuf,
    /// How far behind a task's newest event an event may arrive and still be evaluated (ms).
    pub allowed_lateness_ms: i64,
    /// Archive commit (then offset commit) interval.
    pub commit_interval: Duration,
    /// A task that has read everything and heard nothing new for this long
    /// publishes the findings it holds open.
    pub idle_after: Duration,
    /// Rows held back for ordering, over all tasks, before they are released regardless.
    pub max_buffered_rows: usize,
    /// Partitions for topics created at start-up.
    pub partitions: i32,
    /// Print a status line to stderr every few seconds.
    pub progress: bool,
}

/// What a detector did until it was stopped.
#[derive(Debug, Default)]
pub struct DetectReport {
    /// Events archived (new rows).
    pub events: u64,
    /// Findings published (new in the archive).
    pub findings: u64,
    /// Rebalances seen.
    pub rebalances: u64,
    /// Offset commits.
    pub commits: u64,
    /// Rows released before their task's other topics caught up (buffer full).
    pub forced_releases: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// One topic partition of a task: decoded rows not yet released, and how far it was read.
#[derive(Debug, Default)]
struct TopicQueue {
    batches: VecDeque<EventBatch>,
    /// Newest event time received (`i64::MIN` before the first).
    newest: i64,
    /// Offset of the next message (after the last received, or where reading starts).
    next_offset: Option<i64>,
    /// Nothing more to read right now (checked against the high watermark).
    caught_up: bool,
    checked: Option<Instant>,
}

impl TopicQueue {
    fn new() -> Self {
        Self { newest: i64::MIN, ..Self::default() }
    }

    fn buffered_rows(&self) -> usize {
        self.batches.iter().map(|b| b.batch.num_rows()).sum()
    }

    /// The offset to commit: the oldest row still held, else the next message.
    fn commit_offset(&self) -> Option<i64> {
        let held = self.batches.iter().filter_map(|b| line_column(&b.batch).and_then(|l| l.values().iter().copied().min())).min();
        held.or(self.next_offset)
    }

    /// How far in event time this topic is known to be complete.
    fn frontier(&self) -> i64 {
        if self.batches.is_empty() && self.caught_up { i64::MAX } else { self.newest }
    }
}

/// One partition number across the family topics.
#[derive(Debug)]
struct Task {
    engine: RuleEngine,
    queues: [TopicQueue; 4],
    dead_letters_next: Option<i64>,
    last_message: Instant,
    /// Open findings were published since the last message.
    published_open: bool,
}

impl Task {
    fn buffered_rows(&self) -> usize {
        self.queues.iter().map(TopicQueue::buffered_rows).sum()
    }
}

/// Run until SIGINT/SIGTERM (or `stop` is set).
pub fn detect(opts: &DetectOptions, stop: Arc<AtomicBool>) -> Result<DetectReport> {
    let started = Instant::now();
    let rules = seedwatch_detect::load_rules(&opts.rules)?;
    let reference = Arc::new(Reference::load(&opts.rules, opts.locations.as_deref(), opts.roster.as_deref())?);
    // Checked once here, so a bad rule set fails before joining the group.
    let probe = RuleEngine::with_reference(rules.clone(), Arc::clone(&reference))?;
    for (rule, why) in probe.skipped() {
        tracing::warn!(rule = %rule, reason = why, "rule skipped");
    }
    let redactor = Redactor::new(Fingerprinter::load_or_create(&opts.fingerprint_key)?)?;
    let mut decoder = Decoder::new(redactor);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let created = runtime.block_on(seedwatch_kafka::create_topics(&opts.kafka, opts.partitions)).with_context(|| format!("reaching Kafka at {}", opts.kafka.brokers))?;
    for (topic, _) in created.iter().filter(|(_, new)| *new) {
        tracing::info!(topic = %topic, partitions = opts.partitions, "topic created");
    }
    let producer = Producer::new(&opts.kafka)?;
    let consumer = GroupConsumer::new(&opts.kafka, &opts.group, opts.instance_id.as_deref())?;
    let mut sink = open_writer(opts)?;
    let mut state = State { opts, rules, reference, tasks: BTreeMap::new(), report: RunReport::default(), out: DetectReport::default(), findings: Vec::new(), watermark: i64::MIN };

    let mut round: HashMap<(Topic, i32), LineChunk> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now() - LAG_EVERY;
    let mut last_status = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // 1. A round of messages, copied into one line buffer per topic partition.
        let round_started = Instant::now();
        let mut messages = 0usize;
        while messages < ROUND_MESSAGES && round_started.elapsed() < ROUND_TIME {
            let record = consumer.poll(Duration::from_millis(50))?;
            // Rebalance callbacks ran inside that poll: anything read before belongs to the old assignment.
            let rebalances = consumer.take_rebalances();
            if !rebalances.is_empty() {
                round.clear();
                sink = state.rebalance(&rebalances, &consumer, sink)?;
            }
            let Some(record) = record else { break };
            messages += 1;
            let chunk = round.entry((record.topic, record.partition())).or_insert_with(|| {
                let mut c = LineChunk::new();
                c.source = Arc::from(format!("{}/{}", opts.kafka.topic(record.topic), record.partition()));
                c
            });
            let start = chunk.data.len();
            chunk.data.extend_from_slice(record.payload());
            // The offset stands in for the line number: it is what dead letters and commits refer to.
            chunk.lines.push(LineSpan { start, end: chunk.data.len(), number: record.offset() as u64, original_len: record.payload().len() });
        }

        // 2. Decode each buffer into Arrow batches and queue them on their task.
        for ((topic, partition), chunk) in round.iter_mut() {
            if chunk.lines.is_empty() {
                continue;
            }
            let next = chunk.lines.last().map(|l| l.number as i64 + 1);
            state.take_messages(&mut sink, &mut decoder, *topic, *partition, chunk, next)?;
            chunk.clear();
        }

        // 3. Release what every topic of a task has caught up to, detect, publish.
        state.check_caught_up(&consumer);
        let force = state.tasks.values().map(Task::buffered_rows).sum::<usize>() > opts.max_buffered_rows;
        let partitions: Vec<i32> = state.tasks.keys().copied().collect();
        for partition in partitions {
            state.release(&mut sink, partition, force)?;
            state.publish_open_when_idle(partition)?;
        }
        state.publish(&mut sink, &producer, &runtime)?;

        // 4. Durable archive, then offsets.
        if last_commit.elapsed() >= opts.commit_interval {
            state.commit(&mut sink, &consumer)?;
            last_commit = Instant::now();
        }
        if last_lag.elapsed() >= LAG_EVERY {
            state.measure_lag(&consumer);
            last_lag = Instant::now();
        }
        if opts.progress && last_status.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "detect: {} partitions, {} events archived, {} findings published, {} rows held for ordering",
                state.tasks.len(),
                state.out.events,
                state.out.findings,
                state.tasks.values().map(Task::buffered_rows).sum::<usize>()
            );
            last_status = Instant::now();
        }
    }
    state.commit(&mut sink, &consumer)?;
    consumer.close();
    state.out.seconds = started.elapsed().as_secs_f64();
    Ok(state.out)
}

fn open_writer(opts: &DetectOptions) -> Result<ArchiveWriter> {
    ArchiveWriter::open(&opts.archive, WriterOptions::default()).with_context(|| format!("opening the archive at {}", opts.archive.display()))
}

struct State<'a> {
    opts: &'a DetectOptions,
    rules: Vec<CompiledRule>,
    reference: Arc<Reference>,
    tasks: BTreeMap<i32, Task>,
    /// Archive bookkeeping shared with the embedded pipeline's helpers.
    report: RunReport,
    out: DetectReport,
    findings: Vec<Finding>,
    /// Newest event time released by any task.
    watermark: i64,
}

impl State<'_> {
    /// Drop everything not committed; rebuild the tasks now assigned from the archive.
    fn rebalance(&mut self, rebalances: &[Rebalanced], consumer: &GroupConsumer, sink: ArchiveWriter) -> Result<ArchiveWriter> {
        self.out.rebalances += 1;
        // A fresh writer forgets pending rows and re-reads ids the other members wrote.
        drop(sink);
        let sink = open_writer(self.opts)?;
        self.tasks.clear();
        self.findings.clear();
        let Some(Rebalanced::Assigned(assigned)) = rebalances.last() else {
            PartitionsAssigned { owned: &[], partition_count: 1 }.emit();
            return Ok(sink);
        };
        let numbers: std::collections::BTreeSet<i32> = assigned.iter().map(|(_, p)| *p).collect();
        let count = retry("reading the partition count", || consumer.partition_count(Topic::Events(Family::Login)))?;
        // Unknown committed offsets only delay the first commit and the caught-up checks.
        let committed = consumer.committed(assigned).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the committed offsets");
            vec![None; assigned.len()]
        });
        for partition in numbers {
            let t = Instant::now();
            let mut engine = RuleEngine::with_reference(self.rules.clone(), Arc::clone(&self.reference))?.with_allowed_lateness(self.opts.allowed_lateness_ms);
            let resumed = warm_up(&mut engine, &self.opts.archive, partition, count)?;
            let mut task = Task { engine, queues: [TopicQueue::new(), TopicQueue::new(), TopicQueue::new(), TopicQueue::new()], dead_letters_next: None, last_message: Instant::now(), published_open: false };
            for ((topic, p), offset) in assigned.iter().zip(&committed) {
                if *p != partition {
                    continue;
                }
                match topic {
                    Topic::Events(f) => task.queues[f.index()].next_offset = *offset,
                    Topic::DeadLetter => task.dead_letters_next = *offset,
                    Topic::Findings => {}
                }
            }
            tracing::info!(partition, rows = resumed.map_or(0, |r| r.rows), seconds = t.elapsed().as_secs_f64(), "partition assigned, state restored from the archive");
            self.tasks.insert(partition, task);
        }
        PartitionsAssigned { owned: &self.tasks.keys().copied().collect::<Vec<_>>(), partition_count: count }.emit();
        Ok(sink)
    }

    /// Decode one topic partition's messages of this round and queue them on their task.
    fn take_messages(&mut self, sink: &mut ArchiveWriter, decoder: &mut Decoder, topic: Topic, partition: i32, chunk: &LineChunk, next: Option<i64>) -> Result<()> {
        let Some(task) = self.tasks.get_mut(&partition) else {
            tracing::warn!(topic = %self.opts.kafka.topic(topic), partition, "message for a partition this member does not own; dropped (it is re-read by its owner)");
            return Ok(());
        };
        task.last_message = Instant::now();
        task.published_open = false;
        let received = chrono::Utc::now().timestamp_millis();
        let family = match topic {
            Topic::Events(f) => f,
            Topic::DeadLetter => {
                // The collectors' dead letters, archived so analysts see them beside the events.
                let batch = dead_letters_from_json(chunk)?;
                pipeline::write(sink, Table::DeadLetter, &batch, SOURCE_KIND, &mut self.report)?;
                task.dead_letters_next = next;
                return Ok(());
            }
            Topic::Findings => return Ok(()),
        };
        let DecodedChunk { events, dead_letters, .. } = decoder.decode_chunk(chunk, received)?;
        if let Some(dead) = &dead_letters {
            pipeline::write(sink, Table::DeadLetter, dead, SOURCE_KIND, &mut self.report)?;
        }
        let queue = &mut task.queues[family.index()];
        for batch in events {
            if let Some(newest) = time_column(&batch.batch).and_then(|t| t.values().iter().copied().max()) {
                queue.newest = queue.newest.max(newest);
            }
            queue.batches.push_back(batch);
        }
        queue.next_offset = next;
        queue.caught_up = false;
        Ok(())
    }

    /// Mark empty topic partitions that hold a task back as caught up when nothing more is there to read.
    fn check_caught_up(&mut self, consumer: &GroupConsumer) {
        for (partition, task) in &mut self.tasks {
            let bound = task.queues.iter().map(TopicQueue::frontier).min().unwrap_or(i64::MAX);
            for (family, queue) in Family::ALL.iter().zip(task.queues.iter_mut()) {
                let holding_back = queue.batches.is_empty() && !queue.caught_up && queue.newest <= bound;
                if !holding_back || queue.checked.is_some_and(|c| c.elapsed() < CATCH_UP_CHECK) {
                    continue;
                }
                queue.checked = Some(Instant::now());
                let topic = Topic::Events(*family);
                match consumer.watermarks(topic, *partition) {
                    Ok((low, high)) => queue.caught_up = queue.next_offset.unwrap_or(low) >= high,
                    // The broker is unreachable: hold the rows until it answers again.
                    Err(e) => WatermarkCheckFailed { partition: *partition, family: *family, error: &e }.emit(),
                }
            }
        }
    }

    /// Hand a task's rows up to the slowest topic's frontier to the archive and the rules.
    fn release(&mut self, sink: &mut ArchiveWriter, partition: i32, force: bool) -> Result<()> {
        let Some(task) = self.tasks.get_mut(&partition) else { return Ok(()) };
        let bound = if force { i64::MAX } else { task.queues.iter().map(TopicQueue::frontier).min().unwrap_or(i64::MAX) };
        if bound == i64::MIN {
            return Ok(());
        }
        if force && task.buffered_rows() > 0 {
            self.out.forced_releases += 1;
            OrderingReleaseForced { partition, rows: task.buffered_rows() }.emit();
        }
        let mut newest = i64::MIN;
        for (family, queue) in Family::ALL.iter().zip(task.queues.iter_mut()) {
            let mut released = Vec::new();
            let mut held = VecDeque::new();
            for events in queue.batches.drain(..) {
                let Some(time) = time_column(&events.batch) else { continue };
                let keep = BooleanArray::from_unary(time, |t| t <= bound);
                match keep.true_count() {
                    0 => held.push_back(events),
                    n if n == events.batch.num_rows() => released.push(events.batch),
                    _ => {
                        released.push(filter_record_batch(&events.batch, &keep)?);
                        let rest = datafusion::arrow::compute::not(&keep)?;
                        held.push_back(EventBatch { family: events.family, batch: filter_record_batch(&events.batch, &rest)? });
                    }
                }
            }
            queue.batches = held;
            if released.is_empty() {
                continue;
            }
            let batch = concat_batches(&released[0].schema(), &released)?;
            if let Some(t) = time_column(&batch).and_then(|t| t.values().iter().copied().max()) {
                newest = newest.max(t);
            }
            let events = EventBatch { family: *family, batch };
            let before = self.report.duplicates.values().sum::<u64>();
            pipeline::archive_and_detect(sink, &mut task.engine, &events, SOURCE_KIND, &mut self.report, &mut self.findings)?;
            let duplicates = self.report.duplicates.values().sum::<u64>() - before;
            self.out.events += events.batch.num_rows() as u64 - duplicates;
        }
        if newest != i64::MIN {
            task.engine.advance(newest);
            self.watermark = self.watermark.max(newest);
            WatermarkAdvanced { watermark: self.watermark }.emit();
        }
        Ok(())
    }

    /// A task that has read everything and heard nothing new for `idle_after`
    /// publishes the findings it holds open (see [`RuleEngine::open_snapshot`]).
    fn publish_open_when_idle(&mut self, partition: i32) -> Result<()> {
        let Some(task) = self.tasks.get_mut(&partition) else { return Ok(()) };
        let idle = task.queues.iter().all(|q| q.batches.is_empty() && q.caught_up) && task.last_message.elapsed() >= self.opts.idle_after;
        if idle && !task.published_open {
            task.engine.open_snapshot(&mut self.findings);
            task.published_open = true;
            OpenFindings { open: &task.engine.open_findings() }.emit();
        }
        Ok(())
    }

    /// Archive the findings of this round; produce those the archive did not hold yet.
    fn publish(&mut self, sink: &mut ArchiveWriter, producer: &Producer, runtime: &tokio::runtime::Runtime) -> Result<()> {
        if !self.findings.is_empty() {
            pipeline::emit_findings(sink, &mut self.findings, SOURCE_KIND, &mut self.report)?;
        }
        sink.flush_full()?;
        if self.report.findings.is_empty() {
            return Ok(());
        }
        let payloads: Vec<(String, String)> =
            self.report.findings.iter().map(|f| Ok((f.license.clone(), serde_json::to_string(f)?))).collect::<Result<_, serde_json::Error>>()?;
        let messages = payloads.iter().map(|(key, payload)| Message { topic: Topic::Findings, key: key.as_bytes(), payload: payload.as_bytes() });
        self.out.findings += runtime.block_on(producer.send_all(messages))?;
        self.report.findings.clear();
        Ok(())
    }

    /// Make the archive durable, then commit the offsets it covers.
    fn commit(&mut self, sink: &mut ArchiveWriter, consumer: &GroupConsumer) -> Result<()> {
        pipeline::commit(sink, &mut self.report)?;
        let mut offsets = Vec::new();
        for (partition, task) in &self.tasks {
            for (family, queue) in Family::ALL.iter().zip(&task.queues) {
                if let Some(offset) = queue.commit_offset() {
                    offsets.push((Topic::Events(*family), *partition, offset));
                }
            }
            if let Some(offset) = task.dead_letters_next {
                offsets.push((Topic::DeadLetter, *partition, offset));
            }
        }
        match consumer.commit(&offsets) {
            Ok(()) => {
                self.out.commits += 1;
                OffsetsCommitted { partitions: offsets.len() }.emit();
            }
            // A rebalance in progress: the archive holds the rows, the next owner skips them.
            Err(e) => OffsetCommitFailed { error: &e }.emit(),
        }
        Ok(())
    }

    fn measure_lag(&self, consumer: &GroupConsumer) {
        let mut lags = Vec::new();
        for (partition, task) in &self.tasks {
            for (family, queue) in Family::ALL.iter().zip(&task.queues) {
                let topic = Topic::Events(*family);
                if let Some((low, high)) = consumer.cached_watermarks(topic, *partition) {
                    let position = queue.commit_offset().unwrap_or(low);
                    lags.push((self.opts.kafka.topic(topic), *partition, (high - position).max(0)));
                }
            }
        }
        ConsumerLag { lags: &lags }.emit();
    }
}

/// Ask the broker a few times before giving up (it may be restarting).
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, seedwatch_kafka::KafkaTransportError>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(anyhow::Error::from(e).context(what.to_string())),
        }
    }
}

fn time_column(batch: &RecordBatch) -> Option<&datafusion::arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    batch.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
}

fn line_column(batch: &RecordBatch) -> Option<&datafusion::arrow::array::PrimitiveArray<Int64Type>> {
    batch.column_by_name("line").and_then(|c| c.as_primitive_opt::<Int64Type>())
}

/// Dead-letter rows as the collectors produced them (JSON objects in the dead-letter schema).
fn dead_letters_from_json(chunk: &LineChunk) -> Result<RecordBatch> {
    let schema = seedwatch_schemas::dead_letter::dead_letter_schema();
    let mut data = Vec::with_capacity(chunk.data.len() + chunk.lines.len());
    for span in &chunk.lines {
        data.extend_from_slice(chunk.line(span));
        data.push(b'\n');
    }
    let reader = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&schema)).build(std::io::Cursor::new(data))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().with_context(|| format!("reading dead letters from {}", chunk.source))?;
    Ok(concat_batches(&schema, &batches)?)
}

/// `seedwatch_partition(license)`: the partition the collectors' producer put a license in.
pub fn partition_udf(partitions: i32) -> ScalarUDF {
    let f = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let licenses = arrays.first().ok_or_else(|| datafusion::error::DataFusionError::Plan("seedwatch_partition takes one argument".into()))?.as_string::<i32>();
        let out: Int32Array = licenses.iter().map(|l| Some(partition_for(l.unwrap_or("").as_bytes(), partitions))).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    };
    create_udf("seedwatch_partition", vec![DataType::Utf8], DataType::Int32, Volatility::Immutable, Arc::new(f))
}

/// Rebuild a task's engine from the archived events of its licenses.
fn warm_up(engine: &mut RuleEngine, archive: &std::path::Path, partition: i32, partitions: i32) -> Result<Option<pipeline::Resumed>> {
    if !archive.is_dir() {
        return Ok(None);
    }
    pipeline::block_on(async {
        let ctx = seedwatch_archive::open_session(archive).await?;
        ctx.register_udf(partition_udf(partitions));
        seedwatch_archive::query::restrict_events(&ctx, &format!("seedwatch_partition(license) = {partition}")).await?;
        pipeline::resume_from_session(engine, &ctx, None, pipeline::Judge::OnNextBatch).await
    })
    .with_context(|| format!("restoring partition {partition} from the archive"))
}

/// A flag set by SIGINT or SIGTERM.
pub fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("seedwatch-signals".into()).spawn(move || {
        runtime.block_on(async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    flag.store(true, Ordering::Relaxed);
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: committing what was archived");
            flag.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(stop)
}
