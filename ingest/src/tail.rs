//! Following a log file as it grows, across rotation, from a remembered position.
//!
//! A [`TailSource`] hands out complete lines only (a line still being written
//! is read again once its newline arrives) and reports the [`TailPosition`]
//! after the last line it handed out, which a collector saves once Kafka has
//! acknowledged those lines: restarted from it, nothing is lost or repeated.
//! A position names its file twice: by device and inode, and by a fingerprint of
//! its first bytes (up to [`HEAD_BYTES`]), so rotation is recognised however it
//! happened and whether or not the collector was running:
//! - renamed away (logrotate's default): the path now names another file; the
//!   rest of the old file is read to its end, then the new file from its start.
//!   A collector started after the rotation finds the old file in the same
//!   directory by its inode and finishes it first;
//! - copied and truncated in place (`copytruncate`): the inode is the same but
//!   its first bytes are not (or it is shorter than the position), even when it
//!   has grown past the position again. The copy is found by the fingerprint and
//!   finished, then the file is read from its start.
//! When the old file is gone (deleted, or compressed right away), what it still held
//! cannot be read: that is said in a warning. Keep one rotation uncompressed
//! (`delaycompress`) so it never comes to that.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::IngestError;
use crate::source::{ChunkLimits, LineChunk, LineSpan, Source};
use seedwatch_schemas::fields::MAX_LINE_BYTES;

/// How many bytes at a file's start identify it. Log lines carry their time, so
/// a file's first line already tells it from any other.
pub const HEAD_BYTES: u64 = 1024;

/// Where a [`TailSource`] is: which file (device and inode, and a fingerprint of
/// its first bytes), the byte offset of the next unread line, and the number of
/// the last line read.
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
    /// Bytes at the file's start that `head_hash` covers: the first
    /// [`HEAD_BYTES`] read, fewer while the file is shorter; 0 when not known
    /// (a checkpoint written before fingerprints).
    #[serde(default)]
    pub head_len: u64,
    /// The first 8 bytes of the SHA-256 of those bytes.
    #[serde(default)]
    pub head_hash: u64,
}

impl TailPosition {
    fn start_of(dev: u64, inode: u64) -> Self {
        Self { dev, inode, offset: 0, line: 0, head_len: 0, head_hash: 0 }
    }
}

/// The fingerprint of `file`'s first `len` bytes; `None` when it is shorter.
fn head_hash(file: &File, len: u64) -> io::Result<Option<u64>> {
    let mut head = vec![0u8; len as usize];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let digest = Sha256::digest(&head);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Ok(Some(u64::from_be_bytes(first)))
}

/// Whether `file` still holds what `position` was read from: long enough, and the
/// same first bytes (when they are known).
fn holds(file: &File, position: &TailPosition) -> io::Result<bool> {
    if file.metadata()?.len() < position.offset {
        return Ok(false);
    }
    Ok(position.head_len == 0 || head_hash(file, position.head_len)? == Some(position.head_hash))
}

/// The file in `path`'s directory that `position` was read from, now under another
/// name: the one with its inode (renamed), else one with its first bytes (a copy:
/// `copytruncate`). Never the file at `path` itself.
fn find_rotated(path: &Path, position: &TailPosition) -> io::Result<Option<(PathBuf, File)>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let live = std::fs::metadata(path).ok().map(|m| identity(&m));
    let mut by_head = None;
    for entry in std::fs::read_dir(dir)? {
        let candidate = entry?.path();
        let Ok(meta) = std::fs::metadata(&candidate) else { continue };
        if !meta.is_file() || Some(identity(&meta)) == live || meta.len() < position.offset {
            continue;
        }
        let renamed = identity(&meta) == (position.dev, position.inode);
        if !renamed && (position.head_len == 0 || by_head.is_some()) {
            continue;
        }
        let Ok(file) = File::open(&candidate) else { continue };
        // An inode is reused once its file is deleted: the first bytes must match too.
        if !holds(&file, position)? {
            continue;
        }
        if renamed {
            return Ok(Some((candidate, file)));
        }
        by_head = Some((candidate, file));
    }
    Ok(by_head)
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
    /// points: in this file when it still holds what was read; in the file it
    /// was rotated to (renamed or copied) while nobody read it, which is
    /// finished before this one is read from its start.
    pub fn open(path: &Path, resume: Option<TailPosition>, options: TailOptions) -> Result<Self, IngestError> {
        let open_err = |e: io::Error| IngestError::Open { path: path.to_path_buf(), error: e };
        let mut file = File::open(path).map_err(open_err)?;
        let (dev, inode) = identity(&file.metadata().map_err(open_err)?);
        let position = match resume {
            None => TailPosition::start_of(dev, inode),
            Some(p) if (p.dev, p.inode) == (dev, inode) && holds(&file, &p).map_err(open_err)? => p,
            Some(p) => match find_rotated(path, &p).map_err(open_err)? {
                Some((rotated, old)) => {
                    tracing::info!(path = %path.display(), rotated = %rotated.display(), offset = p.offset, "the file was rotated since the checkpoint; finishing the old one first");
                    file = old;
                    p
                }
                None => {
                    tracing::warn!(path = %path.display(), offset = p.offset, "the file was rotated or truncated since the checkpoint and the old one is not in its directory; lines it held after the checkpoint cannot be read; reading the file from the start");
                    TailPosition::start_of(dev, inode)
                }
            },
        };
        Ok(Self { path: path.to_path_buf(), name: Arc::from(path.display().to_string()), options, file: Some(file), position, skipping: false, buf: Vec::new(), bytes_read: 0 })
    }

    /// Move past `consumed` bytes handed out, and extend the fingerprint over them
    /// while it covers fewer than [`HEAD_BYTES`].
    fn advance(&mut self, consumed: usize) -> Result<(), IngestError> {
        self.position.offset += consumed as u64;
        self.bytes_read += consumed as u64;
        let p = &mut self.position;
        if p.head_len < HEAD_BYTES && p.offset > p.head_len {
            if let Some(file) = &self.file {
                let len = p.offset.min(HEAD_BYTES);
                if let Some(hash) = head_hash(file, len).map_err(|e| IngestError::Read { source_name: self.name.to_string(), error: e })? {
                    (p.head_len, p.head_hash) = (len, hash);
                }
            }
        }
        Ok(())
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

    /// The path names another file now: finish the old one, then switch. Returns `true` when
    /// something changed. (Truncation is checked before every read, in `next_chunk`.)
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
        let Some(at_path) = at_path else { return Ok(false) };
        if current.as_ref().map(identity) == Some(identity(&at_path)) {
            return Ok(false);
        }
        // Renamed away: finish the old file (its last line may lack a newline), then switch.
        if self.file.is_some() {
            self.read_more()?;
            if !self.buf.is_empty() {
                let consumed = self.take_lines(chunk, true);
                self.advance(consumed)?;
                if consumed < self.buf.len() {
                    return Ok(true);
                }
            }
        }
        let file = File::open(&self.path).map_err(|e| self.read_err(e))?;
        let (dev, inode) = identity(&file.metadata().map_err(|e| self.read_err(e))?);
        tracing::info!(path = %self.path.display(), "file rotated; reading the new one");
        self.file = Some(file);
        self.position = TailPosition::start_of(dev, inode);
        Ok(true)
    }

    /// The file read no longer holds what was read from it (copied away and truncated,
    /// perhaps grown again since): finish the copy if it is in the directory, then read
    /// the file from its start. Returns `true` when that happened.
    fn copied_and_truncated(&mut self) -> Result<bool, IngestError> {
        let Some(file) = &self.file else { return Ok(false) };
        if holds(file, &self.position).map_err(|e| self.read_err(e))? {
            return Ok(false);
        }
        match find_rotated(&self.path, &self.position).map_err(|e| self.read_err(e))? {
            // Read from the copy where the position is; the rename check then sees the
            // path name another file, finishes the copy and starts the file over.
            Some((copy, old)) => {
                tracing::info!(path = %self.path.display(), copy = %copy.display(), "file copied and truncated; finishing the copy first");
                self.file = Some(old);
            }
            None => {
                tracing::warn!(path = %self.path.display(), offset = self.position.offset, "file truncated and no copy of it is in its directory; lines written after the position and before the truncation cannot be read; reading it from the start");
                let (dev, inode) = (self.position.dev, self.position.inode);
                self.position = TailPosition::start_of(dev, inode);
            }
        }
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
            // Checked before every read, not only when nothing is new: a file truncated
            // and regrown past the position while Kafka held us up would be read mid-line.
            self.copied_and_truncated()?;
            self.read_more()?;
            let consumed = self.take_lines(chunk, false);
            self.advance(consumed)?;
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
                self.advance(consumed)?;
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

    /// Following, for at most 20 s: a test waiting for lines that never come fails
    /// instead of hanging.
    fn following() -> TailOptions {
        let stop = Arc::new(AtomicBool::new(false));
        let later = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(20));
            later.store(true, Ordering::Relaxed);
        });
        TailOptions { follow: true, poll: Duration::from_millis(5), stop, ..TailOptions::default() }
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

    /// Everything a source hands out until it has nothing more.
    fn drain(source: &mut TailSource) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        loop {
            let got = lines(source);
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    /// A following source asked until it handed out `n` lines (it waits for more after).
    fn lines_until(source: &mut TailSource, n: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let got = lines(source);
            if got.is_empty() {
                break;
            }
            out.extend(got);
        }
        out
    }

    fn numbered(from: u64, texts: &[&str]) -> Vec<(u64, String)> {
        texts.iter().zip(from..).map(|(t, n)| (n, (*t).to_string())).collect()
    }

    #[test]
    fn a_file_renamed_while_nobody_read_it_is_found_by_its_inode_and_finished_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "2026-11-01 a\n");
        let mut tail = TailSource::open(&path, None, TailOptions::default()).expect("open");
        assert_eq!(drain(&mut tail), numbered(1, &["2026-11-01 a"]));
        let saved = tail.position();
        // Stopped: the file grows, is rotated, and the new one grows past the old position.
        append(&path, "2026-11-01 b\n");
        std::fs::rename(&path, dir.path().join("app.log.1")).expect("rotate");
        append(&path, "2026-11-02 new-1\n2026-11-02 new-2\n");
        let mut again = TailSource::open(&path, Some(saved), TailOptions::default()).expect("reopen");
        let mut got = drain(&mut again);
        // Not following: the old file is finished; the new one is read on the next open.
        if !got.iter().any(|(_, t)| t.contains("new-1")) {
            let saved = again.position();
            got.extend(drain(&mut TailSource::open(&path, Some(saved), TailOptions::default()).expect("reopen")));
        }
        assert_eq!(got, [numbered(2, &["2026-11-01 b"]), numbered(1, &["2026-11-02 new-1", "2026-11-02 new-2"])].concat());
    }

    #[test]
    fn a_file_copied_and_truncated_while_nobody_read_it_is_finished_from_the_copy_then_read_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "2026-11-01 one\n2026-11-01 two\n");
        let mut tail = TailSource::open(&path, None, following()).expect("open");
        assert_eq!(lines(&mut tail).len(), 2);
        let saved = tail.position();
        append(&path, "2026-11-01 three\n");
        std::fs::copy(&path, dir.path().join("app.log.1")).expect("copy");
        // Truncated and grown past the saved offset again: its size alone says nothing.
        std::fs::write(&path, "2026-11-02 fresh-1 with a longer line\n2026-11-02 fresh-2\n").expect("truncate");
        let mut again = TailSource::open(&path, Some(saved), following()).expect("reopen");
        let got = lines_until(&mut again, 3);
        assert_eq!(got, [numbered(3, &["2026-11-01 three"]), numbered(1, &["2026-11-02 fresh-1 with a longer line", "2026-11-02 fresh-2"])].concat());
    }

    #[test]
    fn a_file_copied_truncated_and_regrown_between_two_reads_is_not_read_mid_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "2026-11-01 one\n");
        let mut tail = TailSource::open(&path, None, following()).expect("open");
        assert_eq!(lines(&mut tail).len(), 1);
        // While the collector waits on Kafka: a line, copytruncate, then more than before.
        append(&path, "2026-11-01 two\n");
        std::fs::copy(&path, dir.path().join("app.log.1")).expect("copy");
        std::fs::write(&path, "2026-11-02 after-1\n2026-11-02 after-2\n2026-11-02 after-3\n").expect("truncate");
        let got = lines_until(&mut tail, 4);
        assert_eq!(got, [numbered(2, &["2026-11-01 two"]), numbered(1, &["2026-11-02 after-1", "2026-11-02 after-2", "2026-11-02 after-3"])].concat());
        // Without a copy in the directory, the file is still read from its start.
        std::fs::remove_file(dir.path().join("app.log.1")).expect("remove");
        std::fs::write(&path, "2026-11-03 other-1 which is longer than all of the above together, surely\n").expect("truncate");
        assert_eq!(lines(&mut tail), numbered(1, &["2026-11-03 other-1 which is longer than all of the above together, surely"]));
    }

    #[test]
    fn the_fingerprint_grows_with_the_file_up_to_its_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, "short\n");
        let mut tail = TailSource::open(&path, None, following()).expect("open");
        lines(&mut tail);
        assert_eq!(tail.position().head_len, 6);
        append(&path, &format!("{}\n", "x".repeat(2000)));
        lines(&mut tail);
        assert_eq!(tail.position().head_len, HEAD_BYTES);
        let file = File::open(&path).expect("open");
        assert_eq!(head_hash(&file, HEAD_BYTES).expect("hash"), Some(tail.position().head_hash));
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
