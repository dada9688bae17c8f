//! Following a log file as it grows, across rotation, from a remembered position.
//!
//! A [`TailSource`] hands out complete lines only (a line still being written
//! is read again once its newline arrives) and reports the [`TailPosition`]
//! after the last line it handed out, which a collector saves once Kafka has
//! acknowledged those lines: restarted from it, nothing is lost or repeated.
//! Rotation is noticed when the file has nothing new:
//! - renamed away (logrotate's default): the path now names another file; the
//!   rest of the old file is read to its end, then the new file from its start;
//! - truncated in place (`copytruncate`): the file is shorter than the
//!   position; reading restarts at its beginning.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::source::{ChunkLimits, LineChunk, LineSpan, Source};
use crate::IngestError;
use seedwatch_schemas::fields::MAX_LINE_BYTES;

/// Where a [`TailSource`] is: which file (device and inode), the byte offset of
/// the next unread line, and the number of the last line read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TailPosition {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub inode: u64,
    /// Byte offset of the next unread line.
    pub offset: u64,
    /// Lines read before `offset` (the next line is `line + 1`).
    pub line: u64,
}

/// How a [`TailSource`] behaves at the end of the file.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Keep waiting for more lines (and for rotation) instead of ending.
    pub follow: bool,
    /// How often to look for new lines when following.
    pub poll: Duration,
    /// Set to end a follow (the lines handed out so far stay valid).
    pub stop: Arc<AtomicBool>,
    /// Chunk size.
    pub limits: ChunkLimits,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self { follow: false, poll: Duration::from_millis(200), stop: Arc::new(AtomicBool::new(false)), limits: ChunkLimits::default() }
    }
}

/// A file read line by line from a position, optionally followed as it grows and rotates.
#[derive(Debug)]
pub struct TailSource {
    path: PathBuf,
    name: Arc<str>,
    options: TailOptions,
    file: Option<File>,
    position: TailPosition,
    /// Inside an over-long line: bytes up to the next newline are skipped.
    skipping: bool,
    buf: Vec<u8>,
    bytes_read: u64,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl TailSource {
    /// Open `path`. With `resume`, reading continues where that position
    /// points when it names this same file and the file is not shorter than
    /// it; otherwise (rotated or truncated while nobody read it) from the start.
    pub fn open(path: &Path, resume: Option<TailPosition>, options: TailOptions) -> Result<Self, IngestError> {
        let open_err = |e: io::Error| IngestError::Open { path: path.to_path_buf(), error: e };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let (dev, inode) = identity(&meta);
        let position = match resume {
            Some(p) if (p.dev, p.inode) == (dev, inode) && p.offset <= meta.len() => p,
            Some(p) => {
                tracing::warn!(path = %path.display(), offset = p.offset, "the file was rotated or truncated since the checkpoint; reading it from the start");
                TailPosition { dev, inode, offset: 0, line: 0 }
            }
            None => TailPosition { dev, inode, offset: 0, line: 0 },
        };
        Ok(Self { path: path.to_path_buf(), name: Arc::from(path.display().to_string()), options, file: Some(file), position, skipping: false, buf: Vec::new(), bytes_read: 0 })
    }

    /// The position after the last chunk handed out.
    pub fn position(&self) -> TailPosition {
        self.position
    }

    fn read_err(&self, error: io::Error) -> IngestError {
        IngestError::Read { source_name: self.name.to_string(), error }
    }

    /// Read what follows the position (at most one chunk's bytes) into `buf`.
    fn read_more(&mut self) -> Result<(), IngestError> {
        self.buf.clear();
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        file.seek(SeekFrom::Start(self.position.offset)).map_err(|e| IngestError::Read { source_name: self.name.to_string(), error: e })?;
        let limit = self.options.limits.max_bytes.max(MAX_LINE_BYTES + 2) as u64;
        let mut reader = file.take(limit);
        reader.read_to_end(&mut self.buf).map_err(|e| IngestError::Read { source_name: self.name.to_string(), error: e })?;
        Ok(())
    }

    /// Move complete lines of `buf` into `chunk`; returns bytes consumed.
    fn take_lines(&mut self, chunk: &mut LineChunk, final_piece: bool) -> usize {
        let mut consumed = 0;
        while chunk.lines.len() < self.options.limits.max_lines && consumed < self.buf.len() {
            let rest = &self.buf[consumed..];
            let (len, advance) = match memchr::memchr(b'\n', rest) {
                Some(i) => (i, i + 1),
                // A line without its newline: taken only when nothing more can follow it,
                // or when it is already longer than any line may be.
                None if final_piece || rest.len() > MAX_LINE_BYTES => (rest.len(), rest.len()),
                None => break,
            };
            if self.skipping {
                // The tail of an over-long line whose head was already handed out.
                self.skipping = advance == len;
                consumed += advance;
                continue;
            }
            let mut kept = len.min(MAX_LINE_BYTES + 1);
            if len <= MAX_LINE_BYTES && kept > 0 && rest[kept - 1] == b'\r' {
                kept -= 1;
            }
            let start = chunk.data.len();
            chunk.data.extend_from_slice(&rest[..kept]);
            self.position.line += 1;
            chunk.lines.push(LineSpan { start, end: chunk.data.len(), number: self.position.line, original_len: if len <= MAX_LINE_BYTES { kept } else { len } });
            // An over-long line cut at the end of the buffer continues in the next read.
            self.skipping = advance == len && !final_piece;
            consumed += advance;
        }
        consumed
    }

    /// The path names another file now, or the file was truncated: switch or rewind.
    /// Returns `true` when something changed.
    fn check_rotation(&mut self, chunk: &mut LineChunk) -> Result<bool, IngestError> {
        let current = match self.file.as_ref() {
            Some(f) => Some(f.metadata().map_err(|e| self.read_err(e))?),
            None => None,
        };
        let at_path = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.read_err(e)),
        };
        if let Some(cur) = &current {
            if cur.len() < self.position.offset {
                tracing::warn!(path = %self.path.display(), "file truncated; reading it from the start");
                self.position.offset = 0;
                self.position.line = 0;
                return Ok(true);
            }
        }
        let Some(at_path) = at_path else { return Ok(false) };
        if current.as_ref().map(identity) == Some(identity(&at_path)) {
            return Ok(false);
        }
        // Renamed away: finish the old file (its last line may lack a newline), then switch.
        if self.file.is_some() {
            self.read_more()?;
            if !self.buf.is_empty() {
                let consumed = self.take_lines(chunk, true);
                self.position.offset += consumed as u64;
                self.bytes_read += consumed as u64;
                if consumed < self.buf.len() {
                    return Ok(true);
                }
            }
        }
        let file = File::open(&self.path).map_err(|e| self.read_err(e))?;
        let (dev, inode) = identity(&file.metadata().map_err(|e| self.read_err(e))?);
        tracing::info!(path = %self.path.display(), "file rotated; reading the new one");
        self.file = Some(file);
        self.position = TailPosition { dev, inode, offset: 0, line: 0 };
        Ok(true)
    }
}

impl Source for TailSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self, chunk: &mut LineChunk) -> Result<bool, IngestError> {
        chunk.clear();
        chunk.source = self.name.clone();
        loop {
            self.read_more()?;
            let consumed = self.take_lines(chunk, false);
            self.position.offset += consumed as u64;
            self.bytes_read += consumed as u64;
            if !chunk.lines.is_empty() {
                return Ok(true);
            }
            if self.check_rotation(chunk)? {
                if !chunk.lines.is_empty() {
                    return Ok(true);
                }
                continue;
            }
            if !self.options.follow {
                // The end of a file read once: a last line without newline still counts.
                let consumed = self.take_lines(chunk, true);
                self.position.offset += consumed as u64;
                self.bytes_read += consumed as u64;
                return Ok(!chunk.lines.is_empty());
            }
            if self.options.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            std::thread::sleep(self.options.poll);
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn size_hint(&self) -> Option<u64> {
        self.file.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(source: &mut TailSource) -> Vec<(u64, String)> {
        let mut chunk = LineChunk::new();
        let mut out = Vec::new();
        // A non-following source ends; a following one is asked once.
        if source.next_chunk(&mut chunk).expect("read") {
            out.extend(chunk.lines.iter().map(|s| (s.number, String::from_utf8_lossy(chunk.line(s)).into_owned())));
        }
        out
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(text.as_bytes())).expect("append");
    }

    fn following() -> TailOptions {
        TailOptions { follow: true, poll: Duration::from_millis(5), ..TailOptions::default() }
    }

    #[test]
    fn a_line_being_written_waits_for_its_newline_and_a_resume_repeats_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "one\ntwo\nthr");
        let mut tail = TailSource::open(&path, None, following()).expect("open");
        assert_eq!(lines(&mut tail), vec![(1, "one".into()), (2, "two".into())]);
        append(&path, "ee\n");
        assert_eq!(lines(&mut tail), vec![(3, "three".into())]);
        let saved = tail.position();
        append(&path, "four\n");
        // A restart from the saved position reads only what came after it.
        let mut again = TailSource::open(&path, Some(saved), TailOptions::default()).expect("reopen");
        assert_eq!(lines(&mut again), vec![(4, "four".into())]);
    }

    #[test]
    fn rotation_by_rename_finishes_the_old_file_then_reads_the_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "a\n");
        let mut tail = TailSource::open(&path, None, following()).expect("open");
        assert_eq!(lines(&mut tail), vec![(1, "a".into())]);
        append(&path, "b\nc-without-newline");
        std::fs::rename(&path, dir.path().join("app.log.1")).expect("rotate");
        append(&path, "new-1\n");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(lines(&mut tail));
        }
        assert_eq!(got, vec![(2, "b".into()), (3, "c-without-newline".into()), (1, "new-1".into())]);
    }

    #[test]
    fn truncation_in_place_restarts_at_the_beginning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "first line\nsecond line\n");
        let mut tail = TailSource::open(&path, None, following()).expect("open");
        assert_eq!(lines(&mut tail).len(), 2);
        std::fs::write(&path, "x\n").expect("truncate");
        assert_eq!(lines(&mut tail), vec![(1, "x".into())]);
        // A checkpoint beyond the end of a truncated file starts over too.
        let stale = TailPosition { offset: 1000, ..tail.position() };
        let mut again = TailSource::open(&path, Some(stale), TailOptions::default()).expect("reopen");
        assert_eq!(lines(&mut again), vec![(1, "x".into())]);
    }

    #[test]
    fn a_stopped_follow_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "");
        let options = following();
        options.stop.store(true, Ordering::Relaxed);
        let mut tail = TailSource::open(&path, None, options).expect("open");
        assert!(lines(&mut tail).is_empty());
    }
}
