//! `seedwatch collect http`: an intake endpoint for integrations that push.
//!
//! `POST /v1/events` with an NDJSON body (optionally `Content-Encoding: gzip`)
//! and `Authorization: Bearer <token>`. Each token is configured with the
//! licenses it may send for. Answers:
//! - 202 with a per-line report once Kafka acknowledged the events and the
//!   dead letters (bad lines are dead-lettered, never dropped);
//! - 401 without a known token, 403 when a line names a license the token is
//!   not scoped to (nothing of that request is produced), 413 past the body
//!   limit, 411 without a length, 400 for a body that is not gzip when it says
//!   so, 404/405 elsewhere, 503 when Kafka did not acknowledge.
//!
//! Requests are served by a small fixed pool of threads, one connection at a time each. Every
//! request has a deadline for the whole of it (not only per read), so a client trickling its
//! head holds a worker for that long at most; when every worker is busy and the queue is full,
//! a new connection is answered 503 at once rather than blocking the accept loop, which keeps
//! answering SIGTERM. On SIGTERM, requests still being read are dropped unanswered (the client
//! sends again; nothing of them was acknowledged) and the server stops within about a second.
//!
//! Limits per request, each answered 413 with nothing produced: the body's size (compressed and
//! inflated), its inflation ratio, its lines and its dead letters; the 202 report lists at most
//! [`MAX_REPORTED_ERRORS`] bad lines.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use seedwatch_ingest::source::LineSpan;
use seedwatch_ingest::{DecodeStats, Decoder, Fingerprinter, LineChunk, Redactor};
use seedwatch_kafka::{KafkaConfig, Producer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::collect::{produce_chunk, Admission};
use crate::internal_events::HttpRequestRefused;
use crate::tls::Transport;

const MAX_HEAD_BYTES: usize = 16 * 1024;
const WORKERS: usize = 4;
/// Bad lines listed in a 202 report (the count covers them all).
pub const MAX_REPORTED_ERRORS: usize = 100;
/// How often a worker reading a request looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// What one request may hold. A 10 KB gzip body of newlines used to become 10 M dead letters
/// and a 10 M-entry reply.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body, compressed or inflated (bytes).
    pub max_body_bytes: usize,
    /// Largest inflated-to-compressed ratio of a gzip body.
    pub max_inflate_ratio: usize,
    /// Most lines in one body.
    pub max_lines: usize,
    /// Most bad lines (dead letters) in one body.
    pub max_dead_letters: usize,
    /// Time to receive a whole request, head and body.
    pub deadline: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_body_bytes: 10 * 1024 * 1024, max_inflate_ratio: 100, max_lines: 100_000, max_dead_letters: 1_000, deadline: Duration::from_secs(30) }
    }
}

/// The intake's token file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Who may send.
    pub tokens: Vec<TokenEntry>,
}

/// One bearer token and what it may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (logs and metrics name the sender by this, never by the token).
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`): the file never holds the token itself.
    pub sha256: String,
    /// Licenses this token may send events for; `["*"]` for any.
    pub licenses: Vec<String>,
    /// Locations it may send for (a line without one names its license); none: any
    /// location of its licenses.
    #[serde(default)]
    pub locations: Vec<String>,
}

impl TokenFile {
    /// Load and check `path`; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: TokenFile = serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            anyhow!("{}{at}: {e}", path.display())
        })?;
        for (i, t) in file.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(anyhow!("{}: tokens[{i}] ({}): sha256 must be 64 hex digits", path.display(), t.name));
            }
            if t.licenses.is_empty() {
                return Err(anyhow!("{}: tokens[{i}] ({}): licenses is empty (use [\"*\"] for any)", path.display(), t.name));
            }
        }
        if file.tokens.is_empty() {
            return Err(anyhow!("{}: no tokens: every request would be refused", path.display()));
        }
        Ok(file)
    }

    /// The entry whose hash matches `token`.
    fn find(&self, token: &str) -> Option<&TokenEntry> {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        // Compare every entry in full, so timing says nothing about which prefix matched.
        let mut found = None;
        for t in &self.tokens {
            let same = t.sha256.to_ascii_lowercase().bytes().zip(digest.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same && found.is_none() {
                found = Some(t);
            }
        }
        found
    }
}

/// What `seedwatch collect http` needs.
#[derive(Debug, Clone)]
pub struct IntakeOptions {
    /// Address to listen on.
    pub listen: String,
    /// Token file.
    pub tokens: PathBuf,
    /// What one request may hold.
    pub limits: RequestLimits,
    /// The cluster.
    pub kafka: KafkaConfig,
    /// Fingerprint secret.
    pub fingerprint_key: PathBuf,
    /// The operator's locations: a line whose location or state is not its license's is a
    /// dead letter (`location_mismatch`).
    pub tenancy: Option<Arc<seedwatch_ingest::Tenancy>>,
    /// Serve HTTPS with this certificate and key (and client CA): `None`, plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
}

struct Shared {
    tokens: TokenFile,
    redactor: Redactor,
    producer: Producer,
    runtime: tokio::runtime::Runtime,
    limits: RequestLimits,
    stats: Mutex<DecodeStats>,
    stop: Arc<AtomicBool>,
    tenancy: Option<Arc<seedwatch_ingest::Tenancy>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Bind, then serve on worker threads until `stop` is set. Returns the bound
/// address through `bound` as soon as it listens.
pub fn serve(opts: &IntakeOptions, stop: Arc<AtomicBool>, bound: impl FnOnce(SocketAddr)) -> Result<()> {
    let tokens = TokenFile::load(&opts.tokens)?;
    let tls = opts.tls.as_ref().map(crate::tls::server_config).transpose().context("--tls-cert/--tls-key")?;
    let redactor = Redactor::new(Fingerprinter::load(&opts.fingerprint_key)?);
    let producer = Producer::new(&opts.kafka)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    crate::internal_events::ReadinessExpected { checks: &["listening", "kafka"] }.emit();
    let listener = TcpListener::bind(&opts.listen).with_context(|| format!("listening on {}", opts.listen))?;
    crate::internal_events::ComponentReady { check: "listening" }.emit();
    listener.set_nonblocking(true)?;
    bound(listener.local_addr()?);
    let shared = Arc::new(Shared { tokens, redactor, producer, runtime, limits: opts.limits, stats: Mutex::new(DecodeStats::default()), stop: Arc::clone(&stop), tenancy: opts.tenancy.clone(), tls });
    // Ready only while a broker answers: a 202 means Kafka acknowledged, so an intake that
    // cannot reach one should get no traffic from its Service.
    crate::metrics_server::watch_broker(shared.producer.clone(), Arc::clone(&stop))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<TcpStream>(WORKERS * 4);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let (rx, shared) = (Arc::clone(&rx), Arc::clone(&shared));
        workers.push(std::thread::Builder::new().name(format!("seedwatch-intake-{i}")).spawn(move || loop {
            let next = match rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(stream) = next else { return };
            if let Err(e) = answer(stream, &shared) {
                tracing::debug!(error = %e, "intake connection ended");
            }
        })?);
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                match tx.try_send(stream) {
                    Ok(()) => {}
                    // Every worker busy and the queue full: say so now rather than block here.
                    // (Over TLS an answer needs a handshake, which could stall this loop: the
                    // connection is closed instead, and the client sends again as after a 503.)
                    Err(std::sync::mpsc::TrySendError::Full(stream)) if shared.tls.is_some() => {
                        tracing::warn!("intake busy: every worker is reading a request; connection closed");
                        drop(stream);
                    }
                    Err(std::sync::mpsc::TrySendError::Full(stream)) => {
                        tracing::warn!("intake busy: every worker is reading a request; answered 503");
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = respond(Transport::Plain(stream), &Response { extra: "Retry-After: 5\r\n", ..error("503 Service Unavailable", "busy, send again") });
                    }
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => tracing::warn!(error = %e, "accepting a connection"),
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// A reply to a request.
#[derive(Debug)]
pub struct Response {
    status: &'static str,
    body: String,
    extra: &'static str,
}

fn json(status: &'static str, body: serde_json::Value) -> Response {
    Response { status, body: body.to_string(), extra: "" }
}

fn error(status: &'static str, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }))
}

/// Reads a request until its deadline or the server's stop, whichever comes first, however
/// slowly the client sends: each read waits at most until then.
struct DeadlineReader<'a> {
    stream: Transport,
    deadline: std::time::Instant,
    stop: &'a AtomicBool,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                // Not `Interrupted`: `read_line` retries that kind forever.
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the intake is stopping"));
            }
            let left = self.deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request was not received within its deadline"));
            }
            self.stream.tcp().set_read_timeout(Some(left.min(STOP_CHECK)))?;
            match self.stream.read(buf) {
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                other => return other,
            }
        }
    }
}

fn answer(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let peer = stream.peer_addr().ok();
    let deadline = std::time::Instant::now() + shared.limits.deadline;
    let mut reader = BufReader::new(DeadlineReader { stream: Transport::new(stream, shared.tls.as_ref())?, deadline, stop: &shared.stop });
    let response = match handle(&mut reader, shared) {
        Ok(r) => r,
        Err(e) if shared.stop.load(Ordering::Relaxed) => return Err(std::io::Error::other(e)),
        // No TLS session to answer over: a plain-HTTP client on the TLS port, or no or an
        // untrusted client certificate.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(crate::tls::is_handshake_error) => {
            HttpRequestRefused { listener: "intake", reason: "tls_handshake", peer, detail: &e.to_string() }.emit();
            return Ok(());
        }
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) => {
            tracing::warn!("intake request not received within its deadline; answered 408");
            error("408 Request Timeout", &format!("the request was not received within {} s", shared.limits.deadline.as_secs()))
        }
        Err(e) => error("400 Bad Request", &e.to_string()),
    };
    respond(reader.into_inner().stream, &response)
}

fn respond(mut stream: Transport, response: &Response) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n{}",
        response.status,
        response.body.len(),
        response.extra,
        response.body
    )?;
    stream.close()
}

fn handle(reader: &mut BufReader<DeadlineReader<'_>>, shared: &Shared) -> Result<Response> {
    // The head: request line and headers, capped.
    let mut head = 0usize;
    let mut request_line = String::new();
    head += reader.by_ref().take(MAX_HEAD_BYTES as u64).read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (mut length, mut gzip, mut authorization) = (None::<usize>, false, None::<String>);
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(MAX_HEAD_BYTES as u64).read_line(&mut line)?;
        head += n;
        if head > MAX_HEAD_BYTES {
            return Ok(error("431 Request Header Fields Too Large", "request head too large"));
        }
        let line = line.trim_end();
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse().map_err(|_| anyhow!("bad Content-Length"))?),
            "content-encoding" => match value.to_ascii_lowercase().as_str() {
                "gzip" => gzip = true,
                "identity" => {}
                other => return Ok(error("415 Unsupported Media Type", &format!("Content-Encoding {other} is not supported (gzip or identity)"))),
            },
            "authorization" => authorization = Some(value.to_string()),
            _ => {}
        }
    }
    if target.split('?').next() != Some("/v1/events") {
        return Ok(error("404 Not Found", "the intake endpoint is POST /v1/events"));
    }
    if method != "POST" {
        return Ok(Response { extra: "Allow: POST\r\n", ..error("405 Method Not Allowed", "use POST") });
    }
    let unauthorized = |message: &str| Response { extra: "WWW-Authenticate: Bearer realm=\"seedwatch\"\r\n", ..error("401 Unauthorized", message) };
    let Some(token) = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))) else {
        return Ok(unauthorized("an Authorization: Bearer token is required"));
    };
    let Some(sender) = shared.tokens.find(token.trim()) else {
        return Ok(unauthorized("unknown token"));
    };
    let Some(length) = length else { return Ok(error("411 Length Required", "Content-Length is required")) };
    let limits = &shared.limits;
    if length > limits.max_body_bytes {
        return Ok(error("413 Payload Too Large", &format!("the body is {length} bytes; the limit is {}", limits.max_body_bytes)));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let chunk = match body_lines(body, gzip, limits, &sender.name) {
        Ok(chunk) => chunk,
        Err(refused) => return Ok(refused),
    };
    let scope: BTreeSet<&str> = sender.licenses.iter().map(String::as_str).collect();
    let places: BTreeSet<&str> = sender.locations.iter().map(String::as_str).collect();
    let any = scope.contains("*");
    let allowed = |license: &str, location: &str| (any || scope.contains(license)) && (places.is_empty() || places.contains(location));
    let mut decoder = Decoder::new(shared.redactor.clone()).with_max_clock_skew(crate::pipeline::DEFAULT_MAX_CLOCK_SKEW_MS);
    if let Some(tenancy) = &shared.tenancy {
        decoder = decoder.with_tenancy(Arc::clone(tenancy));
    }
    let mut stats = DecodeStats::default();
    let outcome = match produce_chunk(&chunk, &mut decoder, &shared.redactor, &shared.producer, &shared.runtime, &mut stats, Some(&Admission { allowed: &allowed, max_dead_letters: limits.max_dead_letters })) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(sender = %sender.name, error = %e, "intake batch not acknowledged by Kafka");
            return Ok(error("503 Service Unavailable", &format!("not stored, send again: {e}")));
        }
    };
    if !outcome.forbidden.is_empty() {
        tracing::warn!(sender = %sender.name, lines = outcome.forbidden.len(), "intake refused events for licenses outside the token's scope");
        let lines: Vec<_> = outcome.forbidden.iter().map(|(line, license, location)| serde_json::json!({ "line": line, "license": license, "location": location })).collect();
        return Ok(json("403 Forbidden", serde_json::json!({ "error": "this token may not send events for these licenses or locations; nothing was accepted", "lines": lines })));
    }
    if let Some(bad) = outcome.too_many_dead {
        tracing::warn!(sender = %sender.name, bad, "intake refused a request with too many bad lines");
        return Ok(error("413 Payload Too Large", &format!("{bad} of the lines are bad; the limit is {} per request; nothing was accepted", limits.max_dead_letters)));
    }
    if let Ok(mut total) = shared.stats.lock() {
        total.merge(&stats);
    }
    let errors: Vec<_> = outcome.dead.iter().take(MAX_REPORTED_ERRORS).map(|(line, code, reason)| serde_json::json!({ "line": line, "reason_code": code, "reason": reason })).collect();
    let accepted = stats.events_total();
    let dead_lettered = outcome.dead.len();
    tracing::info!(sender = %sender.name, lines = stats.lines, accepted, dead_lettered, "intake batch acknowledged");
    Ok(json(
        "202 Accepted",
        serde_json::json!({ "lines": stats.lines, "accepted": accepted, "dead_lettered": dead_lettered, "errors": errors, "errors_truncated": dead_lettered > errors.len() }),
    ))
}

/// A request body as lines for the decoder, inflated when `gzip`, or the reply refusing it:
/// the limits hold after inflation too, so a small gzip bomb is refused, not inflated. Every
/// gzip member is read (a body may be several streams one after another); bytes after the
/// last that are not another member make it invalid. `sender` names the chunk's source.
pub fn body_lines(body: Vec<u8>, gzip: bool, limits: &RequestLimits, sender: &str) -> Result<LineChunk, Response> {
    let mut body = body;
    if body.len() > limits.max_body_bytes {
        return Err(error("413 Payload Too Large", &format!("the body is {} bytes; the limit is {}", body.len(), limits.max_body_bytes)));
    }
    if gzip {
        let most = limits.max_body_bytes.min(body.len().saturating_mul(limits.max_inflate_ratio).max(4096));
        let mut inflated = Vec::new();
        let read = flate2::read::MultiGzDecoder::new(body.as_slice()).take(most as u64 + 1).read_to_end(&mut inflated);
        match read {
            Ok(n) if n > most && most < limits.max_body_bytes => {
                return Err(error("413 Payload Too Large", &format!("the body inflates more than {}-fold", limits.max_inflate_ratio)));
            }
            Ok(n) if n > most => return Err(error("413 Payload Too Large", &format!("the body inflates past the limit of {} bytes", limits.max_body_bytes))),
            Ok(_) => body = inflated,
            Err(e) => return Err(error("400 Bad Request", &format!("the body is not valid gzip: {e}"))),
        }
    }
    let lines = memchr::memchr_iter(b'\n', &body).count() + usize::from(body.last().is_some_and(|b| *b != b'\n'));
    if lines > limits.max_lines {
        return Err(error("413 Payload Too Large", &format!("the body holds {lines} lines; the limit is {} per request", limits.max_lines)));
    }
    Ok(to_chunk(&body, sender))
}

/// The body's lines as a chunk; the source name says which sender sent them.
fn to_chunk(body: &[u8], sender: &str) -> LineChunk {
    let mut chunk = LineChunk::new();
    chunk.source = Arc::from(format!("http:{sender}"));
    chunk.data.reserve(body.len());
    let mut number = 0u64;
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if body.is_empty() {
        return chunk;
    }
    for line in body.split(|b| *b == b'\n') {
        number += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let start = chunk.data.len();
        let kept = &line[..line.len().min(seedwatch_schemas::fields::MAX_LINE_BYTES + 1)];
        chunk.data.extend_from_slice(kept);
        chunk.lines.push(LineSpan { start, end: chunk.data.len(), number, original_len: line.len() });
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked_and_hold_only_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.yaml");
        let hash = hex::encode(Sha256::digest(b"s3cret"));
        std::fs::write(&path, format!("tokens:\n  - name: flowhub\n    sha256: {hash}\n    licenses: [L1]\n")).expect("write");
        let file = TokenFile::load(&path).expect("load");
        assert_eq!(file.find("s3cret").map(|t| t.name.as_str()), Some("flowhub"));
        assert!(file.find("s3cret ").is_none() && file.find("").is_none());
        std::fs::write(&path, "tokens:\n  - name: x\n    sha256: abc\n    licenses: [L1]\n").expect("write");
        assert!(TokenFile::load(&path).expect_err("short hash").to_string().contains("tokens[0] (x): sha256"));
        std::fs::write(&path, format!("tokens:\n  - name: x\n    sha256: {hash}\n    license: [L1]\n")).expect("write");
        let err = TokenFile::load(&path).expect_err("unknown field").to_string();
        assert!(err.contains("tokens.yaml:") && err.contains("license"), "{err}");
    }

    #[test]
    fn bodies_split_into_numbered_lines() {
        let chunk = to_chunk(b"a\r\nb\n\nc\n", "s");
        let lines: Vec<_> = chunk.lines.iter().map(|s| (s.number, String::from_utf8_lossy(chunk.line(s)).into_owned())).collect();
        assert_eq!(lines, vec![(1, "a".into()), (2, "b".into()), (3, String::new()), (4, "c".into())]);
        assert_eq!(&*chunk.source, "http:s");
    }
}
