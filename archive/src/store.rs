//! Where an archive lives: a local directory (the default) or a prefix of an S3-compatible
//! bucket (`s3://bucket/prefix`).
//!
//! Both hold the same layout (`<table>/_delta_log/`, `<table>/date=…/part-….parquet`,
//! `_manifest/<seq>.entry`). The writer, the manifest, recovery and `verify` go through the
//! few operations here; the Delta log reaches the bucket through delta-rs's own S3 store,
//! configured with the same settings.
//!
//! S3 settings come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, … as the AWS tools name them) or from
//! the file `$SEEDWATCH_S3_CONFIG` (`KEY=VALUE` lines with the same names, readable by its
//! owner only); the environment wins. Never from the command line: the URL holds no secret.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use sha2::{Digest as _, Sha256};

use crate::{io_err, ArchiveError};

/// The environment variable naming a file of S3 settings.
pub const S3_CONFIG_ENV: &str = "SEEDWATCH_S3_CONFIG";

/// An archive's root.
#[derive(Debug, Clone)]
pub enum ArchiveRoot {
    /// A directory on this host.
    Local(PathBuf),
    /// A prefix of an S3-compatible bucket.
    S3(Arc<S3Root>),
}

/// A prefix of an S3 bucket and a client for it.
#[derive(Debug)]
pub struct S3Root {
    /// `s3://bucket/prefix/` (always ending in `/`).
    url: url::Url,
    /// The prefix under the bucket, without slashes at either end (empty: the bucket's root).
    prefix: String,
    store: Arc<dyn ObjectStore>,
    /// The settings, as `aws_*` keys, for delta-rs's store of the same bucket.
    options: HashMap<String, String>,
}

impl From<&Path> for ArchiveRoot {
    fn from(path: &Path) -> Self {
        ArchiveRoot::Local(path.to_path_buf())
    }
}

impl From<&PathBuf> for ArchiveRoot {
    fn from(path: &PathBuf) -> Self {
        ArchiveRoot::Local(path.clone())
    }
}

impl From<PathBuf> for ArchiveRoot {
    fn from(path: PathBuf) -> Self {
        ArchiveRoot::Local(path)
    }
}

impl From<&ArchiveRoot> for ArchiveRoot {
    fn from(root: &ArchiveRoot) -> Self {
        root.clone()
    }
}

impl std::fmt::Display for ArchiveRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveRoot::Local(path) => write!(f, "{}", path.display()),
            ArchiveRoot::S3(s3) => write!(f, "{}", s3.url.as_str().trim_end_matches('/')),
        }
    }
}

impl std::str::FromStr for ArchiveRoot {
    type Err = ArchiveError;

    /// A directory, or `s3://bucket[/prefix]` (the client is set up from the environment
    /// and `$SEEDWATCH_S3_CONFIG`; nothing is contacted yet).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("s3://") {
            Some(_) => Ok(ArchiveRoot::S3(Arc::new(S3Root::connect(s)?))),
            None if s.contains("://") => Err(config_err(s, "only local directories and s3:// URLs are archive roots")),
            None => Ok(ArchiveRoot::Local(PathBuf::from(s))),
        }
    }
}

fn config_err(what: &str, message: impl Into<String>) -> ArchiveError {
    ArchiveError::Settings { at: what.to_string(), message: message.into() }
}

fn object_err(action: &'static str, path: &ObjectPath) -> impl FnOnce(object_store::Error) -> ArchiveError + use<> {
    let path = path.clone();
    move |source| ArchiveError::Object { action, path: path.to_string(), source: Box::new(source) }
}

/// The S3 settings of the environment and of `$SEEDWATCH_S3_CONFIG`, as `aws_*` keys.
fn s3_settings() -> Result<HashMap<String, String>, ArchiveError> {
    let mut settings = HashMap::new();
    if let Some(file) = std::env::var_os(S3_CONFIG_ENV) {
        let file = PathBuf::from(file);
        check_private(&file)?;
        let text = std::fs::read_to_string(&file).map_err(io_err("reading", &file))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", file.display(), n + 1);
            let (key, value) = line.split_once('=').ok_or_else(|| config_err(&at, "expected KEY=VALUE"))?;
            let key = key.trim().to_ascii_lowercase();
            let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| config_err(&at, format!("`{}` is not an S3 setting (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, …)", key.to_ascii_uppercase())))?;
            settings.insert(parsed.as_ref().to_string(), value.trim().trim_matches('"').to_string());
        }
    }
    for (key, value) in std::env::vars() {
        if let Ok(parsed) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            settings.insert(parsed.as_ref().to_string(), value);
        }
    }
    Ok(settings)
}

/// Refuse a settings file others can read: it holds the secret key.
fn check_private(file: &Path) -> Result<(), ArchiveError> {
    match seedwatch_schemas::secret_file::exposure(file).map_err(io_err("reading", file))? {
        Some(why) => Err(config_err(&file.display().to_string(), format!("{why} the S3 secret key; chmod 600 it"))),
        None => Ok(()),
    }
}

impl S3Root {
    /// A client for `url` (`s3://bucket[/prefix]`).
    pub fn connect(url: &str) -> Result<Self, ArchiveError> {
        let parsed = url::Url::parse(url).map_err(|e| config_err(url, format!("not a URL: {e}")))?;
        let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| config_err(url, "no bucket (expected s3://bucket/prefix)"))?.to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        let settings = s3_settings()?;
        let mut builder = AmazonS3Builder::new().with_bucket_name(&bucket);
        for (key, value) in &settings {
            if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        let store = builder.build().map_err(|e| config_err(url, format!("S3 settings: {e}")))?;
        let mut options = settings;
        // delta-rs commits by a conditional put; our server and AWS both answer it.
        options.entry("aws_conditional_put".into()).or_insert_with(|| "etag".into());
        let root = if prefix.is_empty() { format!("s3://{bucket}/") } else { format!("s3://{bucket}/{prefix}/") };
        let url = url::Url::parse(&root).map_err(|e| config_err(url, format!("not a URL: {e}")))?;
        Ok(Self { url, prefix, store: Arc::new(store), options })
    }

    fn key(&self, relative: &str) -> ObjectPath {
        let relative = relative.trim_matches('/');
        match (self.prefix.is_empty(), relative.is_empty()) {
            (true, _) => ObjectPath::from(relative),
            (false, true) => ObjectPath::from(self.prefix.as_str()),
            (false, false) => ObjectPath::from(format!("{}/{relative}", self.prefix)),
        }
    }

    fn relative(&self, key: &ObjectPath) -> String {
        let key = key.as_ref();
        if self.prefix.is_empty() {
            return key.to_string();
        }
        key.strip_prefix(self.prefix.as_str()).map(|k| k.trim_start_matches('/')).unwrap_or(key).to_string()
    }
}

/// A unique name for a temp file beside `target` (several threads and processes append).
fn temp_beside(target: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    target.with_file_name(format!(".tmp-{}-{n}", std::process::id()))
}

impl ArchiveRoot {
    /// The directory, if the archive is on this host.
    pub fn local(&self) -> Option<&Path> {
        match self {
            ArchiveRoot::Local(path) => Some(path),
            ArchiveRoot::S3(_) => None,
        }
    }

    /// Whether anything has been archived here (a local directory exists, or the bucket
    /// prefix holds a manifest or a table).
    pub fn exists(&self) -> Result<bool, ArchiveError> {
        match self {
            ArchiveRoot::Local(path) => Ok(path.is_dir()),
            ArchiveRoot::S3(_) => {
                let root = self.clone();
                crate::delta::block_on(async move { root.any_under("").await })?
            }
        }
    }

    /// Whether any file lies under `prefix` (a directory under the root). Asks for the first
    /// one only: listing a years-long archive in full is thousands of requests.
    pub async fn any_under(&self, prefix: &str) -> Result<bool, ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let dir = root.join(prefix);
                Ok(dir.is_dir() && std::fs::read_dir(&dir).map_err(io_err("listing", &dir))?.next().is_some())
            }
            ArchiveRoot::S3(s3) => {
                let prefix = s3.key(prefix);
                match s3.store.list(Some(&prefix)).next().await {
                    None => Ok(false),
                    Some(Ok(_)) => Ok(true),
                    Some(Err(e)) => Err(object_err("listing", &prefix)(e)),
                }
            }
        }
    }

    /// The URL of `relative` (a directory under the root), as delta-rs opens it.
    pub fn url_of(&self, relative: &str) -> Result<url::Url, ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let dir = root.join(relative);
                let dir = dir.canonicalize().map_err(io_err("resolving", &dir))?;
                url::Url::from_directory_path(&dir).map_err(|()| ArchiveError::Io { action: "making a URL of", path: dir, error: std::io::Error::other("not an absolute path") })
            }
            ArchiveRoot::S3(s3) => s3.url.join(&format!("{}/", relative.trim_matches('/'))).map_err(|e| config_err(relative, e.to_string())),
        }
    }

    /// The settings delta-rs needs to reach the root (none for a local directory).
    pub fn storage_options(&self) -> HashMap<String, String> {
        match self {
            ArchiveRoot::Local(_) => HashMap::new(),
            ArchiveRoot::S3(s3) => s3.options.clone(),
        }
    }

    /// Every file under `prefix` (a directory under the root, `""` for all), as
    /// `/`-separated paths under the root with their sizes, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ArchiveError> {
        match self {
            ArchiveRoot::Local(_) => futures::executor::block_on(self.list_async(prefix)),
            ArchiveRoot::S3(_) => {
                let (root, prefix) = (self.clone(), prefix.to_string());
                crate::delta::block_on(async move { root.list_async(&prefix).await })?
            }
        }
    }

    /// [`ArchiveRoot::list`] for async callers (a sync call from the archive's own runtime
    /// would wait on itself).
    pub async fn list_async(&self, prefix: &str) -> Result<Vec<(String, u64)>, ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let mut out = Vec::new();
                let dir = root.join(prefix);
                if !dir.is_dir() {
                    return Ok(out);
                }
                let mut stack = vec![dir];
                while let Some(d) = stack.pop() {
                    for entry in std::fs::read_dir(&d).map_err(io_err("listing", &d))? {
                        let entry = entry.map_err(io_err("listing", &d))?;
                        let meta = entry.metadata().map_err(io_err("reading metadata of", entry.path()))?;
                        if meta.is_dir() {
                            stack.push(entry.path());
                        } else {
                            out.push((crate::manifest::relative_path(root, &entry.path()), meta.len()));
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
            ArchiveRoot::S3(s3) => {
                let prefix = s3.key(prefix);
                let listed: Vec<object_store::ObjectMeta> = s3.store.list(Some(&prefix)).try_collect().await.map_err(object_err("listing", &prefix))?;
                let mut out: Vec<(String, u64)> = listed.iter().map(|meta| (s3.relative(&meta.location), meta.size)).collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// Every data file of the table directory `table` (`*.parquet` not under a `_` folder
    /// such as `_delta_log`), as paths under the root.
    pub fn data_files(&self, table: &str) -> Result<Vec<String>, ArchiveError> {
        Ok(self
            .list(table)?
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| path.ends_with(".parquet") && !path.split('/').skip(1).any(|part| part.starts_with('_')))
            .collect())
    }

    /// The bytes of `relative`.
    pub fn read(&self, relative: &str) -> Result<bytes::Bytes, ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let path = root.join(relative);
                std::fs::read(&path).map(bytes::Bytes::from).map_err(io_err("reading", &path))
            }
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let key = s3.key(relative);
                crate::delta::block_on(async move {
                    let got = s3.store.get(&key).await.map_err(object_err("reading", &key))?;
                    got.bytes().await.map_err(object_err("reading", &key))
                })?
            }
        }
    }

    /// Whether `relative` exists.
    pub fn is_file(&self, relative: &str) -> Result<bool, ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => Ok(root.join(relative).is_file()),
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let key = s3.key(relative);
                crate::delta::block_on(async move {
                    match s3.store.head(&key).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::NotFound { .. }) => Ok(false),
                        Err(e) => Err(object_err("looking up", &key)(e)),
                    }
                })?
            }
        }
    }

    /// Write `bytes` to `relative` unless it exists (then `false`, nothing written): of
    /// several writers, exactly one creates it. Durable when this returns.
    pub fn create(&self, relative: &str, bytes: Vec<u8>) -> Result<bool, ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let target = root.join(relative);
                let dir = target.parent().unwrap_or(root);
                std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
                let tmp = temp_beside(&target);
                {
                    let mut file = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
                    if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_all()) {
                        // A full disk: the partial copy goes, and the entry was not made.
                        let _ = std::fs::remove_file(&tmp);
                        return Err(io_err("writing", &tmp)(e));
                    }
                }
                // A hard link fails if the name exists.
                let linked = std::fs::hard_link(&tmp, &target);
                std::fs::remove_file(&tmp).map_err(io_err("removing", &tmp))?;
                match linked {
                    Ok(()) => {
                        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(io_err("linking", &target)(e)),
                }
            }
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let key = s3.key(relative);
                crate::delta::block_on(async move {
                    let options = PutOptions { mode: PutMode::Create, ..Default::default() };
                    match s3.store.put_opts(&key, PutPayload::from(bytes), options).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                        Err(e) => Err(object_err("creating", &key)(e)),
                    }
                })?
            }
        }
    }

    /// Hex SHA-256 and size of `relative`'s bytes.
    pub fn sha256(&self, relative: &str) -> Result<(String, u64), ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => crate::manifest::file_sha256(&root.join(relative)),
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let key = s3.key(relative);
                crate::delta::block_on(async move {
                    let mut stream = s3.store.get(&key).await.map_err(object_err("reading", &key))?.into_stream();
                    let (mut hasher, mut bytes) = (Sha256::new(), 0u64);
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(object_err("reading", &key))?;
                        hasher.update(&chunk);
                        bytes += chunk.len() as u64;
                    }
                    Ok((hex::encode(hasher.finalize()), bytes))
                })?
            }
        }
    }

    /// Remove `relative` (gone already is fine).
    pub fn delete(&self, relative: &str) -> Result<(), ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let path = root.join(relative);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &path)(e)),
                    _ => Ok(()),
                }
            }
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let key = s3.key(relative);
                crate::delta::block_on(async move {
                    match s3.store.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(object_err("removing", &key)(e)),
                    }
                })?
            }
        }
    }

    /// Upload the local file `file` to `relative` (object storage; a local root copies).
    pub fn upload(&self, file: &Path, relative: &str) -> Result<(), ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let target = root.join(relative);
                std::fs::copy(file, &target).map(drop).map_err(io_err("copying into", &target))
            }
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let key = s3.key(relative);
                let file = file.to_path_buf();
                crate::delta::block_on(async move {
                    let mut source = tokio::fs::File::open(&file).await.map_err(io_err("opening", &file))?;
                    // Parts of 10 MB above that size, one put below it.
                    let mut upload = object_store::buffered::BufWriter::with_capacity(s3.store.clone(), key.clone(), 10 << 20);
                    tokio::io::copy(&mut source, &mut upload).await.map_err(io_err("uploading", &file))?;
                    tokio::io::AsyncWriteExt::shutdown(&mut upload).await.map_err(io_err("uploading", &file))?;
                    Ok(())
                })?
            }
        }
    }

    /// Copy `from` to `to`, both under the root (a server-side copy on object storage).
    pub fn copy(&self, from: &str, to: &str) -> Result<(), ArchiveError> {
        match self {
            ArchiveRoot::Local(root) => {
                let target = root.join(to);
                std::fs::copy(root.join(from), &target).map(drop).map_err(io_err("copying into", &target))
            }
            ArchiveRoot::S3(s3) => {
                let s3 = s3.clone();
                let (from, to) = (s3.key(from), s3.key(to));
                crate::delta::block_on(async move { s3.store.copy(&from, &to).await.map_err(object_err("copying into", &to)) })?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_root_creates_once_lists_reads_and_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = ArchiveRoot::from(dir.path());
        assert!(root.create("_manifest/1.entry", b"first".to_vec()).expect("create"));
        assert!(!root.create("_manifest/1.entry", b"second".to_vec()).expect("create again"));
        assert_eq!(&root.read("_manifest/1.entry").expect("read")[..], b"first");
        assert_eq!(root.list("_manifest").expect("list"), vec![("_manifest/1.entry".to_string(), 5)]);
        assert_eq!(root.sha256("_manifest/1.entry").expect("hash").0, hex::encode(Sha256::digest(b"first")));
        std::fs::create_dir_all(dir.path().join("login/_delta_log")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("login/date=2026-09-01")).expect("mkdir");
        std::fs::write(dir.path().join("login/_delta_log/0.checkpoint.parquet"), b"x").expect("write");
        std::fs::write(dir.path().join("login/date=2026-09-01/part-1.parquet"), b"x").expect("write");
        assert_eq!(root.data_files("login").expect("files"), vec!["login/date=2026-09-01/part-1.parquet".to_string()]);
    }

    #[test]
    fn only_directories_and_s3_urls_are_roots() {
        assert!(matches!("/var/archive".parse::<ArchiveRoot>(), Ok(ArchiveRoot::Local(_))));
        let err = "gs://bucket/x".parse::<ArchiveRoot>().expect_err("gs is not supported");
        assert!(err.to_string().contains("only local directories and s3:// URLs"), "{err}");
        let err = "s3:///no-bucket".parse::<ArchiveRoot>().expect_err("no bucket");
        assert!(err.to_string().contains("no bucket"), "{err}");
    }

    #[test]
    fn keys_sit_under_the_prefix_and_back() {
        let root = S3Root::connect("s3://bucket/tenants/a/").expect("connect");
        assert_eq!(root.url.as_str(), "s3://bucket/tenants/a/");
        let key = root.key("login/date=2026-09-01/part-1.parquet");
        assert_eq!(key.as_ref(), "tenants/a/login/date=2026-09-01/part-1.parquet");
        assert_eq!(root.relative(&key), "login/date=2026-09-01/part-1.parquet");
        let bare = S3Root::connect("s3://bucket").expect("connect");
        assert_eq!(bare.key("_manifest").as_ref(), "_manifest");
    }
}
