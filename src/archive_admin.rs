//! The archive as a system of record: opening it for writing with its manifest signed, and
//! the `seedwatch archive` commands (verify, head, public-key).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use seedwatch_archive::manifest::{self, ManifestSigner, VerifyOptions, VerifyReport};
use seedwatch_archive::{ArchiveRoot, ArchiveWriter, WriterOptions};

/// The signing key's file: the one given, else `$SEEDWATCH_SIGNING_KEY`, else
/// `~/.config/seedwatch/archive-signing.pem`. Outside the archive, so that whoever can
/// change the archive cannot sign what they changed.
pub fn signing_key_path(given: Option<PathBuf>) -> PathBuf {
    given.or_else(|| std::env::var_os("SEEDWATCH_SIGNING_KEY").map(PathBuf::from)).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".config/seedwatch/archive-signing.pem")
    })
}

/// Writer options whose manifest entries are signed with the key in `signing_key` (created if missing).
pub fn writer_options(signing_key: &Path) -> Result<WriterOptions> {
    let signer = ManifestSigner::load_or_create(signing_key)?;
    Ok(WriterOptions { signer: Some(Arc::new(signer)), ..WriterOptions::default() })
}

/// The archive at `root`, open for writing, its manifest signed with the key in `signing_key`.
pub fn open_writer(root: impl Into<ArchiveRoot>, signing_key: &Path) -> Result<ArchiveWriter> {
    open_writer_with(root.into(), writer_options(signing_key)?)
}

/// The archive at `root`, open for writing with `options`.
pub fn open_writer_with(root: ArchiveRoot, options: WriterOptions) -> Result<ArchiveWriter> {
    ArchiveWriter::open(&root, options).with_context(|| format!("opening the archive at {root}"))
}

/// How `archive verify` was asked to check.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// Archive root.
    pub archive: ArchiveRoot,
    /// Public key files (SPKI PEM), one per writing host; none: the signing key's public half.
    pub public_keys: Vec<PathBuf>,
    /// The signing key file (see [`signing_key_path`]).
    pub signing_key: PathBuf,
    /// Days from (YYYY-MM-DD, inclusive).
    pub from: Option<String>,
    /// Days to (YYYY-MM-DD, exclusive).
    pub to: Option<String>,
    /// A kept head, `SEQ:SHA256`.
    pub head: Option<String>,
    /// Print a progress line to stderr every 2 s.
    pub progress: bool,
}

fn check_date(flag: &str, date: &Option<String>) -> Result<()> {
    if let Some(date) = date {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").with_context(|| format!("{flag} {date}: not a date (YYYY-MM-DD)"))?;
    }
    Ok(())
}

/// Check the archive against its manifest.
pub fn verify(request: &VerifyRequest) -> Result<VerifyReport> {
    check_date("--from", &request.from)?;
    check_date("--to", &request.to)?;
    let head = match &request.head {
        Some(text) => {
            let (seq, hash) = text.split_once(':').context("--head: expected SEQ:SHA256, as `seedwatch archive head` prints it")?;
            let seq = seq.parse::<u64>().with_context(|| format!("--head: `{seq}` is not a sequence number"))?;
            anyhow::ensure!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "--head: `{hash}` is not a hex SHA-256");
            Some((seq, hash.to_ascii_lowercase()))
        }
        None => None,
    };
    anyhow::ensure!(request.archive.exists()?, "{} is not an archive", request.archive);
    let keys = if request.public_keys.is_empty() {
        vec![ManifestSigner::load(&request.signing_key).context("no --public-key given, and the signing key cannot be read")?.verifying_key()]
    } else {
        request.public_keys.iter().map(|path| manifest::load_verifying_key(path)).collect::<Result<Vec<_>, _>>()?
    };
    let options = VerifyOptions { from: request.from.clone(), to: request.to.clone(), head, ..VerifyOptions::default() };
    // A progress line every 2 s on stderr: re-hashing years of files takes a while.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = request.progress.then(|| {
        let (hashed, done) = (options.hashed_bytes.clone(), done.clone());
        let total: u64 = manifest::recorded_files(&request.archive).map(|f| f.values().map(|(_, r)| r.bytes).sum()).unwrap_or(0);
        std::thread::spawn(move || {
            let (started, every) = (std::time::Instant::now(), std::time::Duration::from_secs(2));
            let mut next = every;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if started.elapsed() >= next {
                    next += every;
                    let mb = hashed.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
                    eprintln!("verify: {mb:.0} of {:.0} MB re-hashed ({:.0} s)", total as f64 / 1e6, started.elapsed().as_secs_f64());
                }
            }
        })
    });
    let report = manifest::verify(&request.archive, &keys, &options);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    Ok(report?)
}

/// The newest manifest entry as `SEQ:SHA256`.
pub fn head(root: &ArchiveRoot) -> Result<String> {
    let (seq, hash) = manifest::head(root)?.with_context(|| format!("{root} has no manifest entries yet"))?;
    Ok(format!("{seq}:{hash}"))
}

/// The signing key's public half as SPKI PEM (created with the key if missing).
pub fn public_key(signing_key: &Path) -> Result<String> {
    Ok(ManifestSigner::load_or_create(signing_key)?.public_key_pem()?)
}

/// How `archive prune` was asked to run.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// Archive root.
    pub archive: ArchiveRoot,
    /// The policy file holding the retention periods.
    pub policy: PathBuf,
    /// Prune as on this date (YYYY-MM-DD) instead of today (UTC).
    pub as_of: Option<String>,
    /// Report only.
    pub dry_run: bool,
    /// The signing key file (see [`signing_key_path`]).
    pub signing_key: PathBuf,
}

/// Plan a prune and, unless it is a dry run, carry it out.
pub async fn prune(request: &PruneRequest) -> Result<seedwatch_archive::prune::PrunePlan> {
    let as_of = match &request.as_of {
        Some(date) => chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").with_context(|| format!("--as-of {date}: not a date (YYYY-MM-DD)"))?,
        None => chrono::Utc::now().date_naive(),
    };
    let policy = seedwatch_detect::policy::load_policy(&request.policy)?;
    let plan = seedwatch_archive::prune::plan(&request.archive, policy.retention(), as_of).await?;
    if !request.dry_run {
        // Read the key before anything goes: a prune that cannot be recorded removes nothing.
        let signer = Arc::new(ManifestSigner::load_or_create(&request.signing_key)?);
        seedwatch_archive::prune::apply(&request.archive, &plan, Some(signer))?;
    }
    Ok(plan)
}
