//! `/metrics` over HTTP or HTTPS for Prometheus: a small server on its own thread.
//!
//! Scrapes are a few requests a minute, so one thread answering one
//! connection at a time is enough; every read has a timeout and a size cap so
//! a stuck or hostile client cannot wedge it. `GET /metrics` answers the text
//! exposition format of [`crate::internal_events::REGISTRY`]; `GET /` a pointer.
//! The series name licenses with critical findings, so off a private network serve them over
//! TLS (`--metrics-tls-cert`/`--metrics-tls-key`, optionally `--metrics-client-ca` for mutual
//! TLS) and/or behind a bearer token (`--metrics-token-file`, the file Prometheus's
//! `authorization.credentials_file` reads).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::{Encoder, TextEncoder};
use sha2::{Digest, Sha256};

use crate::internal_events::HttpRequestRefused;
use crate::tls::{TlsFiles, Transport};

/// How often, and how patiently, a daemon that produces asks whether a broker answers.
const BROKER_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const BROKER_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Keep `/readyz`'s `kafka` check up to date for a daemon that produces (the intake, a
/// following collector): ready while a broker answers a metadata request, asked every 5 s on a
/// thread of its own until `stop`. The caller lists `kafka` among its expected checks.
pub fn watch_broker(producer: seedwatch_kafka::Producer, stop: Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    thread::Builder::new().name("seedwatch-broker-watch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match producer.reachable(BROKER_CHECK_TIMEOUT) {
                Ok(()) => crate::internal_events::ComponentReady { check: "kafka" }.emit(),
                Err(e) => {
                    let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                    crate::internal_events::ComponentNotReady { check: "kafka", why }.emit();
                }
            }
            let next = std::time::Instant::now() + BROKER_CHECK_INTERVAL;
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < next {
                thread::sleep(Duration::from_millis(200));
            }
        }
    })
}

/// Longest request head accepted (request line and headers).
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// How the metrics listener is reached and who may scrape it.
#[derive(Debug, Clone, Default)]
pub struct MetricsListener {
    /// TLS certificate, key and optional client CA; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// A file (mode 0600) holding the bearer token a scrape must send.
    pub token_file: Option<PathBuf>,
}

struct Guard {
    tls: Option<Arc<rustls::ServerConfig>>,
    /// SHA-256 of the token: compared digest to digest, so the comparison time says nothing
    /// of the token.
    token_sha256: Option<[u8; 32]>,
}

/// Bind `addr` (e.g. `127.0.0.1:9464`, port 0 for any) and serve on a background thread.
/// Returns the bound address and the URL of `/metrics`. Bad TLS or token files are an error
/// here, before anything is served.
pub fn serve(addr: &str, listener: &MetricsListener) -> Result<(SocketAddr, String)> {
    let guard = Guard {
        tls: listener.tls.as_ref().map(crate::tls::server_config).transpose().context("--metrics-tls-cert/--metrics-tls-key")?,
        token_sha256: match &listener.token_file {
            Some(path) => Some(Sha256::digest(crate::secrets::read_private_text(path, "the metrics bearer token")?.as_bytes()).into()),
            None => None,
        },
    };
    let socket = TcpListener::bind(addr).with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = socket.local_addr()?;
    let tls = guard.tls.is_some();
    let url = format!("{}://{bound}/metrics", if tls { "https" } else { "http" });
    thread::Builder::new().name("seedwatch-metrics".into()).spawn(move || {
        for stream in socket.incoming() {
            match stream {
                Ok(stream) => {
                    let peer = stream.peer_addr().ok();
                    if let Err(e) = answer(stream, &guard) {
                        if crate::tls::is_handshake_error(&e) {
                            HttpRequestRefused { listener: "metrics", reason: "tls_handshake", peer, detail: &e.to_string() }.emit();
                        } else {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "accepting a metrics connection failed"),
            }
        }
    })?;
    tracing::info!(address = %bound, tls, "serving /metrics");
    Ok((bound, url))
}

fn answer(stream: std::net::TcpStream, guard: &Guard) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let peer = stream.peer_addr().ok();
    let mut reader = BufReader::new(Transport::new(stream, guard.tls.as_ref())?.take(MAX_HEAD_BYTES as u64 + 1));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers (bounded) for Authorization; the request has no body we care about.
    let mut head = request_line.len();
    let mut authorization = None::<String>;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head += n;
        if n == 0 || line == "\r\n" || line == "\n" || head > MAX_HEAD_BYTES {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let mut stream = reader.into_inner().into_inner();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let authorized = guard.token_sha256.is_none_or(|expected| {
        let presented = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))).map(str::trim);
        presented.is_some_and(|token| <[u8; 32]>::from(Sha256::digest(token.as_bytes())) == expected)
    });
    let (status, content_type, body) = match (method, path) {
        (_, _) if head > MAX_HEAD_BYTES => ("431 Request Header Fields Too Large", "text/plain", b"request head too large\n".to_vec()),
        // Liveness and readiness (Kubernetes probes): no token needed, they reveal nothing.
        ("GET" | "HEAD", "/healthz") => ("200 OK", "text/plain", b"ok\n".to_vec()),
        ("GET" | "HEAD", "/readyz") => match crate::internal_events::readiness() {
            Ok(()) => ("200 OK", "text/plain", b"ready\n".to_vec()),
            Err(waiting) => {
                let why: Vec<String> = waiting.iter().map(|(check, why)| format!("{check}: {why}")).collect();
                ("503 Service Unavailable", "text/plain", format!("not ready: {}\n", why.join("; ")).into_bytes())
            }
        },
        (_, "/metrics") if !authorized => {
            HttpRequestRefused { listener: "metrics", reason: "unauthorized", peer, detail: "no or a wrong bearer token" }.emit();
            ("401 Unauthorized", "text/plain", b"a bearer token is required (Authorization: Bearer ...)\n".to_vec())
        }
        ("GET" | "HEAD", "/metrics") => {
            let encoder = TextEncoder::new();
            let mut body = Vec::new();
            match encoder.encode(&crate::internal_events::REGISTRY.gather(), &mut body) {
                Ok(()) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("encoding metrics: {e}\n").into_bytes()),
            }
        }
        ("GET" | "HEAD", "/") => ("200 OK", "text/plain", b"seedwatch: /metrics, /healthz, /readyz\n".to_vec()),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", b"not found: try /metrics\n".to_vec()),
        _ => ("405 Method Not Allowed", "text/plain", b"only GET\n".to_vec()),
    };
    let challenge = if status.starts_with("401") { "WWW-Authenticate: Bearer realm=\"seedwatch metrics\"\r\n" } else { "" };
    let header = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{challenge}\r\n", body.len());
    stream.write_all(header.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request.as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        crate::internal_events::RulesLoaded { absence_limits: &[("sync.lag", "CA", 3_600_000)], rules: &["sync.lag"], licenses: &[] }.emit();
        let (addr, url) = serve("127.0.0.1:0", &MetricsListener::default()).expect("serve");
        assert_eq!(url, format!("http://{addr}/metrics"));
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("seedwatch_absence_limit_seconds{rule=\"sync.lag\",state=\"CA\"} 3600"), "{ok}");
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // Past the cap the server answers 431 and closes without reading the rest, so the
        // client may see the answer or a reset; it must never see metrics.
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let mut s = TcpStream::connect(addr).expect("connect");
        let _ = s.write_all(huge.as_bytes());
        let mut out = String::new();
        match s.read_to_string(&mut out) {
            Ok(_) => assert!(out.starts_with("HTTP/1.1 431"), "{out}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_bearer_token_guards_metrics_and_its_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("metrics.token");
        std::fs::write(&token_file, "scrape-me\n").expect("write");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let listener = MetricsListener { tls: None, token_file: Some(token_file.clone()) };
        let refused = serve("127.0.0.1:0", &listener).expect_err("a token file others can read");
        assert!(format!("{refused:#}").contains("permissions 604 let others read the metrics bearer token"), "{refused:#}");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let (addr, _) = serve("127.0.0.1:0", &listener).expect("serve");
        let none = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(none.starts_with("HTTP/1.1 401") && none.contains("WWW-Authenticate: Bearer"), "{none}");
        assert!(get(addr, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer scrape-you\r\n\r\n").starts_with("HTTP/1.1 401"));
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nauthorization: Bearer scrape-me\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("seedwatch_http_requests_refused_total{listener=\"metrics\",reason=\"unauthorized\"}"), "{ok}");
    }
}
