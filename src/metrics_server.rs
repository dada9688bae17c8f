//! `/metrics` over HTTP for Prometheus: a small server on its own thread.
//!
//! Scrapes are a few requests a minute, so one thread answering one
//! connection at a time is enough; every read has a timeout and a size cap so
//! a stuck or hostile client cannot wedge it. `GET /metrics` answers the text
//! exposition format of [`crate::internal_events::REGISTRY`]; `GET /` a pointer.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::{Encoder, TextEncoder};

/// Longest request head accepted (request line and headers).
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Bind `addr` (e.g. `127.0.0.1:9464`, port 0 for any) and serve on a
/// background thread. Returns the bound address.
pub fn serve(addr: &str) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    thread::Builder::new().name("seedwatch-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(e) = answer(stream) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "accepting a metrics connection failed"),
            }
        }
    })?;
    tracing::info!(address = %bound, "serving /metrics");
    Ok(bound)
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(std::io::Read::take(stream.try_clone()?, MAX_HEAD_BYTES as u64 + 1));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded); the request has no body we care about.
    let mut head = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head += n;
        if n == 0 || line == "\r\n" || line == "\n" || head > MAX_HEAD_BYTES {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        (_, _) if head > MAX_HEAD_BYTES => ("431 Request Header Fields Too Large", "text/plain", b"request head too large\n".to_vec()),
        ("GET" | "HEAD", "/metrics") => {
            let encoder = TextEncoder::new();
            let mut body = Vec::new();
            match encoder.encode(&crate::internal_events::REGISTRY.gather(), &mut body) {
                Ok(()) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("encoding metrics: {e}\n").into_bytes()),
            }
        }
        ("GET" | "HEAD", "/") => ("200 OK", "text/plain", b"seedwatch: metrics at /metrics\n".to_vec()),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", b"not found: try /metrics\n".to_vec()),
        _ => ("405 Method Not Allowed", "text/plain", b"only GET\n".to_vec()),
    };
    let header = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(header.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
        let addr = serve("127.0.0.1:0").expect("serve");
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
}
