//! Benchmark 5's intake row: how many lines per second one `collect http` replica takes in and
//! has acknowledged by Kafka (a 202 answers only after the broker acknowledged every line).
//! Posts the input file in bodies of `SEEDWATCH_BENCH_BODY_LINES` lines (default 5,000) from
//! `SEEDWATCH_BENCH_CLIENTS` concurrent senders (default 4, the intake's worker count), plain
//! and then gzip, and prints the rate of each. `benches/kafka.sh` starts the intake against the
//! same tansu as the other Kafka figures and runs this.
//!
//! Run: `SEEDWATCH_BENCH_INTAKE=http://HOST:PORT/v1/events SEEDWATCH_BENCH_TOKEN=... \
//!       SEEDWATCH_BENCH_INPUT=events.ndjson cargo bench --bench intake`

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Post every body from `clients` threads; returns the seconds from the first request to the
/// last 202. Any other answer stops the benchmark: a refused body would flatter the rate.
fn post_all(url: &str, token: &str, bodies: &[Vec<u8>], gzip: bool, clients: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(120))).build().into();
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut request = agent.post(url).header("Authorization", &format!("Bearer {token}")).header("Content-Type", "application/x-ndjson");
                    if gzip {
                        request = request.header("Content-Encoding", "gzip");
                    }
                    let response = request.send(&body[..]).unwrap_or_else(|e| panic!("POST {url}: {e}"));
                    assert_eq!(response.status().as_u16(), 202, "the intake refused a body");
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn main() {
    let url = std::env::var("SEEDWATCH_BENCH_INTAKE").expect("SEEDWATCH_BENCH_INTAKE=http://HOST:PORT/v1/events (see benches/kafka.sh)");
    let token = std::env::var("SEEDWATCH_BENCH_TOKEN").expect("SEEDWATCH_BENCH_TOKEN=the intake token (see benches/kafka.sh)");
    let input = std::env::var("SEEDWATCH_BENCH_INPUT").expect("SEEDWATCH_BENCH_INPUT=events.ndjson (see benches/kafka.sh)");
    let body_lines: usize = env_or("SEEDWATCH_BENCH_BODY_LINES", 5_000);
    let clients: usize = env_or("SEEDWATCH_BENCH_CLIENTS", 4);
    let data = std::fs::read(&input).unwrap_or_else(|e| panic!("reading {input}: {e}"));
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();

    let plain: Vec<Vec<u8>> = lines
        .chunks(body_lines.max(1))
        .map(|chunk| {
            let mut body = Vec::with_capacity(chunk.iter().map(|l| l.len() + 1).sum());
            for line in chunk {
                body.extend_from_slice(line);
                body.push(b'\n');
            }
            body
        })
        .collect();
    let gzipped: Vec<Vec<u8>> = plain
        .iter()
        .map(|body| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).expect("gzip in memory");
            e.finish().expect("gzip in memory")
        })
        .collect();

    let n = lines.len() as f64;
    let mb = data.len() as f64 / 1e6;
    for (name, bodies, gzip) in [("plain", &plain, false), ("gzip", &gzipped, true)] {
        let sent_mb = bodies.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
        let seconds = post_all(&url, &token, bodies, gzip, clients);
        println!(
            "intake/{name}: {} lines in {} bodies of {body_lines} from {clients} clients, {sent_mb:.0} MB sent, {seconds:.2} s: {:.0} lines/s, {:.1} MB/s of NDJSON",
            lines.len(),
            bodies.len(),
            n / seconds,
            mb / seconds
        );
    }
}
