//! `seedwatch collect`: validate and redact log lines, then produce them to
//! Kafka, one topic per family, keyed by license.
//!
//! Lines are decoded with the same [`Decoder`] as the embedded pipeline, so
//! the same lines are accepted and the same reasons reject the rest. A valid
//! line is produced as its original text with every credential replaced by a
//! fingerprint marker (the decoder on the detector side keeps such markers as
//! they are, so fingerprints match the embedded pipeline's). Bad lines go to
//! the dead-letter topic as JSON rows with their reason. A chunk's messages are
//! all acknowledged before the next chunk is read: when Kafka is slow or down,
//! the collector stops reading instead of buffering or dropping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use seedwatch_ingest::{stdin_source, ChunkLimits, DecodeStats, Decoder, Fingerprinter, LineChunk, Redactor, Source, TailOptions, TailPosition, TailSource};
use seedwatch_kafka::{KafkaConfig, Message, Producer, Topic};
use seedwatch_schemas::arrow::array::{Array, AsArray};
use seedwatch_schemas::arrow::datatypes::Int64Type;

/// What `seedwatch collect` needs.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Input files; `-` is stdin.
    pub inputs: Vec<PathBuf>,
    /// The cluster.
    pub kafka: KafkaConfig,
    /// File holding the local fingerprint secret (created if missing).
    pub fingerprint_key: PathBuf,
    /// Where to remember how far each file was read (and acknowledged).
    pub checkpoint: Option<PathBuf>,
    /// Keep following the (single) file as it grows and rotates.
    pub follow: bool,
    /// Ends a follow.
    pub stop: Arc<AtomicBool>,
    /// Input lines are nginx JSON access logs, mapped to `api` events with this mapping.
    pub nginx: Option<seedwatch_ingest::nginx::NginxMapping>,
}

/// What a collection did.
#[derive(Debug, Default)]
pub struct CollectReport {
    /// Decode counts.
    pub decode: DecodeStats,
    /// Messages acknowledged by Kafka (events and dead letters).
    pub produced: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Read every input, produce what it holds, return once Kafka acknowledged all of it
/// (with `follow`, once stopped).
pub fn collect(opts: &CollectOptions) -> Result<CollectReport> {
    let started = Instant::now();
    if opts.follow && (opts.inputs.len() != 1 || opts.inputs[0].as_os_str() == "-") {
        return Err(anyhow!("--follow takes exactly one file (run one collector per file)"));
    }
    let redactor = Redactor::new(Fingerprinter::load(&opts.fingerprint_key)?);
    let mut decoder = Decoder::new(redactor.clone()).with_max_clock_skew(crate::pipeline::DEFAULT_MAX_CLOCK_SKEW_MS);
    let producer = Producer::new(&opts.kafka)?;
    if opts.follow {
        // A following collector is a daemon: ready while a broker answers (it queues and
        // retries meanwhile, but its pod should say it is cut off).
        crate::internal_events::ReadinessExpected { checks: &["kafka"] }.emit();
        crate::metrics_server::watch_broker(producer.clone(), Arc::clone(&opts.stop))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut checkpoint = match &opts.checkpoint {
        Some(path) => Checkpoint::load(path)?,
        None => Checkpoint::default(),
    };
    let mut report = CollectReport::default();
    let mut chunk = LineChunk::new();
    let mut mapped = LineChunk::new();
    for input in &opts.inputs {
        let key = input.canonicalize().map(|p| p.display().to_string()).unwrap_or_else(|_| input.display().to_string());
        let mut source = if input.as_os_str() == "-" {
            Input::Stdin(stdin_source(ChunkLimits::default()))
        } else {
            let options = TailOptions { follow: opts.follow, stop: Arc::clone(&opts.stop), ..TailOptions::default() };
            let resume = checkpoint.files.get(&key).copied();
            if let Some(p) = resume {
                tracing::info!(path = %input.display(), offset = p.offset, line = p.line, "resuming from the checkpoint");
            }
            Input::File(TailSource::open(input, resume, options)?)
        };
        loop {
            let more = match &mut source {
                Input::Stdin(s) => s.next_chunk(&mut chunk)?,
                Input::File(s) => s.next_chunk(&mut chunk)?,
            };
            if !more {
                break;
            }
            let lines = match &opts.nginx {
                Some(mapping) => {
                    mapping.map_chunk(&chunk, &mut mapped);
                    &mapped
                }
                None => &chunk,
            };
            report.produced += produce_chunk(lines, &mut decoder, &redactor, &producer, &runtime, &mut report.decode, None)?.produced;
            // Only lines Kafka acknowledged are behind the saved position.
            if let (Some(path), Input::File(tail)) = (&opts.checkpoint, &source) {
                checkpoint.files.insert(key.clone(), tail.position());
                checkpoint.save(path)?;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What happened to one chunk.
#[derive(Debug, Default)]
pub struct ChunkOutcome {
    /// Messages Kafka acknowledged (events and dead letters).
    pub produced: u64,
    /// Lines whose license the sender may not send for (then nothing was produced).
    /// `(line, license, location)` of events outside the sender's scope.
    pub forbidden: Vec<(u64, String, String)>,
    /// Lines dead-lettered: (line, reason code, reason).
    pub dead: Vec<(u64, String, String)>,
    /// Bad lines, when more than allowed (then nothing was produced).
    pub too_many_dead: Option<usize>,
}

/// What a pushed chunk must meet to be produced at all (the intake's; a collector reading its
/// own files produces everything).
pub struct Admission<'a> {
    /// Whether its sender may send for a license and location.
    pub allowed: &'a dyn Fn(&str, &str) -> bool,
    /// Most bad lines.
    pub max_dead_letters: usize,
}

impl std::fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("max_dead_letters", &self.max_dead_letters).finish_non_exhaustive()
    }
}

/// Validate and redact one chunk, produce it, wait for the acknowledgements.
/// With `admission`, a chunk holding an event for a license it refuses, or more bad lines than
/// it allows, is not produced at all.
pub fn produce_chunk(
    chunk: &LineChunk,
    decoder: &mut Decoder,
    redactor: &Redactor,
    producer: &Producer,
    runtime: &tokio::runtime::Runtime,
    stats: &mut DecodeStats,
    admission: Option<&Admission<'_>>,
) -> Result<ChunkOutcome> {
    let mut outcome = ChunkOutcome::default();
    let decoded = decoder.decode_chunk(chunk, chrono::Utc::now().timestamp_millis())?;
    let dead = decoded.dead_letters.as_ref().map_or(0, |d| d.num_rows());
    if admission.is_some_and(|a| dead > a.max_dead_letters) {
        outcome.too_many_dead = Some(dead);
        return Ok(outcome);
    }
    stats.merge(&decoded.stats);
    // Payloads borrow the chunk unless a credential had to be replaced.
    let mut payloads: Vec<(Topic, &str, std::borrow::Cow<'_, str>)> = Vec::with_capacity(chunk.lines.len());
    for events in &decoded.events {
        let b = &events.batch;
        let lines = b.column_by_name("line").and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or_else(|| anyhow!("decoded rows carry no line number"))?;
        let licenses = b.column_by_name("license").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| anyhow!("decoded rows carry no license"))?;
        let ids = b.column_by_name("event_id").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| anyhow!("decoded rows carry no event_id"))?;
        let locations = b.column_by_name("location").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| anyhow!("decoded rows carry no location"))?;
        for row in 0..b.num_rows() {
            let number = lines.value(row) as u64;
            let license = if licenses.is_null(row) { "" } else { licenses.value(row) };
            if let Some(admission) = admission {
                let location = if locations.is_null(row) { "" } else { locations.value(row) };
                if !(admission.allowed)(license, location) {
                    outcome.forbidden.push((number, license.to_string(), location.to_string()));
                    continue;
                }
            }
            let span = chunk.lines.binary_search_by_key(&number, |s| s.number).map(|i| &chunk.lines[i]).map_err(|_| anyhow!("line {number} is not in its chunk"))?;
            let text = std::str::from_utf8(&chunk.data[span.start..span.end]).context("a decoded line is not UTF-8")?;
            // Re-serialised from the decoded object when it carries a credential: escapes
            // (`\u0026api_key=`) and nested members hide nothing.
            let mut payload = redactor.redact_line(text);
            if !payload.contains("\"event_id\"") {
                payload = std::borrow::Cow::Owned(stamp_event_id(&payload, ids.value(row)));
            }
            payloads.push((Topic::Events(events.family), license, payload));
        }
    }
    if !outcome.forbidden.is_empty() {
        return Ok(outcome);
    }
    if let Some(dead) = &decoded.dead_letters {
        let column = |name: &str| dead.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| anyhow!("dead letters carry no {name}"));
        let (codes, reasons) = (column("reason_code")?, column("reason")?);
        let lines = dead.column_by_name("line").and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or_else(|| anyhow!("dead letters carry no line"))?;
        for row in 0..dead.num_rows() {
            outcome.dead.push((lines.value(row) as u64, codes.value(row).to_string(), reasons.value(row).to_string()));
        }
        let mut buf = Vec::new();
        {
            let mut writer = seedwatch_schemas::arrow::json::LineDelimitedWriter::new(&mut buf);
            writer.write_batches(&[dead])?;
            writer.finish()?;
        }
        let text = String::from_utf8(buf)?;
        for line in text.lines() {
            payloads.push((Topic::DeadLetter, "dead_letter", std::borrow::Cow::Owned(line.to_string())));
        }
    }
    let messages = payloads.iter().map(|(topic, key, payload)| Message { topic: *topic, key: key.as_bytes(), payload: payload.as_bytes() });
    outcome.produced = runtime.block_on(producer.send_all(messages))?;
    Ok(outcome)
}

/// `line` (a JSON object) with `"event_id"` first: the id the decoder derived from the line's
/// file and position, so a resent chunk is recognised downstream and two identical lines
/// stay two events (a detector reading Kafka knows only offsets, which a resend changes).
fn stamp_event_id(line: &str, id: &str) -> String {
    let body = line.trim_start().strip_prefix('{').unwrap_or(line).trim_start();
    let separator = if body.starts_with('}') { "" } else { "," };
    format!("{{\"event_id\":\"{id}\"{separator}{body}")
}

enum Input {
    Stdin(seedwatch_ingest::source::LineReader<std::io::BufReader<std::io::Stdin>>),
    File(TailSource),
}

/// How far each file was collected: saved after every acknowledged chunk.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    files: BTreeMap<String, TailPosition>,
}

impl Checkpoint {
    fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{}: not a seedwatch collect checkpoint", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write to a temp file, sync, rename: a crash leaves the old checkpoint or the new one.
    fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().with_context(|| format!("saving the checkpoint {}", path.display()))
    }
}

/// Create the topics (`seedwatch topics create`).
pub fn create_topics(kafka: &KafkaConfig, partitions: i32) -> Result<Vec<(String, bool)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(seedwatch_kafka::create_topics(kafka, partitions))?)
}

#[cfg(test)]
mod tests {
    use super::stamp_event_id;

    #[test]
    fn the_derived_id_goes_first_in_the_object() {
        assert_eq!(stamp_event_id(r#"{"time":1,"family":"login"}"#, "ab"), r#"{"event_id":"ab","time":1,"family":"login"}"#);
        assert_eq!(stamp_event_id(r#"  { "time":1}"#, "ab"), r#"{"event_id":"ab","time":1}"#);
    }
}
