//! A bare HTTP/1.0 client for the metrics endpoints and Prometheus' API (no HTTP crate in the tests).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// (status, body) of `GET path`, or `None` when nothing answers.
pub fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok())?;
    Some((status, body.to_string()))
}

/// The body of `GET path` once it answers `status`; fails after a minute, naming the last answer.
pub fn wait_for_status(addr: &str, path: &str, status: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match try_get(addr, path) {
            Some((s, body)) if s == status => return body,
            other => assert!(std::time::Instant::now() < deadline, "{path} never answered {status}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sum of a metric's samples in a text exposition whose labels contain every one of `labels`.
pub fn sum_of(scrape: &str, metric: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
