//! TLS for seedwatch's HTTP listeners (the intake and `/metrics`), with rustls.
//!
//! The certificate and key are re-read when their files change (checked at most once a
//! second, at a handshake), so a renewed certificate (cert-manager, certbot) is served without a
//! restart; a renewal that cannot be read keeps the old pair and is counted. With a client CA,
//! only clients presenting a certificate it signed complete the handshake (mutual TLS, as a
//! Prometheus `tls_config` with `cert_file`/`key_file` does).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::internal_events::{TlsCertificateReloaded, TlsReloadFailed};

/// How often, at most, the certificate files are looked at for a change.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Where a listener's certificate, key and (optionally) client CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); refused when others can read it.
    pub key: PathBuf,
    /// PEM CA certificates: clients must present a certificate one of them signed.
    pub client_ca: Option<PathBuf>,
}

/// The server side of TLS for one listener, checked at start (a bad file is an error then,
/// not at the first client).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let resolver = ReloadingCert::load(files, Arc::clone(&provider))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}: reading the client CA", ca.display()))? {
                let cert = cert.with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
                roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
            }
            anyhow::ensure!(!roots.is_empty(), "{}: holds no certificate", ca.display());
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().with_context(|| format!("{}: client verification", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate and key, re-read when their files change.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The files' modification times when last read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
    pair: Arc<CertifiedKey>,
}

impl ReloadingCert {
    fn load(files: &TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self> {
        let stamp = stamps(&files.cert, &files.key);
        let pair = load_pair(&files.cert, &files.key, &provider)?;
        Ok(Self { cert: files.cert.clone(), key: files.key.clone(), provider, loaded: Mutex::new(Loaded { stamp, checked: Instant::now(), pair }) })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.checked.elapsed() >= RECHECK_EVERY {
            loaded.checked = Instant::now();
            let stamp = stamps(&self.cert, &self.key);
            if stamp != loaded.stamp {
                // A renewal half written reads as an error now and as a change again once done.
                loaded.stamp = stamp;
                match load_pair(&self.cert, &self.key, &self.provider) {
                    Ok(pair) => {
                        loaded.pair = pair;
                        TlsCertificateReloaded { cert: &self.cert }.emit();
                    }
                    Err(error) => TlsReloadFailed { cert: &self.cert, error: error.as_ref() }.emit(),
                }
            }
        }
        Some(Arc::clone(&loaded.pair))
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}: reading the TLS certificate", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{}: holds no certificate", cert.display());
    let key_pem = crate::secrets::read_private(key, "the TLS private key")?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let signing = provider.key_provider.load_private_key(key_der).with_context(|| format!("{}: unusable private key", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().with_context(|| format!("{} and {} are not a pair", cert.display(), key.display()))?;
    Ok(Arc::new(pair))
}

/// One accepted connection, plain or TLS; reads and writes go through it either way.
#[derive(Debug)]
pub enum Transport {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS; the handshake happens at the first read.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Transport {
    /// Wrap an accepted stream.
    pub fn new(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>) -> std::io::Result<Self> {
        match tls {
            None => Ok(Self::Plain(tcp)),
            Some(config) => {
                let connection = ServerConnection::new(Arc::clone(config)).map_err(std::io::Error::other)?;
                Ok(Self::Tls(Box::new(StreamOwned::new(connection, tcp))))
            }
        }
    }

    /// The socket underneath, for timeouts.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(stream) => &stream.sock,
        }
    }

    /// Finish the reply: a TLS close_notify, so the client knows the body is whole.
    pub fn close(mut self) -> std::io::Result<()> {
        if let Self::Tls(stream) = &mut self {
            stream.conn.send_close_notify();
        }
        self.flush()
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(stream) => stream.flush(),
        }
    }
}

/// Whether a read error is a failed TLS handshake (a client speaking plain HTTP to a TLS
/// port, an untrusted or missing client certificate), as opposed to a slow or gone client.
pub fn is_handshake_error(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData && error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}
