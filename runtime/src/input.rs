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

/// Lines from a [`Source`] (a file, stdin), decoded, validated and redacted.
#[derive(Debug)]
pub struct LineInput {
    source: Box<dyn Source>,
    decoder: Decoder,
    chunk: LineChunk,
    kind: &'static str,
}

impl LineInput {
    /// Lines of `source` through `decoder` (which sets the clock-skew bound).
    pub fn new(source: Box<dyn Source>, decoder: Decoder, kind: &'static str) -> Self {
        Self { source, decoder, chunk: LineChunk::new(), kind }
    }
}

impl Input for LineInput {
    fn next_chunk(&mut self) -> Result<Option<DecodedChunk>, RuntimeError> {
        if !self.source.next_chunk(&mut self.chunk)? {
            return Ok(None);
        }
        // Arrival time: what the clock-skew bound and dead letters' `received_at` refer to.
        let received_at = chrono::Utc::now().timestamp_millis();
        Ok(Some(self.decoder.decode_chunk(&self.chunk, received_at)?))
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
    inputs: Vec<Box<dyn Input>>,
    /// Newest event time read per input; `i64::MIN` before its first event.
    frontiers: Vec<i64>,
    ended: Vec<bool>,
}

impl Reader {
    /// A reader over `inputs`.
    pub fn new(inputs: Vec<Box<dyn Input>>) -> Self {
        let n = inputs.len();
        Self { inputs, frontiers: vec![i64::MIN; n], ended: vec![false; n] }
    }

    /// Total bytes to read, when every input knows its size.
    pub fn total_bytes(&self) -> Option<u64> {
        self.inputs.iter().map(|i| i.size_hint()).sum()
    }

    /// The input furthest behind in event time (the first such), if any is still open.
    fn furthest_behind(&self) -> Option<usize> {
        (0..self.inputs.len()).filter(|i| !self.ended[*i]).min_by_key(|i| self.frontiers[*i])
    }

    /// The release bound: the lowest frontier of the inputs still open.
    fn bound(&self) -> i64 {
        (0..self.inputs.len()).filter(|i| !self.ended[*i]).map(|i| self.frontiers[i]).min().unwrap_or(i64::MAX)
    }

    /// Read the next chunk of the input furthest behind. `None` once every input has ended.
    pub fn next(&mut self) -> Result<Option<Decoded>, RuntimeError> {
        let Some(i) = self.furthest_behind() else { return Ok(None) };
        let started = Instant::now();
        let input = &mut self.inputs[i];
        let kind = input.kind();
        let chunk = input.next_chunk()?;
        match &chunk {
            Some(decoded) => {
                if let Some(newest) = decoded.max_event_time() {
                    self.frontiers[i] = self.frontiers[i].max(newest);
                }
            }
            None => self.ended[i] = true,
        }
        let bytes_done = self.inputs.iter().map(|i| i.bytes_read()).sum();
        Ok(Some(Decoded { chunk, source_kind: kind, bound: self.bound(), bytes_done, seconds: started.elapsed().as_secs_f64() }))
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
        let decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"input-test-secret-0123").unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}")));
        Box::new(LineInput::new(Box::new(source), decoder, "file"))
    }

    #[test]
    fn reads_the_input_furthest_behind_and_releases_up_to_the_slowest_open_one() {
        let late = input(&["2026-11-05T10:00:00Z", "2026-11-05T11:00:00Z", "2026-11-05T12:00:00Z"]);
        let early = input(&["2026-11-05T09:00:00Z", "2026-11-05T09:30:00Z"]);
        let mut reader = Reader::new(vec![late, early]);
        let ms = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp_millis());
        let mut bounds = Vec::new();
        while let Some(d) = reader.next().unwrap_or_else(|e| panic!("{e}")) {
            bounds.push((d.chunk.as_ref().and_then(|c| c.max_event_time()), d.bound));
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
