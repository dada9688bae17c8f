//! The manifest: a hash-chained, signed record of every change to the archive's files.
//!
//! Each commit that puts files into place or takes them away (a write, a prune, a
//! compaction) first appends an entry naming them, with the SHA-256, size, row count and
//! time range of each. Entries live beside the tables, one file each:
//!
//! ```text
//! <root>/_manifest/00000000000000000001.entry
//! ```
//!
//! An entry file is two lines: the entry as one line of JSON, and the hex Ed25519 signature
//! of exactly those bytes. Each entry holds the SHA-256 of the whole previous entry file
//! (`prev`), so rewriting, reordering or removing an entry breaks the chain at the next one;
//! removing the newest entries is caught by comparing with a head an auditor kept
//! (`seedwatch archive head`). The signing key is kept outside the archive (as CloudTrail
//! keeps its digest key), so whoever can write the archive cannot write a valid entry.
//! Both lines are plain enough to check with `openssl pkeyutl -verify` and `sha256sum`.
//!
//! Entries are appended with a create that fails if the name exists (a hard link on local
//! disk, a conditional put on object storage), so several writers on one archive each get
//! their own sequence number: the loser reads the winner's entry and chains after it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::ArchiveRoot;
use crate::{io_err, ArchiveError};

/// The manifest's directory under the archive root.
pub const MANIFEST_DIR: &str = "_manifest";

/// What a manifest entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// New files from a writer's commit.
    Write,
    /// Files that were in the archive when its manifest began (written by a seedwatch
    /// without one): from here on they are checked like any other.
    Adopt,
    /// Whole days removed past their retention.
    Prune,
    /// Small files of a day replaced by large ones holding the same rows.
    Compact,
    /// A detector took over Kafka partitions (its `lease`): a writer whose own claim to any
    /// of them is older can no longer commit (see [`ManifestLog::claim`]).
    Claim,
}

/// Kafka partitions a detector owns: what a `claim` entry takes over, and what a write made
/// under that claim carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The consumer group: claims in other groups never fence each other.
    pub group: String,
    /// Partition numbers (partition `p` of every family topic).
    pub partitions: Vec<u32>,
    /// In a write: the sequence number of the claim entry it was made under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<u64>,
}

impl Lease {
    /// The first partition both leases hold in the same group.
    fn overlap(&self, other: &Lease) -> Option<u32> {
        if self.group != other.group {
            return None;
        }
        self.partitions.iter().copied().find(|p| other.partitions.contains(p))
    }
}

/// One data file as an entry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Path under the archive root, `/`-separated (`login/date=2026-09-01/part-….parquet`).
    pub path: String,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Oldest and newest value of the table's time column (ms since the epoch), if it has rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_time: Option<i64>,
    /// See `min_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time: Option<i64>,
}

/// One manifest entry (the first line of its file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the chain, from 1; also the file's name.
    pub seq: u64,
    /// Hex SHA-256 of the previous entry's whole file (empty for the first).
    pub prev: String,
    /// When the entry was written (ms since the epoch).
    pub at: i64,
    /// The writer that appended it (its run id).
    pub writer: String,
    /// What happened.
    pub action: Action,
    /// Which key signed it: the first 16 hex digits of the SHA-256 of the public key.
    pub key_id: String,
    /// Files put into place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<FileRecord>,
    /// Files taken away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<FileRecord>,
    /// The partitions a `claim` takes over, or those a write was made under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// The Ed25519 key that signs entries. Kept outside the archive.
#[derive(Debug)]
pub struct ManifestSigner {
    key: SigningKey,
    key_id: String,
}

fn key_err(path: &Path, message: impl Into<String>) -> ArchiveError {
    ArchiveError::Key { path: path.to_path_buf(), message: message.into() }
}

/// The short id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl ManifestSigner {
    /// The key in `path` (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it).
    pub fn load(path: &Path) -> Result<Self, ArchiveError> {
        let pem = fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        check_private(path)?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| key_err(path, format!("not an Ed25519 private key in PKCS#8 PEM: {e}")))?;
        Ok(Self::from_key(key))
    }

    /// The key in `path`, or a new one written there (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, ArchiveError> {
        if path.exists() {
            return Self::load(path);
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| key_err(path, e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| key_err(path, e.to_string()))?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| key_err(path, e.to_string()))?;
        }
        // Written aside and linked into place: two processes starting at once both end up
        // with the key that won, never with a half-written file.
        let tmp = path.with_extension(format!("tmp-{}", hex::encode(&seed[..4])));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| key_err(&tmp, e.to_string()))?;
        file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| key_err(&tmp, e.to_string()))?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new archive signing key; keep it outside the archive and give its public key to your auditor (seedwatch archive public-key)");
                Ok(Self::from_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(key_err(path, e.to_string())),
        }
    }

    fn from_key(key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// The public half, to check entries with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as SPKI PEM (`openssl pkey -pubin` reads it).
    pub fn public_key_pem(&self) -> Result<String, ArchiveError> {
        public_key_pem(&self.verifying_key())
    }
}

/// `key` as SPKI PEM.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, ArchiveError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|e| ArchiveError::Query(format!("encoding the public key: {e}")))
}

/// A public key from `path`: SPKI PEM, or a private key's PEM (its public half).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, ArchiveError> {
    let pem = fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
    if let Ok(key) = VerifyingKey::from_public_key_pem(&pem) {
        return Ok(key);
    }
    SigningKey::from_pkcs8_pem(&pem)
        .map(|k| k.verifying_key())
        .map_err(|_| key_err(path, "neither an Ed25519 public key (SPKI PEM) nor a private key (PKCS#8 PEM)"))
}

/// A private key readable by others is refused: whoever reads it can sign entries.
fn check_private(path: &Path) -> Result<(), ArchiveError> {
    match seedwatch_schemas::secret_file::exposure(path).map_err(|e| key_err(path, e.to_string()))? {
        Some(why) => Err(key_err(path, format!("{why} the signing key; chmod 600 it"))),
        None => Ok(()),
    }
}

/// Hex SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> Result<(String, u64), ArchiveError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// The name of entry `seq`'s file.
fn entry_name(seq: u64) -> String {
    format!("{seq:020}.entry")
}

/// The entry files of the manifest under `root` (paths under the root), by the sequence
/// number in their names (files whose names are not a number are returned in `others`).
fn entry_files(root: &ArchiveRoot) -> Result<(BTreeMap<u64, String>, Vec<String>), ArchiveError> {
    let (mut entries, mut others) = (BTreeMap::new(), Vec::new());
    for (path, _) in root.list(MANIFEST_DIR)? {
        let name = path.rsplit('/').next().unwrap_or_default();
        if name.starts_with(".tmp-") {
            continue; // an append in progress (or abandoned): not part of the chain
        }
        match name.strip_suffix(".entry").and_then(|s| s.parse::<u64>().ok()) {
            Some(seq) => {
                entries.insert(seq, path);
            }
            None => others.push(path),
        }
    }
    Ok((entries, others))
}

/// An entry file split into the entry's bytes and its signature.
fn split_entry(bytes: &[u8]) -> Result<(&[u8], Signature), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.split_terminator('\n');
    let (Some(body), Some(signature), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err("not two lines (entry, signature)".into());
    };
    let raw = hex::decode(signature).map_err(|_| "the signature is not hex".to_string())?;
    let signature = Signature::from_slice(&raw).map_err(|_| "the signature is not 64 bytes".to_string())?;
    Ok((body.as_bytes(), signature))
}

/// Appends entries. One per writer.
///
/// A detector that owns Kafka partitions first appends a `claim` entry for them and then
/// writes under it. Entries are numbered by a create-if-absent, so every writer sees every
/// entry between its own: on the way to its next number it reads each one it does not know,
/// and a newer claim of one of its partitions (a rebalance it has not heard of yet, or an
/// eviction while it was stalled) fences it: the write is refused and stays refused until it
/// claims again. That is the generation fence of a Kafka transaction, kept in the manifest
/// because the manifest entry, not any one table's Delta commit, is where a commit that
/// spans tables is decided.
#[derive(Debug)]
pub struct ManifestLog {
    root: ArchiveRoot,
    signer: std::sync::Arc<ManifestSigner>,
    writer: String,
    /// The newest entry known: its sequence number and the SHA-256 of its file.
    head: Option<(u64, [u8; 32])>,
    /// The partitions this writer holds, with the number of its claim.
    lease: Option<Lease>,
    /// A newer claim took one of them: (partition, its writer, its number).
    fenced: Option<(u32, String, u64)>,
}

impl ManifestLog {
    /// The manifest of the archive at `root`, appended to as `writer`.
    pub fn open(root: &ArchiveRoot, signer: std::sync::Arc<ManifestSigner>, writer: &str) -> Result<Self, ArchiveError> {
        let (entries, _) = entry_files(root)?;
        let head = match entries.last_key_value() {
            Some((seq, path)) => Some((*seq, Sha256::digest(root.read(path)?).into())),
            None => None,
        };
        Ok(Self { root: root.clone(), signer, writer: writer.to_string(), head, lease: None, fenced: None })
    }

    /// Whether the manifest has no entry yet.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Take over `partitions` of consumer `group` (what a new assignment gives this writer);
    /// returns the claim's sequence number. Any other writer holding one of them under an
    /// older claim is fenced from then on.
    pub fn claim(&mut self, group: &str, partitions: &[u32]) -> Result<u64, ArchiveError> {
        let mut partitions = partitions.to_vec();
        partitions.sort_unstable();
        partitions.dedup();
        let lease = Lease { group: group.to_string(), partitions, claim: None };
        (self.lease, self.fenced) = (None, None);
        let seq = self.append_entry(Action::Claim, Vec::new(), Vec::new(), Some(lease.clone()))?;
        self.lease = Some(Lease { claim: Some(seq), ..lease });
        Ok(seq)
    }

    /// Whether a newer claim has fenced this writer.
    pub fn is_fenced(&self) -> bool {
        self.fenced.is_some()
    }

    /// Append an entry recording `added` and `removed`; returns its sequence number. The
    /// entry is durable when this returns. A writer holding a lease writes under it, and is
    /// refused ([`ArchiveError::Fenced`]) once a newer claim took one of its partitions.
    pub fn append(&mut self, action: Action, added: Vec<FileRecord>, removed: Vec<FileRecord>) -> Result<u64, ArchiveError> {
        self.check_fence()?;
        self.append_entry(action, added, removed, self.lease.clone())
    }

    fn check_fence(&self) -> Result<(), ArchiveError> {
        match (&self.fenced, &self.lease) {
            (Some((partition, by, seq)), Some(lease)) => {
                Err(ArchiveError::Fenced { group: lease.group.clone(), partition: *partition, claim: lease.claim.unwrap_or_default(), by: by.clone(), seq: *seq })
            }
            _ => Ok(()),
        }
    }

    fn append_entry(&mut self, action: Action, added: Vec<FileRecord>, removed: Vec<FileRecord>, lease: Option<Lease>) -> Result<u64, ArchiveError> {
        let mut entry = Entry {
            seq: 0,
            prev: String::new(),
            at: chrono::Utc::now().timestamp_millis(),
            writer: self.writer.clone(),
            action,
            key_id: self.signer.key_id.clone(),
            added,
            removed,
            lease,
        };
        loop {
            let (seq, prev) = match self.head {
                Some((seq, hash)) => (seq + 1, hex::encode(hash)),
                None => (1, String::new()),
            };
            (entry.seq, entry.prev) = (seq, prev);
            let body = serde_json::to_string(&entry).map_err(|e| ArchiveError::Query(format!("encoding a manifest entry: {e}")))?;
            let content = format!("{body}\n{}\n", sign_line(&self.signer, &body));
            let target = format!("{MANIFEST_DIR}/{}", entry_name(seq));
            let hash: [u8; 32] = Sha256::digest(content.as_bytes()).into();
            // Of two writers, one creates this number; the other chains after its entry.
            if self.root.create(&target, content.into_bytes())? {
                self.head = Some((seq, hash));
                return Ok(seq);
            }
            let theirs = self.root.read(&target)?;
            self.head = Some((seq, Sha256::digest(&theirs).into()));
            // (While claiming, this writer holds no lease: nothing fences it.)
            self.note_claim(&theirs, seq);
            self.check_fence()?;
        }
    }

    /// Another writer's entry, read on the way to our next number: a claim of one of our
    /// partitions fences us. (An entry that cannot be read is `verify`'s to report.)
    fn note_claim(&mut self, file: &[u8], seq: u64) {
        let Some(ours) = &self.lease else { return };
        let Ok((body, _)) = split_entry(file) else { return };
        let Ok(entry) = serde_json::from_slice::<Entry>(body) else { return };
        if entry.action != Action::Claim || entry.writer == self.writer {
            return;
        }
        if let Some(partition) = entry.lease.as_ref().and_then(|theirs| ours.overlap(theirs)) {
            self.fenced = Some((partition, entry.writer, seq));
        }
    }
}

/// The hex Ed25519 signature of `line` (an entry's first line), as the entry's second line.
pub fn sign_line(signer: &ManifestSigner, line: &str) -> String {
    hex::encode(signer.key.sign(line.as_bytes()).to_bytes())
}

/// A file's path under `root`, `/`-separated.
pub fn relative_path(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The newest entry of the manifest at `root`: its sequence number and the hex SHA-256 of
/// its file. An auditor keeps it; `verify --head` later proves the chain still reaches it.
pub fn head(root: &ArchiveRoot) -> Result<Option<(u64, String)>, ArchiveError> {
    let (entries, _) = entry_files(root)?;
    match entries.last_key_value() {
        Some((seq, path)) => Ok(Some((*seq, hex::encode(Sha256::digest(root.read(path)?))))),
        None => Ok(None),
    }
}

/// Every data file the manifest says is in place (after all adds and removes), by path.
/// Entries that cannot be read are skipped (`verify` reports them).
pub fn recorded_files(root: &ArchiveRoot) -> Result<BTreeMap<String, (u64, FileRecord)>, ArchiveError> {
    let (entries, _) = entry_files(root)?;
    let mut active = BTreeMap::new();
    for (seq, path) in entries {
        let bytes = root.read(&path)?;
        let Ok((body, _)) = split_entry(&bytes) else { continue };
        let Ok(entry) = serde_json::from_slice::<Entry>(body) else { continue };
        for record in entry.removed {
            active.remove(&record.path);
        }
        for record in entry.added {
            active.insert(record.path.clone(), (seq, record));
        }
    }
    Ok(active)
}

/// What `verify` checks.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Re-hash only files of days from this date (`YYYY-MM-DD`), inclusive.
    pub from: Option<String>,
    /// Re-hash only files of days before this date (`YYYY-MM-DD`).
    pub to: Option<String>,
    /// A head an auditor kept (sequence number, hex SHA-256): the chain must still hold it.
    pub head: Option<(u64, String)>,
    /// Bytes re-hashed so far, for a progress line on long runs.
    pub hashed_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One thing wrong with the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Entries missing from the chain (`first..=last`).
    EntriesMissing {
        /// First missing sequence number.
        first: u64,
        /// Last missing sequence number.
        last: u64,
    },
    /// An entry file that cannot be read as an entry.
    Unreadable {
        /// Its file name.
        name: String,
        /// Why.
        why: String,
    },
    /// The file named for one sequence number holds another's entry.
    OutOfPlace {
        /// The number in the file's name.
        seq: u64,
        /// The number in the entry.
        holds: u64,
    },
    /// The entry names a key that is not among those given.
    UnknownKey {
        /// The entry.
        seq: u64,
        /// The key id it names.
        key_id: String,
    },
    /// The signature does not match the entry (or the key).
    BadSignature {
        /// The entry.
        seq: u64,
        /// The key id the entry names.
        key_id: String,
    },
    /// The entry does not chain to the one before it: that one was rewritten or replaced.
    BrokenChain {
        /// The entry whose `prev` does not match.
        seq: u64,
    },
    /// The head an auditor kept is missing or different.
    HeadMismatch {
        /// Its sequence number.
        seq: u64,
        /// What the archive has there instead (None: no entry).
        found: Option<String>,
    },
    /// A recorded file whose bytes changed.
    Altered {
        /// Its path.
        path: String,
        /// The entry that recorded it.
        seq: u64,
    },
    /// A recorded file that is gone.
    Missing {
        /// Its path.
        path: String,
        /// The entry that recorded it.
        seq: u64,
    },
    /// A data file no entry records.
    Unrecorded {
        /// Its path.
        path: String,
    },
    /// A write made under a claim that a newer claim had already taken over: a fenced
    /// writer's commit got through.
    WrittenWhileFenced {
        /// The write's entry.
        seq: u64,
        /// The partition.
        partition: u32,
        /// The newer claim's entry.
        claimed_by: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::EntriesMissing { first, last } if first == last => write!(f, "manifest entry {first} is missing"),
            Problem::EntriesMissing { first, last } => write!(f, "manifest entries {first} to {last} are missing"),
            Problem::Unreadable { name, why } => write!(f, "manifest file {name} is not an entry: {why}"),
            Problem::OutOfPlace { seq, holds } => write!(f, "manifest entry {seq} holds entry {holds}: entries were renamed or reordered"),
            Problem::UnknownKey { seq, key_id } => write!(f, "manifest entry {seq}: signed by key {key_id}, which is not among the given public keys"),
            Problem::BadSignature { seq, key_id } => write!(f, "manifest entry {seq}: the signature does not verify with key {key_id}: the entry was rewritten, or signed by another key under that id"),
            Problem::BrokenChain { seq } => write!(f, "manifest entry {seq} does not chain to entry {}: that entry was rewritten, replaced or reordered", seq - 1),
            Problem::HeadMismatch { seq, found: None } => write!(f, "the kept head, entry {seq}, is gone: entries were removed from the end of the manifest"),
            Problem::HeadMismatch { seq, found: Some(hash) } => write!(f, "the kept head, entry {seq}, now hashes to {hash}: the manifest was rewritten"),
            Problem::Altered { path, seq } => write!(f, "ALTERED {path}: its SHA-256 differs from entry {seq}'s"),
            Problem::Missing { path, seq } => write!(f, "MISSING {path}: recorded by entry {seq}, not in the archive"),
            Problem::Unrecorded { path } => write!(f, "UNRECORDED {path}: in the archive, in no manifest entry"),
            Problem::WrittenWhileFenced { seq, partition, claimed_by } => {
                write!(f, "manifest entry {seq} was written under a claim of partition {partition} that entry {claimed_by} had already taken over")
            }
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// Data files re-hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Everything wrong, in the order found (chain first, then files by path).
    pub problems: Vec<Problem>,
}

/// Check the archive at `root` against its manifest: the chain, every signature (each entry
/// with the one of `keys` whose id it names: writers on several hosts may each have their
/// own), and every data file's bytes (those of days in the options' range).
pub fn verify(root: &ArchiveRoot, keys: &[VerifyingKey], options: &VerifyOptions) -> Result<VerifyReport, ArchiveError> {
    let keys: BTreeMap<String, &VerifyingKey> = keys.iter().map(|k| (key_id(k), k)).collect();
    let (entries, others) = entry_files(root)?;
    let mut report = VerifyReport::default();
    for path in others {
        let name = path.strip_prefix(MANIFEST_DIR).map(|p| p.trim_start_matches('/')).unwrap_or(&path).to_string();
        report.problems.push(Problem::Unreadable { name, why: "not named <sequence number>.entry".into() });
    }
    let mut active: BTreeMap<String, (u64, FileRecord)> = BTreeMap::new();
    let mut previous: Option<(u64, [u8; 32])> = None;
    // (group, partition) → the newest claim's entry.
    let mut claims: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for (seq, path) in &entries {
        let seq = *seq;
        let expected = previous.map_or(1, |(s, _)| s + 1);
        if seq > expected {
            report.problems.push(Problem::EntriesMissing { first: expected, last: seq - 1 });
        }
        let bytes = root.read(path)?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let follows = previous.filter(|(s, _)| *s + 1 == seq);
        previous = Some((seq, hash));
        report.entries += 1;
        let parsed = split_entry(&bytes).and_then(|(body, signature)| {
            serde_json::from_slice::<Entry>(body).map(|entry| (body, signature, entry)).map_err(|e| format!("not an entry: {e}"))
        });
        let (body, signature, entry) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                report.problems.push(Problem::Unreadable { name: entry_name(seq), why });
                continue;
            }
        };
        match keys.get(&entry.key_id) {
            None => report.problems.push(Problem::UnknownKey { seq, key_id: entry.key_id.clone() }),
            Some(key) if key.verify(body, &signature).is_err() => report.problems.push(Problem::BadSignature { seq, key_id: entry.key_id.clone() }),
            Some(_) => {}
        }
        if entry.seq != seq {
            report.problems.push(Problem::OutOfPlace { seq, holds: entry.seq });
        }
        let chained = match follows {
            Some((_, prev_hash)) => entry.prev == hex::encode(prev_hash),
            // The first entry starts the chain; after a gap the gap is the problem.
            None => seq != 1 || entry.prev.is_empty(),
        };
        if !chained {
            report.problems.push(Problem::BrokenChain { seq });
        }
        if let Some(lease) = &entry.lease {
            for &partition in &lease.partitions {
                let newest = claims.entry((lease.group.clone(), partition)).or_default();
                match (entry.action, lease.claim) {
                    (Action::Claim, _) => *newest = seq,
                    (_, Some(claim)) if *newest > claim => report.problems.push(Problem::WrittenWhileFenced { seq, partition, claimed_by: *newest }),
                    _ => {}
                }
            }
        }
        for record in entry.removed {
            active.remove(&record.path);
        }
        for record in entry.added {
            active.insert(record.path.clone(), (seq, record));
        }
    }
    if let Some((seq, kept)) = &options.head {
        let found = entries.get(seq).map(|path| root.read(path).map(|b| hex::encode(Sha256::digest(b)))).transpose()?;
        if found.as_deref() != Some(kept.as_str()) {
            report.problems.push(Problem::HeadMismatch { seq: *seq, found });
        }
    }

    // `to` is exclusive; a compacted month's file is checked when any of its days is in range.
    let day = |d: &Option<String>| d.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let (from, to) = (day(&options.from), day(&options.to).and_then(|to| to.pred_opt()));
    let in_range = |path: &str| crate::layout::span_of(path).is_none_or(|span| span.overlaps(from, to));
    // Every data file on disk, under the tables (not the temp or manifest directories).
    let mut on_disk = std::collections::BTreeSet::new();
    for table in seedwatch_schemas::Table::ALL {
        on_disk.extend(root.data_files(table.name())?);
    }
    let to_check: Vec<(&String, &(u64, FileRecord))> = active.iter().filter(|(path, _)| in_range(path)).collect();
    let checked: Vec<Result<Option<Problem>, ArchiveError>> = to_check
        .par_iter()
        .map(|(path, (seq, record))| {
            if !on_disk.contains(path.as_str()) {
                return Ok(Some(Problem::Missing { path: path.to_string(), seq: *seq }));
            }
            let (sha256, bytes) = root.sha256(path)?;
            options.hashed_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            Ok((sha256 != record.sha256).then(|| Problem::Altered { path: path.to_string(), seq: *seq }))
        })
        .collect();
    for (result, (_, (_, record))) in checked.into_iter().zip(&to_check) {
        if let Some(problem) = result? {
            report.problems.push(problem);
        } else {
            report.files += 1;
            report.bytes += record.bytes;
        }
    }
    for path in on_disk.iter().filter(|p| !active.contains_key(p.as_str()) && in_range(p)) {
        report.problems.push(Problem::Unrecorded { path: path.clone() });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn signer(dir: &Path) -> Arc<ManifestSigner> {
        Arc::new(ManifestSigner::load_or_create(&dir.join("keys/signing.pem")).expect("key"))
    }

    fn record(path: &str) -> FileRecord {
        FileRecord { path: path.into(), sha256: "00".repeat(32), bytes: 1, rows: 1, min_time: None, max_time: None }
    }

    #[test]
    fn two_writers_on_one_manifest_each_get_a_number_and_the_chain_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = ArchiveRoot::from(dir.path().join("archive"));
        let key = signer(dir.path());
        let mut a = ManifestLog::open(&root, key.clone(), "a").expect("open a");
        let mut b = ManifestLog::open(&root, key.clone(), "b").expect("open b");
        assert_eq!(a.append(Action::Write, vec![], vec![]).expect("a1"), 1);
        // b still thinks the manifest is empty: it loses number 1 and chains after a's entry.
        assert_eq!(b.append(Action::Write, vec![], vec![]).expect("b"), 2);
        assert_eq!(a.append(Action::Write, vec![], vec![]).expect("a2"), 3);
        let report = verify(&root, &[key.verifying_key()], &VerifyOptions::default()).expect("verify");
        assert_eq!((report.entries, report.problems), (3, vec![]));
        let (seq, hash) = head(&root).expect("head").expect("an entry");
        assert_eq!(seq, 3);
        let with_head = VerifyOptions { head: Some((3, hash)), ..VerifyOptions::default() };
        assert!(verify(&root, &[key.verifying_key()], &with_head).expect("verify").problems.is_empty());
    }

    #[test]
    fn a_newer_claim_of_a_partition_fences_the_older_holder_until_it_claims_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = ArchiveRoot::from(dir.path().join("archive"));
        let key = signer(dir.path());
        let mut a = ManifestLog::open(&root, key.clone(), "a").expect("open a");
        let mut b = ManifestLog::open(&root, key.clone(), "b").expect("open b");
        let mut other_group = ManifestLog::open(&root, key.clone(), "c").expect("open c");
        a.claim("detectors", &[0, 1, 2, 3]).expect("a claims");
        a.append(Action::Write, vec![record("login/date=2026-09-01/part-a1.parquet")], vec![]).expect("a writes under its claim");
        // Another group's claim of the same numbers, and a writer without a lease, fence nobody.
        other_group.claim("elsewhere", &[0, 1, 2, 3]).expect("c claims");
        b.append(Action::Write, vec![], vec![]).expect("a write without a lease");
        a.append(Action::Write, vec![], vec![]).expect("a still writes");
        // b takes partitions 2 and 3 (a rebalance a has not heard of): a's next write is refused.
        let b_claim = b.claim("detectors", &[3, 2]).expect("b claims");
        b.append(Action::Write, vec![record("login/date=2026-09-01/part-b1.parquet")], vec![]).expect("b writes");
        let refused = a.append(Action::Write, vec![record("login/date=2026-09-01/part-a2.parquet")], vec![]).expect_err("a is fenced");
        match &refused {
            ArchiveError::Fenced { group, partition, by, seq, claim } => {
                assert_eq!((group.as_str(), *partition, by.as_str(), *seq, *claim), ("detectors", 2, "b", b_claim, 1), "{refused}");
            }
            other => panic!("not a fence: {other}"),
        }
        assert!(a.is_fenced());
        assert!(a.append(Action::Write, vec![], vec![]).is_err(), "still fenced");
        // Its new assignment: partitions 0 and 1 only. b keeps writing; a writes again.
        a.claim("detectors", &[0, 1]).expect("a claims again");
        a.append(Action::Write, vec![], vec![]).expect("a writes under its new claim");
        b.append(Action::Write, vec![], vec![]).expect("b is not fenced by a claim of other partitions");
        let report = verify(&root, &[key.verifying_key()], &VerifyOptions::default()).expect("verify");
        // The chain holds, and only the two accepted writes' (made-up) files are looked for: the
        // refused write left no entry.
        let missing = |path: &str, seq| Problem::Missing { path: path.into(), seq };
        assert_eq!(report.problems, vec![missing("login/date=2026-09-01/part-a1.parquet", 2), missing("login/date=2026-09-01/part-b1.parquet", 7)]);
    }

    #[test]
    fn verify_names_a_write_made_under_a_claim_already_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = ArchiveRoot::from(dir.path().join("archive"));
        let key = signer(dir.path());
        let mut a = ManifestLog::open(&root, key.clone(), "a").expect("open a");
        a.claim("detectors", &[0, 1]).expect("a claims");
        let mut b = ManifestLog::open(&root, key.clone(), "b").expect("open b");
        let b_claim = b.claim("detectors", &[1]).expect("b claims");
        // A writer that ignored the fence: it writes straight after b's claim, under its old lease.
        let stale = a.lease.clone();
        a.head = b.head;
        let seq = a.append_entry(Action::Write, vec![], vec![], stale).expect("append under the old lease");
        let report = verify(&root, &[key.verifying_key()], &VerifyOptions::default()).expect("verify");
        assert_eq!(report.problems, vec![Problem::WrittenWhileFenced { seq, partition: 1, claimed_by: b_claim }]);
    }

    #[test]
    fn an_entry_is_checkable_with_sha256_and_the_public_key_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive");
        let root = ArchiveRoot::from(&path);
        let key = signer(dir.path());
        let mut log = ManifestLog::open(&root, key.clone(), "w").expect("open");
        log.append(Action::Write, vec![record("login/date=2026-09-01/part-1.parquet")], vec![]).expect("first");
        log.append(Action::Write, vec![], vec![]).expect("second");
        let first = fs::read(path.join(MANIFEST_DIR).join(entry_name(1))).expect("first file");
        let second = fs::read_to_string(path.join(MANIFEST_DIR).join(entry_name(2))).expect("second file");
        let (body, signature) = split_entry(second.as_bytes()).expect("split");
        let entry: Entry = serde_json::from_slice(body).expect("entry");
        assert_eq!(entry.prev, hex::encode(Sha256::digest(&first)));
        let public = VerifyingKey::from_public_key_pem(&key.public_key_pem().expect("pem")).expect("public key");
        assert!(public.verify(body, &signature).is_ok());
        assert_eq!(entry.key_id, key_id(&public));
    }

    #[test]
    fn a_signing_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.pem");
        ManifestSigner::load_or_create(&path).expect("create");
        assert!(ManifestSigner::load(&path).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            let error = ManifestSigner::load(&path).expect_err("loose permissions").to_string();
            assert!(error.contains("chmod 600"), "{error}");
        }
    }
}
