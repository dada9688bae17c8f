//! The Kafka source of `seedwatch detect`: a consumer-group member's partitions
//! as runtime inputs.
//!
//! Each topic partition is an input; partition `p` of the four family topics is
//! the scope `Partition(p)` (collectors key every event by license, and the
//! `range` assignor hands partition `p` of every topic to one member). A scope's
//! bound is the lowest frontier of its four topics, where a topic that has
//! nothing more to read right now (its next offset is the broker's high
//! watermark) does not hold the others back. The message offset stands in for the
//! line number, so the driver's acknowledged positions are the offsets to commit.
//!
//! A rebalance bumps the fence at once (the driver then ignores what was read
//! under the old assignment), and the new partitions are paused until the driver
//! says their tasks are warm: the member keeps polling meanwhile, so a long
//! warm-up never exceeds `max.poll.interval.ms`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::compute::concat_batches;
use seedwatch_ingest::source::LineSpan;
use seedwatch_ingest::{DecodeStats, DecodedChunk, Decoder, LineChunk};
use seedwatch_kafka::{GroupConsumer, KafkaConfig, KafkaTransportError, Rebalanced, Topic};
use seedwatch_runtime::{Feedback, InputId, Polled, Rows, RuntimeError, Scope, Source};
use seedwatch_schemas::arrow::record_batch::RecordBatch;
use seedwatch_schemas::dead_letter::ReasonCode;
use seedwatch_schemas::Family;

use crate::internal_events::{ConsumerLag, OffsetCommitFailed, OffsetsCommitted, StartOffsetCorrected, WatermarkCheckFailed};

/// Messages decoded together (one Arrow batch per topic partition per round).
const ROUND_MESSAGES: usize = 50_000;
/// Longest a poll round waits before what it has is decoded.
const ROUND_TIME: Duration = Duration::from_millis(250);
/// How often an empty topic partition that holds back its scope is checked against its high watermark.
const CATCH_UP_CHECK: Duration = Duration::from_millis(250);
/// How long a topic must stay at its high watermark before it counts as complete: how far
/// apart a producer's writes to the topics of one chunk may land.
const PRODUCER_SKEW: Duration = Duration::from_millis(1000);
/// How often consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
const SOURCE_KIND: &str = "kafka";

/// How long a topic partition may wait for its first message after a seek, while the broker
/// has more, before the source seeks further back.
const START_STALL: Duration = Duration::from_secs(2);

/// Where a topic partition's reading must start after an assignment, until its first message came.
#[derive(Debug, Clone, Copy)]
struct StartCheck {
    /// The committed offset (0 for "the oldest kept").
    start: i64,
    /// How far before `start` the last seek went.
    back: i64,
    /// The last seek went to the oldest message kept: what comes first is the start.
    at_oldest: bool,
    /// When the last seek was.
    sought: Instant,
}

impl StartCheck {
    fn new(start: i64) -> Self {
        Self { start, back: 0, at_oldest: start == 0, sought: Instant::now() }
    }
}

/// How far one family topic of a partition has been read.
#[derive(Debug)]
struct TopicReading {
    /// Newest event time received (`i64::MIN` before the first).
    newest: i64,
    /// Offset of the next message (after the last received, or where reading starts).
    next_offset: Option<i64>,
    /// Event time up to which this topic is known complete: the newest event any topic of the
    /// partition had brought when this one was found at its high watermark and then stayed
    /// there for the producer-skew grace. Not further: a message produced after that check
    /// may be as new as anything received since.
    complete_to: i64,
    /// When this topic was first found at its high watermark with nothing read since, and the
    /// partition's newest event then. It counts as complete up to that only a grace later.
    complete_since: Option<(Instant, i64)>,
    /// At its high watermark for at least the grace, with nothing read since.
    settled: bool,
    checked: Option<Instant>,
}

impl TopicReading {
    fn new(next_offset: Option<i64>) -> Self {
        Self { newest: i64::MIN, next_offset, complete_to: i64::MIN, complete_since: None, settled: false, checked: None }
    }

    /// How far in event time this topic is known to be complete.
    fn frontier(&self) -> i64 {
        self.newest.max(self.complete_to)
    }
}

/// One owned partition number across the family topics.
#[derive(Debug)]
struct Owned {
    topics: [TopicReading; 4],
    /// Every topic was at its high watermark at the last check, and nothing came since:
    /// nothing is in flight, everything held may go (and a quiet partition publishes its open findings).
    all_complete: bool,
    /// The bound last reported.
    bound: i64,
}

impl Owned {
    fn bound(&self) -> i64 {
        if self.all_complete {
            return i64::MAX;
        }
        self.topics.iter().map(TopicReading::frontier).min().unwrap_or(i64::MAX)
    }

    /// The newest event received on any topic of the partition.
    fn newest(&self) -> i64 {
        self.topics.iter().map(|t| t.newest).max().unwrap_or(i64::MIN)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct KafkaSource {
    consumer: GroupConsumer,
    config: KafkaConfig,
    decoder: Decoder,
    stop: Arc<AtomicBool>,
    fence: Arc<AtomicU64>,
    owned: BTreeMap<u32, Owned>,
    /// An assignment to hand to the driver.
    assigned: Option<Polled>,
    /// Paused until the driver's tasks for the current generation are warm.
    warming: bool,
    /// Where each assigned topic partition is read from once warm: its committed offset, or
    /// the oldest kept (`None`).
    starts: Vec<(Topic, i32, Option<i64>)>,
    /// Once warm, each topic partition's start until its first message came (see [`StartCheck`]).
    start_checks: HashMap<(Topic, i32), StartCheck>,
    /// Test hook: how far past each committed offset reading resumes (see [`KafkaSource::new`]).
    resume_skew: i64,
    round: HashMap<(Topic, i32), LineChunk>,
    ready: VecDeque<Polled>,
    last_lag: Instant,
    commits: Arc<AtomicU64>,
}

impl KafkaSource {
    /// A source over `consumer`; it stops when `stop` is set, and counts offset commits in `commits`.
    ///
    /// Fault injection for tests: `SEEDWATCH_FAULT_RESUME_PAST_START=N` makes every resume seek
    /// N messages past the committed offsets (into a producer's batch, which tansu answers with
    /// the next one), to show the start check sends the consumer back.
    pub fn new(consumer: GroupConsumer, config: KafkaConfig, decoder: Decoder, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) -> Self {
        let resume_skew = std::env::var("SEEDWATCH_FAULT_RESUME_PAST_START").ok().and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        if resume_skew != 0 {
            tracing::warn!(messages = resume_skew, "SEEDWATCH_FAULT_RESUME_PAST_START is set: every resume starts past the committed offsets (a test hook)");
        }
        Self {
            resume_skew,
            consumer,
            config,
            decoder,
            stop,
            fence: Arc::new(AtomicU64::new(0)),
            owned: BTreeMap::new(),
            assigned: None,
            warming: false,
            starts: Vec::new(),
            start_checks: HashMap::new(),
            round: HashMap::new(),
            ready: VecDeque::new(),
            last_lag: Instant::now(),
            commits,
        }
    }

    /// Poll one round of messages into per-partition line buffers; stops early at a rebalance.
    fn read_round(&mut self) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut messages = 0usize;
        while messages < ROUND_MESSAGES && started.elapsed() < ROUND_TIME {
            let record = self.consumer.poll(Duration::from_millis(50)).map_err(kafka_error)?;
            // Rebalance callbacks ran inside that poll: what was read before belongs to the old assignment.
            let rebalances = self.consumer.take_rebalances();
            if !rebalances.is_empty() {
                // A message that came with the rebalance is read again from the start positions.
                self.round.clear();
                self.ready.clear();
                self.rebalanced(&rebalances)?;
                break;
            }
            let Some(record) = record else { break };
            let (topic, partition, offset) = (record.topic, record.partition(), record.offset());
            if let Some(check) = self.start_checks.get(&(topic, partition)).copied() {
                if offset < check.start {
                    // Before the start: committed, so archived.
                    continue;
                }
                if offset > check.start && !check.at_oldest {
                    self.seek_before_start(topic, partition, offset)?;
                    continue;
                }
                self.start_checks.remove(&(topic, partition));
            }
            messages += 1;
            push_line(&mut self.round, &self.config, topic, partition, offset, record.payload());
        }
        Ok(())
    }

    /// The first message of a topic partition came from past its start (`got`), or none came
    /// though the partition has more: seek further back, doubling the distance, down to the
    /// oldest kept; what comes before the start is skipped.
    ///
    /// tansu 0.6 answers a fetch from inside a record batch with the batch after it, so a
    /// consumer that resumes at a committed offset in the middle of a producer's batch loses the
    /// rest of that batch (or, in the last batch, waits for the next). A fetch from a batch's
    /// first offset is answered right, and the only offsets known to be one are the oldest kept
    /// and those found by going back.
    fn seek_before_start(&mut self, topic: Topic, partition: i32, got: i64) -> Result<(), RuntimeError> {
        let Some(check) = self.start_checks.get_mut(&(topic, partition)) else { return Ok(()) };
        check.back = (check.back * 2).max(64);
        let oldest = self.consumer.watermarks(topic, partition).map_or(0, |(low, _)| low);
        let target = check.start.saturating_sub(check.back).max(oldest);
        check.at_oldest = target <= oldest;
        check.sought = Instant::now();
        StartOffsetCorrected { topic: &self.config.topic(topic), partition, expected: check.start, got, sought: target }.emit();
        self.consumer.seek(&[(topic, partition, Some(target))]).map_err(kafka_error)
    }

    /// Topic partitions still waiting for their first message though the broker has more for
    /// them (see [`KafkaSource::seek_before_start`]).
    fn check_starts(&mut self) -> Result<(), RuntimeError> {
        let stalled: Vec<(Topic, i32, i64)> = self
            .start_checks
            .iter()
            .filter(|(_, c)| !c.at_oldest && c.sought.elapsed() > START_STALL)
            .filter_map(|((t, p), c)| {
                let high = self.consumer.cached_watermarks(*t, *p).map(|(_, high)| high)?;
                (high > c.start).then_some((*t, *p, high))
            })
            .collect();
        for (topic, partition, high) in stalled {
            self.seek_before_start(topic, partition, high)?;
        }
        Ok(())
    }

    /// A new assignment: fence off the old one, pause the new partitions until they are warm.
    fn rebalanced(&mut self, rebalances: &[Rebalanced]) -> Result<(), RuntimeError> {
        let generation = self.fence.fetch_add(1, Ordering::AcqRel) + 1;
        self.owned.clear();
        self.start_checks.clear();
        let Some(Rebalanced::Assigned(assigned)) = rebalances.last() else {
            self.assigned = Some(Polled::Assigned { partitions: Vec::new(), count: 1, generation });
            return Ok(());
        };
        self.consumer.pause_assignment().map_err(kafka_error)?;
        self.warming = true;
        let count = retry("reading the partition count", || self.consumer.partition_count(Topic::Events(Family::Login)))?;
        // Where reading resumes once warm: without them a partition would start wherever the
        // client last was, which skips what the old assignment read and never committed.
        let committed = retry("reading the committed offsets", || self.consumer.committed(assigned))?;
        self.starts = assigned.iter().zip(&committed).map(|((topic, p), offset)| (*topic, *p, *offset)).collect();
        tracing::debug!(generation, starts = ?self.starts, "assigned; reading resumes at the committed offsets once warm");
        let numbers: BTreeSet<u32> = assigned.iter().map(|(_, p)| *p as u32).collect();
        for p in &numbers {
            self.owned.insert(*p, Owned { topics: std::array::from_fn(|_| TopicReading::new(None)), all_complete: false, bound: i64::MIN });
        }
        for ((topic, p), offset) in assigned.iter().zip(committed) {
            if let (Topic::Events(family), Some(owned)) = (topic, self.owned.get_mut(&(*p as u32))) {
                owned.topics[family.index()].next_offset = offset;
            }
        }
        self.assigned = Some(Polled::Assigned { partitions: numbers.into_iter().collect(), count: count as u32, generation });
        Ok(())
    }

    /// Decode the round's buffers into rows for the driver, and note how far each topic got.
    fn decode_round(&mut self) -> Result<(), RuntimeError> {
        let received = chrono::Utc::now().timestamp_millis();
        for ((topic, partition), chunk) in self.round.iter_mut() {
            if chunk.lines.is_empty() {
                continue;
            }
            let started = Instant::now();
            let next = chunk.lines.last().map(|l| l.number as i64 + 1);
            tracing::debug!(topic = %self.config.topic(*topic), partition, first = chunk.lines[0].number, messages = chunk.lines.len(), "read");
            let decoded = match topic {
                Topic::Events(_) => self.decoder.decode_chunk(chunk, received)?,
                // The collectors' dead letters, archived so analysts see them beside the events.
                Topic::DeadLetter => dead_letter_messages(&mut self.decoder, chunk, received)?,
                Topic::Findings => continue,
            };
            if let (Topic::Events(family), Some(owned)) = (topic, self.owned.get_mut(&(*partition as u32))) {
                let reading = &mut owned.topics[family.index()];
                if let Some(newest) = decoded.max_event_time() {
                    reading.newest = reading.newest.max(newest);
                }
                reading.next_offset = next;
                reading.complete_since = None;
                reading.settled = false;
                owned.all_complete = false;
            }
            let rows = Rows {
                input: input_id(*topic, *partition),
                scope: Scope::Partition(*partition as u32),
                chunk: decoded,
                source_kind: SOURCE_KIND,
                resume_at: next,
                bytes_done: 0,
                seconds: started.elapsed().as_secs_f64(),
            };
            self.ready.push_back(Polled::Rows(rows));
            chunk.clear();
        }
        Ok(())
    }

    /// Ask the broker whether the topics that hold a partition back have anything more (all
    /// four topics of every such partition, in one request); report every bound that moved.
    ///
    /// A topic found at its high watermark counts as complete once it stayed there for
    /// [`PRODUCER_SKEW`], and only up to the newest event the partition had received when it
    /// was first found there: newer rows wait for a later check (every 250 ms).
    fn check_bounds(&mut self) {
        let mut due = Vec::new();
        for (partition, owned) in &mut self.owned {
            let bound = owned.bound();
            let holding_back = |r: &TopicReading| r.frontier() <= bound && !r.checked.is_some_and(|c| c.elapsed() < CATCH_UP_CHECK);
            if owned.all_complete || !owned.topics.iter().any(holding_back) {
                continue;
            }
            for (family, reading) in Family::ALL.iter().zip(owned.topics.iter_mut()) {
                reading.checked = Some(Instant::now());
                due.push((Topic::Events(*family), *partition as i32, reading.next_offset));
            }
        }
        // Nothing read and nothing committed: reading starts at the low watermark, which a
        // batched "latest" does not tell; those few ask for both (until the first message).
        let (known, unknown): (Vec<_>, Vec<_>) = due.iter().partition(|(_, _, next)| next.is_some());
        let asked: Vec<(Topic, i32)> = known.iter().map(|(t, p, _)| (*t, *p)).collect();
        let mut complete: Vec<(Topic, i32, bool)> = Vec::with_capacity(due.len());
        // Both answers can only be short of the real end (a cached one stale, and tansu 0.6
        // answers "latest" with the last batch's first offset + 1): the larger is the nearer.
        let cached_high = |t: Topic, p: i32| self.consumer.cached_watermarks(t, p).map(|(_, high)| high);
        match self.consumer.end_offsets(&asked) {
            Ok(ends) => complete.extend(known.iter().zip(ends).map(|((t, p, next), end)| {
                let end = end.max(cached_high(*t, *p));
                (*t, *p, matches!((next, end), (Some(next), Some(high)) if *next >= high))
            })),
            Err(e) => {
                // The broker is unreachable: hold the rows until it answers again.
                for (topic, partition, _) in &known {
                    if let Topic::Events(family) = topic {
                        WatermarkCheckFailed { partition: *partition, family: *family, error: &e }.emit();
                    }
                }
                complete.extend(known.iter().map(|(t, p, _)| (*t, *p, false)));
            }
        }
        for (topic, partition, _) in unknown {
            let done = match self.consumer.watermarks(topic, partition) {
                Ok((low, high)) => low >= high.max(cached_high(topic, partition).unwrap_or(high)),
                Err(e) => {
                    if let Topic::Events(family) = topic {
                        WatermarkCheckFailed { partition, family, error: &e }.emit();
                    }
                    false
                }
            };
            complete.push((topic, partition, done));
        }
        let mut checked_partitions: BTreeMap<u32, bool> = BTreeMap::new();
        for (topic, partition, done) in complete {
            let (Topic::Events(family), Some(owned)) = (topic, self.owned.get_mut(&(partition as u32))) else { continue };
            let snapshot = owned.newest();
            let reading = &mut owned.topics[family.index()];
            // Producers write the topics of one chunk independently: a topic at its high watermark
            // may still get rows as old as those just read elsewhere, for a moment. Complete means
            // still at the high watermark a grace after it was first found there.
            match (done, reading.complete_since) {
                (false, _) => {
                    reading.complete_since = None;
                    reading.settled = false;
                }
                (true, None) => reading.complete_since = Some((Instant::now(), snapshot)),
                (true, Some((since, then))) if since.elapsed() >= PRODUCER_SKEW => {
                    reading.complete_to = reading.complete_to.max(then);
                    reading.complete_since = Some((Instant::now(), snapshot));
                    reading.settled = true;
                }
                (true, Some(_)) => {}
            }
            *checked_partitions.entry(partition as u32).or_insert(true) &= reading.settled;
        }
        for (partition, all) in checked_partitions {
            if let Some(owned) = self.owned.get_mut(&partition) {
                owned.all_complete = all;
            }
        }
        for (partition, owned) in &mut self.owned {
            let bound = owned.bound();
            if bound != owned.bound {
                owned.bound = bound;
                self.ready.push_back(Polled::Bound { scope: Scope::Partition(*partition), bound });
            }
        }
    }

    fn measure_lag(&mut self) {
        if self.last_lag.elapsed() < LAG_EVERY {
            return;
        }
        self.last_lag = Instant::now();
        let mut lags = Vec::new();
        for (partition, owned) in &self.owned {
            for (family, reading) in Family::ALL.iter().zip(&owned.topics) {
                let topic = Topic::Events(*family);
                if let Some((low, high)) = self.consumer.cached_watermarks(topic, *partition as i32) {
                    lags.push((self.config.topic(topic), *partition as i32, (high - reading.next_offset.unwrap_or(low)).max(0)));
                }
            }
        }
        ConsumerLag { lags: &lags }.emit();
    }
}

impl Source for KafkaSource {
    fn poll(&mut self) -> Result<Option<Polled>, RuntimeError> {
        if let Some(assigned) = self.assigned.take() {
            return Ok(Some(assigned));
        }
        if !self.warming {
            if let Some(ready) = self.ready.pop_front() {
                return Ok(Some(ready));
            }
        }
        if self.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.read_round()?;
        if let Some(assigned) = self.assigned.take() {
            return Ok(Some(assigned));
        }
        if self.warming {
            // Keep polling (membership, heartbeats); what arrives waits in the round.
            return Ok(Some(Polled::Quiet));
        }
        self.check_starts()?;
        self.decode_round()?;
        self.check_bounds();
        self.measure_lag();
        Ok(Some(self.ready.pop_front().unwrap_or(Polled::Quiet)))
    }

    fn feedback(&mut self, feedback: Feedback) -> Result<(), RuntimeError> {
        let current = self.fence.load(Ordering::Acquire);
        match feedback {
            Feedback::Warm { generation } if generation == current && self.warming => {
                // What arrived while warming is read again from the start positions.
                self.round.clear();
                self.start_checks = self.starts.iter().map(|(topic, partition, start)| ((*topic, *partition), StartCheck::new(start.unwrap_or(0)))).collect();
                let skewed: Vec<(Topic, i32, Option<i64>)> = self.starts.iter().map(|(t, p, start)| (*t, *p, start.map(|o| o + self.resume_skew))).collect();
                self.consumer.resume_from(&skewed).map_err(kafka_error)?;
                self.warming = false;
            }
            Feedback::Durable { generation, positions } if generation == current => {
                let offsets: Vec<(Topic, i32, i64)> = positions.into_iter().filter_map(|(input, at)| input_of(input).map(|(t, p)| (t, p, at))).collect();
                tracing::debug!(generation, ?offsets, "committing offsets");
                match self.consumer.commit(&offsets) {
                    Ok(()) => {
                        self.commits.fetch_add(1, Ordering::Relaxed);
                        OffsetsCommitted { partitions: offsets.len() }.emit();
                    }
                    // A rebalance in progress: the archive holds the rows, the next owner skips them.
                    Err(e) => OffsetCommitFailed { error: &e }.emit(),
                }
            }
            // Feedback about an assignment that no longer holds.
            other => tracing::debug!(?other, current, "feedback for an earlier assignment ignored"),
        }
        Ok(())
    }

    fn close(&mut self) {
        self.consumer.leave();
    }

    fn fence(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.fence)
    }
}

/// Append one message to its topic partition's line buffer.
fn push_line(round: &mut HashMap<(Topic, i32), LineChunk>, config: &KafkaConfig, topic: Topic, partition: i32, offset: i64, payload: &[u8]) {
    let chunk = round.entry((topic, partition)).or_insert_with(|| {
        let mut c = LineChunk::new();
        c.source = Arc::from(format!("{}/{}", config.topic(topic), partition));
        c
    });
    let start = chunk.data.len();
    chunk.data.extend_from_slice(payload);
    // The offset stands in for the line number: it is what dead letters and commits refer to.
    chunk.lines.push(LineSpan { start, end: chunk.data.len(), number: offset as u64, original_len: payload.len() });
}

/// A topic partition as an input id: the topic's index in the high half, the partition in the low.
fn input_id(topic: Topic, partition: i32) -> InputId {
    let index = match topic {
        Topic::Events(f) => f.index() as u64,
        Topic::DeadLetter => 4,
        Topic::Findings => 5,
    };
    (index << 32) | partition as u32 as u64
}

fn input_of(input: InputId) -> Option<(Topic, i32)> {
    let topic = match input >> 32 {
        4 => Topic::DeadLetter,
        i => Topic::Events(*Family::ALL.get(i as usize)?),
    };
    Some((topic, (input & 0xffff_ffff) as i32))
}

fn kafka_error(e: KafkaTransportError) -> RuntimeError {
    RuntimeError::Input { what: "Kafka".into(), source: Box::new(e) }
}

/// Ask the broker a few times before giving up (it may be restarting).
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, KafkaTransportError>) -> Result<T, RuntimeError> {
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(RuntimeError::Input { what: what.to_string(), source: Box::new(e) }),
        }
    }
}

/// The collectors' dead letters as they produced them (JSON objects in the dead-letter schema).
/// A message that is not one (corrupt, or written by something else: a poison message) is
/// itself dead-lettered at its topic partition and offset, and reading goes on; it used to stop
/// the detector, and since its offset was never committed, every restart stopped on it again.
fn dead_letter_messages(decoder: &mut Decoder, chunk: &LineChunk, received: i64) -> Result<DecodedChunk, RuntimeError> {
    let schema = seedwatch_schemas::dead_letter::dead_letter_schema();
    let all: Vec<&[u8]> = chunk.lines.iter().map(|span| chunk.line(span)).collect();
    let mut batches = Vec::new();
    let mut rejected = Vec::new();
    match dead_letter_rows(&schema, &all) {
        Ok(batch) => batches.push(batch),
        // One by one, to find the messages at fault.
        Err(_) => {
            for (index, line) in all.iter().enumerate() {
                match dead_letter_rows(&schema, std::slice::from_ref(line)) {
                    Ok(batch) => batches.push(batch),
                    Err(_) => rejected.push((index, not_a_dead_letter(line), "a message on the dead-letter topic that is not a dead letter (its fields do not fit the dead-letter schema)".to_string())),
                }
            }
        }
    }
    let mut decoded = if rejected.is_empty() { DecodedChunk { events: Vec::new(), dead_letters: None, stats: DecodeStats::default() } } else { decoder.reject_lines(chunk, &rejected, received)? };
    batches.extend(decoded.dead_letters.take());
    decoded.dead_letters = if batches.is_empty() { None } else { Some(concat_batches(&schema, &batches)?) };
    Ok(decoded)
}

/// `lines` (JSON objects) as dead-letter rows.
fn dead_letter_rows(schema: &datafusion::arrow::datatypes::SchemaRef, lines: &[&[u8]]) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        data.extend_from_slice(line);
        data.push(b'\n');
    }
    let reader = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(schema)).build(std::io::Cursor::new(data))?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    concat_batches(schema, &batches)
}

/// Why a message is not a dead letter, as a reason code.
fn not_a_dead_letter(line: &[u8]) -> ReasonCode {
    match std::str::from_utf8(line).map(serde_json::from_str::<serde_json::Value>) {
        Err(_) => ReasonCode::InvalidUtf8,
        Ok(Err(_)) => ReasonCode::NotJson,
        Ok(Ok(serde_json::Value::Object(_))) => ReasonCode::WrongType,
        Ok(Ok(_)) => ReasonCode::NotObject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_ids_round_trip_topic_and_partition() {
        for topic in [Topic::Events(Family::Login), Topic::Events(Family::Audit), Topic::DeadLetter] {
            for partition in [0, 7, 1023] {
                assert_eq!(input_of(input_id(topic, partition)), Some((topic, partition)));
            }
        }
        assert_ne!(input_id(Topic::Events(Family::Api), 1), input_id(Topic::Events(Family::Sync), 1));
    }
}
