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

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use seedwatch_ingest::{file_source, stdin_source, ChunkLimits, DecodeStats, Decoder, Fingerprinter, LineChunk, Redactor, Source};
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

/// Read every input, produce what it holds, return once Kafka acknowledged all of it.
pub fn collect(opts: &CollectOptions) -> Result<CollectReport> {
    let started = Instant::now();
    let redactor = Redactor::new(Fingerprinter::load_or_create(&opts.fingerprint_key)?)?;
    let mut decoder = Decoder::new(redactor.clone());
    let producer = Producer::new(&opts.kafka)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut report = CollectReport::default();
    let mut chunk = LineChunk::new();
    for input in &opts.inputs {
        let mut source: Box<dyn Source> =
            if input.as_os_str() == "-" { Box::new(stdin_source(ChunkLimits::default())) } else { Box::new(file_source(input, ChunkLimits::default())?) };
        while source.next_chunk(&mut chunk)? {
            let decoded = decoder.decode_chunk(&chunk, chrono::Utc::now().timestamp_millis())?;
            report.decode.merge(&decoded.stats);
            // Payloads borrow the chunk unless a credential had to be replaced.
            let mut payloads: Vec<(Topic, &str, std::borrow::Cow<'_, str>)> = Vec::with_capacity(chunk.lines.len());
            for events in &decoded.events {
                let b = &events.batch;
                let lines = b.column_by_name("line").and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or_else(|| anyhow!("decoded rows carry no line number"))?;
                let licenses = b.column_by_name("license").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| anyhow!("decoded rows carry no license"))?;
                for row in 0..b.num_rows() {
                    let number = lines.value(row) as u64;
                    let span = chunk.lines.binary_search_by_key(&number, |s| s.number).map(|i| &chunk.lines[i]).map_err(|_| anyhow!("line {number} is not in its chunk"))?;
                    let text = std::str::from_utf8(&chunk.data[span.start..span.end]).context("a decoded line is not UTF-8")?;
                    let payload = if redactor.might_contain_secret(text.as_bytes()) { std::borrow::Cow::Owned(redactor.redact(text)) } else { std::borrow::Cow::Borrowed(text) };
                    let license = if licenses.is_null(row) { "" } else { licenses.value(row) };
                    payloads.push((Topic::Events(events.family), license, payload));
                }
            }
            if let Some(dead) = &decoded.dead_letters {
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
            report.produced += runtime.block_on(producer.send_all(messages))?;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Create the topics (`seedwatch topics create`).
pub fn create_topics(kafka: &KafkaConfig, partitions: i32) -> Result<Vec<(String, bool)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(seedwatch_kafka::create_topics(kafka, partitions))?)
}
