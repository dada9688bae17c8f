//! Inputs merged in event time.
//!
//! Each input (a file, stdin) is its own stream with a frontier: the newest
//! event time read from it. The reader reads next from the input furthest
//! behind, so inputs exported one per log family, or cut at any point and given
//! in any order, advance together in event time, with about one chunk per input
//! in memory. Rows up to the lowest frontier of the inputs still open (the
//! *bound*) can be released: no live input will bring older ones, unless it is
//! itself out of order, which the engine's per-license lateness judges.

use std::time::Instant;

use seedwatch_ingest::{DecodedChunk, Decoder, LineChunk, Source};

use crate::RuntimeError;

/// One input stream.
#[derive(Debug)]
pub struct Input {
    /// Where lines come from.
    pub source: Box<dyn Source>,
    /// `file` or `stdin`: a bounded metric label, never the path.
    pub kind: &'static str,
}

/// One chunk read and decoded, and how far event time has come across inputs.
#[derive(Debug)]
pub struct Decoded {
    /// The chunk; `None` when an input ended (which may raise the bound).
    pub chunk: Option<DecodedChunk>,
    /// The input's kind.
    pub source_kind: &'static str,
    /// Rows at or before this time may be released: every input still open has been
    /// read at least this far (`i64::MAX` once every input ended).
    pub bound: i64,
    /// Bytes read so far over all inputs.
    pub bytes_done: u64,
    /// Seconds spent reading and decoding the chunk.
    pub seconds: f64,
}

/// Reads the inputs in event-time order of their frontiers.
#[derive(Debug)]
pub struct Reader {
    inputs: Vec<Input>,
    /// Newest event time read per input; `i64::MIN` before its first event.
    frontiers: Vec<i64>,
    ended: Vec<bool>,
    decoder: Decoder,
}

impl Reader {
    /// A reader over `inputs`, decoding with `decoder`.
    pub fn new(inputs: Vec<Input>, decoder: Decoder) -> Self {
        let n = inputs.len();
        Self { inputs, frontiers: vec![i64::MIN; n], ended: vec![false; n], decoder }
    }

    /// Total bytes to read, when every input knows its size.
    pub fn total_bytes(&self) -> Option<u64> {
        self.inputs.iter().map(|i| i.source.size_hint()).sum()
    }

    /// The input furthest behind in event time (the first such), if any is still open.
    fn furthest_behind(&self) -> Option<usize> {
        (0..self.inputs.len()).filter(|i| !self.ended[*i]).min_by_key(|i| self.frontiers[*i])
    }

    /// The release bound: the lowest frontier of the inputs still open.
    fn bound(&self) -> i64 {
        (0..self.inputs.len()).filter(|i| !self.ended[*i]).map(|i| self.frontiers[i]).min().unwrap_or(i64::MAX)
    }

    /// Read and decode the next chunk of the input furthest behind. `None` once
    /// every input has ended.
    pub fn next(&mut self, chunk: &mut LineChunk) -> Result<Option<Decoded>, RuntimeError> {
        let Some(i) = self.furthest_behind() else { return Ok(None) };
        let started = Instant::now();
        let input = &mut self.inputs[i];
        let kind = input.kind;
        let decoded = if input.source.next_chunk(chunk)? {
            let received_at = chrono::Utc::now().timestamp_millis();
            let decoded = self.decoder.decode_chunk(chunk, received_at)?;
            if let Some(newest) = decoded.max_event_time() {
                self.frontiers[i] = self.frontiers[i].max(newest);
            }
            Some(decoded)
        } else {
            self.ended[i] = true;
            None
        };
        let bytes_done = self.inputs.iter().map(|i| i.source.bytes_read()).sum();
        Ok(Some(Decoded { chunk: decoded, source_kind: kind, bound: self.bound(), bytes_done, seconds: started.elapsed().as_secs_f64() }))
    }
}
