//! Inputs merged in event time.
//!
//! Each input (a file, stdin) is its own stream with a frontier: the newest
//! event time read from it. The reader reads next from the input furthest
//! behind, so inputs exported one per log family, or cut at any point and given
//! in any order, advance together in event time, with about one chunk per input
//! in memory. Rows up to the lowest frontier of the inputs still open (the
//! *bound*) can be released: no live input will bring older ones, unless it is
//! itself out of order, which the engine's per-license lateness judges.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use seedwatch_ingest::{DecodedChunk, Decoder, LineChunk};

use crate::source::{InputId, Polled, Rows, Scope, Source};
use crate::RuntimeError;

/// One input stream: yields decoded chunks (event batches and dead letters).
pub trait Input: Send + std::fmt::Debug {
    /// The next chunk; `None` once the input has ended.
    fn next_chunk(&mut self) -> Result<Option<DecodedChunk>, RuntimeError>;
    /// `file`, `stdin`, `archive`: a bounded metric label, never a path.
    fn kind(&self) -> &'static str;
    /// Bytes consumed so far, for progress.
    fn bytes_read(&self) -> u64 {
        0
    }
    /// Total bytes, when known, for progress.
    fn size_hint(&self) -> Option<u64> {
        None
    }
}

/// Threads that decode chunks, shared by the inputs of a run: one input's
/// chunks are decoded side by side (decode is most of `run`'s work) and handed
/// on in their order. A rayon pool: the work is whole chunks, so any thread
/// takes the next one.
#[derive(Debug, Clone)]
pub struct DecodePool {
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
}

impl DecodePool {
    /// A pool of `threads` decode threads (`None`: one per core).
    pub fn new(threads: Option<usize>) -> Result<Self, RuntimeError> {
        let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("seedwatch-decode-{i}"))
            // A panicking decode drops its answer; the input reports the lost thread.
            .panic_handler(|_| {})
            .build()
            .map_err(RuntimeError::DecodePool)?;
        Ok(Self { pool: Arc::new(pool), threads })
    }
}

/// A chunk coming back from a decode thread, with the buffers it borrowed.
struct Decoded {
    chunk: LineChunk,
    decoder: Decoder,
    result: Result<DecodedChunk, seedwatch_ingest::IngestError>,
}

/// Lines from a [`Source`] (a file, stdin), decoded, validated and redacted.
/// On a [`DecodePool`] the input reads ahead: one chunk per decode thread is
/// decoding while the driver works on the last (more only raised peak memory).
pub struct LineInput {
    source: Box<dyn seedwatch_ingest::Source>,
    /// Decodes on the reading thread, and is the model of the pool's decoders.
    decoder: Decoder,
    /// Pool decoders and chunk buffers not in use, kept for the next chunks.
    decoders: Vec<Decoder>,
    chunks: Vec<LineChunk>,
    pool: Option<DecodePool>,
    /// Chunks being decoded, oldest first.
    in_flight: VecDeque<mpsc::Receiver<Decoded>>,
    source_done: bool,
    kind: &'static str,
}

impl std::fmt::Debug for LineInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineInput").field("source", &self.source).field("in_flight", &self.in_flight.len()).finish_non_exhaustive()
    }
}

impl LineInput {
    /// Lines of `source` through `decoder` (which sets the clock-skew bound),
    /// decoded on the reading thread.
    pub fn new(source: Box<dyn seedwatch_ingest::Source>, decoder: Decoder, kind: &'static str) -> Self {
        Self { source, decoder, decoders: Vec::new(), chunks: Vec::new(), pool: None, in_flight: VecDeque::new(), source_done: false, kind }
    }

    /// Decode on `pool`, reading ahead one chunk per pool thread.
    pub fn decode_on(mut self, pool: &DecodePool) -> Self {
        self.pool = Some(pool.clone());
        self
    }

    /// Read the next chunk into a spare buffer; `None` at the end of the source.
    fn read(&mut self) -> Result<Option<(LineChunk, i64)>, RuntimeError> {
        let mut chunk = self.chunks.pop().unwrap_or_default();
        if !self.source.next_chunk(&mut chunk)? {
            self.source_done = true;
            return Ok(None);
        }
        // Arrival time: what the clock-skew bound and dead letters' `received_at` refer to.
        Ok(Some((chunk, chrono::Utc::now().timestamp_millis())))
    }
}

impl Input for LineInput {
    fn next_chunk(&mut self) -> Result<Option<DecodedChunk>, RuntimeError> {
        let Some(pool) = self.pool.clone() else {
            let Some((chunk, received_at)) = self.read()? else { return Ok(None) };
            let decoded = self.decoder.decode_chunk(&chunk, received_at);
            self.chunks.push(chunk);
            return Ok(Some(decoded?));
        };
        while self.in_flight.len() < pool.threads && !self.source_done {
            let Some((chunk, received_at)) = self.read()? else { break };
            let mut decoder = self.decoders.pop().unwrap_or_else(|| self.decoder.sibling());
            let (tx, rx) = mpsc::sync_channel(1);
            pool.pool.spawn(move || {
                let result = decoder.decode_chunk(&chunk, received_at);
                // The input may be gone (the run stopped); then nobody wants the chunk.
                let _ = tx.send(Decoded { chunk, decoder, result });
            });
            self.in_flight.push_back(rx);
        }
        let Some(oldest) = self.in_flight.pop_front() else { return Ok(None) };
        let decoded = oldest.recv().map_err(|_| RuntimeError::ThreadLost("decode"))?;
        self.chunks.push(decoded.chunk);
        self.decoders.push(decoded.decoder);
        Ok(Some(decoded.result?))
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn bytes_read(&self) -> u64 {
        self.source.bytes_read()
    }

    fn size_hint(&self) -> Option<u64> {
        self.source.size_hint()
    }
}

/// Reads the inputs in event-time order of their frontiers: the source of `run`,
/// `rules test` and backfill (every input in [`Scope::AllPartitions`]).
#[derive(Debug)]
pub struct Reader {
    inputs: Vec<Box<dyn Input>>,
    /// Newest event time read per input; `i64::MIN` before its first event.
    frontiers: Vec<i64>,
    ended: Vec<bool>,
    /// The bound to report after the rows just returned.
    pending_bound: Option<i64>,
}

impl Reader {
    /// A reader over `inputs`.
    pub fn new(inputs: Vec<Box<dyn Input>>) -> Self {
        let n = inputs.len();
        Self { inputs, frontiers: vec![i64::MIN; n], ended: vec![false; n], pending_bound: None }
    }

    /// The input furthest behind in event time (the first such), if any is still open.
    fn furthest_behind(&self) -> Option<usize> {
        (0..self.inputs.len()).filter(|i| !self.ended[*i]).min_by_key(|i| self.frontiers[*i])
    }

    /// The release bound: the lowest frontier of the inputs still open.
    fn bound(&self) -> i64 {
        (0..self.inputs.len()).filter(|i| !self.ended[*i]).map(|i| self.frontiers[i]).min().unwrap_or(i64::MAX)
    }
}

impl Source for Reader {
    /// Rows of the input furthest behind, then the bound they leave; `None` once
    /// every input has ended and the last bound (`i64::MAX`) was given.
    fn poll(&mut self) -> Result<Option<Polled>, RuntimeError> {
        if let Some(bound) = self.pending_bound.take() {
            return Ok(Some(Polled::Bound { scope: Scope::AllPartitions, bound }));
        }
        let Some(i) = self.furthest_behind() else { return Ok(None) };
        let started = Instant::now();
        let input = &mut self.inputs[i];
        let source_kind = input.kind();
        let Some(chunk) = input.next_chunk()? else {
            self.ended[i] = true;
            return Ok(Some(Polled::Bound { scope: Scope::AllPartitions, bound: self.bound() }));
        };
        if let Some(newest) = chunk.max_event_time() {
            self.frontiers[i] = self.frontiers[i].max(newest);
        }
        self.pending_bound = Some(self.bound());
        let bytes_done = self.inputs.iter().map(|i| i.bytes_read()).sum();
        let seconds = started.elapsed().as_secs_f64();
        Ok(Some(Polled::Rows(Rows { input: i as InputId, scope: Scope::AllPartitions, chunk, source_kind, resume_at: None, bytes_done, seconds })))
    }

    fn total_bytes(&self) -> Option<u64> {
        self.inputs.iter().map(|i| i.size_hint()).sum()
    }

    fn ends(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedwatch_ingest::{ChunkLimits, Fingerprinter, Redactor};

    fn input(lines: &[&str]) -> Box<dyn Input> {
        let text = lines.iter().map(|t| format!(r#"{{"time":"{t}","family":"sync","system":"metrc","state":"CA","license":"L1","integration":"flowhub","outcome":"success"}}"#)).collect::<Vec<_>>().join("\n");
        let limits = ChunkLimits { max_lines: 1, max_bytes: 1 << 20 };
        let source = seedwatch_ingest::source::LineReader::new("test", std::io::Cursor::new(text.into_bytes()), limits);
        let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"input-test-secret-0123").unwrap_or_else(|e| panic!("{e}"))));
        Box::new(LineInput::new(Box::new(source), decoder, "file"))
    }

    #[test]
    fn reads_the_input_furthest_behind_and_releases_up_to_the_slowest_open_one() {
        let late = input(&["2026-11-05T10:00:00Z", "2026-11-05T11:00:00Z", "2026-11-05T12:00:00Z"]);
        let early = input(&["2026-11-05T09:00:00Z", "2026-11-05T09:30:00Z"]);
        let mut reader = Reader::new(vec![late, early]);
        let ms = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp_millis());
        let mut bounds = Vec::new();
        let mut newest = None;
        while let Some(polled) = reader.poll().unwrap_or_else(|e| panic!("{e}")) {
            match polled {
                Polled::Rows(rows) => newest = rows.chunk.max_event_time(),
                Polled::Bound { bound, .. } => bounds.push((newest.take(), bound)),
                other => panic!("unexpected {other:?}"),
            }
        }
        let at = |t: &str| Some(ms(t));
        assert_eq!(
            bounds,
            vec![
                (at("2026-11-05T10:00:00Z"), i64::MIN),                  // the second input not read yet
                (at("2026-11-05T09:00:00Z"), ms("2026-11-05T09:00:00Z")), // then always the one behind
                (at("2026-11-05T09:30:00Z"), ms("2026-11-05T09:30:00Z")),
                (None, ms("2026-11-05T10:00:00Z")),                        // it ended: the other one bounds
                (at("2026-11-05T11:00:00Z"), ms("2026-11-05T11:00:00Z")),
                (at("2026-11-05T12:00:00Z"), ms("2026-11-05T12:00:00Z")),
                (None, i64::MAX),
            ]
        );
    }
}
