//! Sources: where lines come from. A source fills [`LineChunk`]s; the decoder
//! turns each chunk into Arrow batches. Files and stdin live here; Kafka and
//! HTTP intake plug in behind the same trait.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seedwatch_schemas::fields::MAX_LINE_BYTES;

use crate::IngestError;

/// One line inside a [`LineChunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSpan {
    /// Byte range of the kept text inside [`LineChunk::data`].
    pub start: usize,
    /// End of the kept text (exclusive).
    pub end: usize,
    /// 1-based line number in the source.
    pub number: u64,
    /// Length of the line as read, which is larger than `end - start` when the
    /// line was over [`MAX_LINE_BYTES`] and only its head was kept.
    pub original_len: usize,
}

/// A run of lines from one source, in one reusable buffer.
#[derive(Debug, Clone)]
pub struct LineChunk {
    /// Name of the source (a path, `stdin`, a topic).
    pub source: Arc<str>,
    /// The lines' bytes, back to back (without line terminators).
    pub data: Vec<u8>,
    /// Where each line is.
    pub lines: Vec<LineSpan>,
}

impl LineChunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Self { source: Arc::from(""), data: Vec::new(), lines: Vec::new() }
    }

    /// Forget the lines, keep the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.lines.clear();
    }

    /// The kept bytes of a line.
    pub fn line(&self, span: &LineSpan) -> &[u8] {
        &self.data[span.start..span.end]
    }
}

impl Default for LineChunk {
    fn default() -> Self {
        Self::new()
    }
}

/// Something that yields lines in chunks.
pub trait Source: Send + std::fmt::Debug {
    /// Name used in dead letters, provenance columns and logs.
    fn name(&self) -> &str;

    /// Clear `chunk` and fill it with the next lines. Returns `false` once the
    /// source is exhausted and the chunk is empty.
    fn next_chunk(&mut self, chunk: &mut LineChunk) -> Result<bool, IngestError>;

    /// Bytes consumed so far, for progress reports.
    fn bytes_read(&self) -> u64;

    /// Total bytes, when known (files), for progress reports.
    fn size_hint(&self) -> Option<u64> {
        None
    }
}

/// How many lines and bytes make a chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Most lines per chunk.
    pub max_lines: usize,
    /// Chunk is closed once its buffer holds this many bytes.
    pub max_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self { max_lines: 32 * 1024, max_bytes: 16 * 1024 * 1024 }
    }
}

/// Splits any reader into lines, keeping at most [`MAX_LINE_BYTES`] + 1 bytes
/// of a line so that a runaway line cannot exhaust memory.
#[derive(Debug)]
pub struct LineReader<R> {
    name: Arc<str>,
    reader: R,
    line_number: u64,
    bytes_read: u64,
    size_hint: Option<u64>,
    limits: ChunkLimits,
}

impl<R: BufRead + Send + std::fmt::Debug> LineReader<R> {
    /// A line reader named `name` over `reader`.
    pub fn new(name: impl Into<Arc<str>>, reader: R, limits: ChunkLimits) -> Self {
        Self { name: name.into(), reader, line_number: 0, bytes_read: 0, size_hint: None, limits }
    }

    /// Read one line into `data`; `None` at end of input.
    fn read_line(&mut self, data: &mut Vec<u8>) -> io::Result<Option<LineSpan>> {
        let start = data.len();
        let cap = MAX_LINE_BYTES + 1;
        let mut original_len = 0usize;
        let mut saw_any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if !saw_any {
                    return Ok(None);
                }
                break;
            }
            saw_any = true;
            let (take, consumed, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i, i + 1, true),
                None => (buf.len(), buf.len(), false),
            };
            let room = cap.saturating_sub(original_len);
            data.extend_from_slice(&buf[..take.min(room)]);
            original_len += take;
            self.reader.consume(consumed);
            self.bytes_read += consumed as u64;
            if done {
                break;
            }
        }
        let mut end = data.len();
        if original_len <= MAX_LINE_BYTES && end > start && data[end - 1] == b'\r' {
            end -= 1;
            original_len -= 1;
            data.truncate(end);
        }
        self.line_number += 1;
        Ok(Some(LineSpan { start, end, number: self.line_number, original_len }))
    }
}

impl<R: BufRead + Send + std::fmt::Debug> Source for LineReader<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self, chunk: &mut LineChunk) -> Result<bool, IngestError> {
        chunk.clear();
        chunk.source = self.name.clone();
        while chunk.lines.len() < self.limits.max_lines && chunk.data.len() < self.limits.max_bytes {
            match self.read_line(&mut chunk.data) {
                Ok(Some(span)) => chunk.lines.push(span),
                Ok(None) => break,
                Err(e) => return Err(IngestError::Read { source_name: self.name.to_string(), error: e }),
            }
        }
        Ok(!chunk.lines.is_empty())
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn size_hint(&self) -> Option<u64> {
        self.size_hint
    }
}

/// A file of NDJSON lines.
pub type FileSource = LineReader<BufReader<File>>;

/// Open `path` as a source.
pub fn file_source(path: &Path, limits: ChunkLimits) -> Result<FileSource, IngestError> {
    let open_err = |e: io::Error| IngestError::Open { path: PathBuf::from(path), error: e };
    let file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let mut source = LineReader::new(path.display().to_string(), BufReader::with_capacity(1 << 20, file), limits);
    source.size_hint = Some(size);
    Ok(source)
}

/// Standard input as a source.
pub fn stdin_source(limits: ChunkLimits) -> LineReader<BufReader<io::Stdin>> {
    LineReader::new("stdin", BufReader::with_capacity(1 << 20, io::stdin()), limits)
}

/// Any reader as a source (tests, pipes).
pub fn reader_source<R: Read + Send + std::fmt::Debug>(name: &str, reader: R) -> LineReader<BufReader<R>> {
    LineReader::new(name, BufReader::new(reader), ChunkLimits::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8], limits: ChunkLimits) -> Vec<(u64, Vec<u8>, usize)> {
        let mut src = LineReader::new("t", BufReader::with_capacity(7, input), limits);
        let mut chunk = LineChunk::new();
        let mut out = Vec::new();
        while src.next_chunk(&mut chunk).unwrap_or(false) {
            for span in &chunk.lines {
                out.push((span.number, chunk.line(span).to_vec(), span.original_len));
            }
        }
        out
    }

    #[test]
    fn splits_lines_across_small_buffers_and_chunks() {
        let limits = ChunkLimits { max_lines: 2, max_bytes: 1 << 20 };
        let got = lines_of(b"one\r\ntwo\n\nthree-is-longer\nlast-without-newline", limits);
        let texts: Vec<_> = got.iter().map(|(n, t, _)| (*n, String::from_utf8_lossy(t).into_owned())).collect();
        assert_eq!(
            texts,
            vec![
                (1, "one".into()),
                (2, "two".into()),
                (3, String::new()),
                (4, "three-is-longer".into()),
                (5, "last-without-newline".into())
            ]
        );
    }

    #[test]
    fn overlong_line_keeps_only_its_head_but_counts_its_length() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nnext\n");
        let got = lines_of(&input, ChunkLimits::default());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), MAX_LINE_BYTES + 1);
        assert_eq!(got[0].2, MAX_LINE_BYTES + 10);
        assert_eq!(got[1].1, b"next");
    }
}
