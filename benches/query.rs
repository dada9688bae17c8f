//! Benchmark 6: typical analyst SQL over a large archive (100 million events by default).
//!
//! Builds the archive once (cached: `SEEDWATCH_BENCH_DIR/query-archive-v2-N`, about 26 bytes per
//! event on disk) from synthetic login and API events that go through the real decoder and
//! `ArchiveWriter`, then times the analyst queries of `benches/queries.sql` through DataFusion: the first (cold
//! session) run and the best of three warm runs.
//!
//! Run: `cargo bench --bench query` (`SEEDWATCH_BENCH_QUERY_EVENTS` changes the 100 million,
//! `SEEDWATCH_BENCH_QUERY=top` runs only the queries whose name contains `top`).
//! Shape of the data: a multi-state operator over 120 days, 25% login events (5,000 users,
//! 50,000 source addresses, 4% failures), 75% API calls (2,000 integration keys).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use seedwatch_archive::query::{open_session, run_query};
use seedwatch_archive::{ArchiveWriter, Sink, WriterOptions};
use seedwatch_ingest::source::{LineChunk, LineSpan};
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use seedwatch_schemas::{EventBatch, Family, Table};

/// 2026-07-01T00:00:00Z; the data covers 120 days from here.
const START_MS: i64 = 1_782_864_000_000;
const SPAN_MS: i64 = 120 * 86_400_000;
const STATES: [&str; 6] = ["CA", "CO", "NV", "MI", "WA", "OR"];

/// The analyst queries, shared with `benches/query_duckdb.py`: (name, SQL) after each `-- name:` line.
fn queries() -> Vec<(&'static str, &'static str)> {
    include_str!("queries.sql")
        .split("-- name:")
        .skip(1)
        .filter_map(|block| block.split_once('\n'))
        .map(|(name, sql)| (name.trim(), sql.trim().trim_end_matches(';')))
        .collect()
}

/// A cheap deterministic mix of `i` (splitmix64), so the data has no period the queries could exploit.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn line(i: u64, n: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let h = mix(i);
    let time = START_MS + (i as i64).saturating_mul(SPAN_MS) / n as i64;
    let location = h % 200;
    let state = STATES[(location % STATES.len() as u64) as usize];
    let license = format!("LIC-{location:04}");
    let written = if h % 4 == 0 {
        let user = (h >> 8) % 5_000;
        // Skewed addresses: most logins come from a few store networks.
        let ip = if (h >> 24) % 10 < 7 { (h >> 32) % 400 } else { (h >> 32) % 50_000 };
        let outcome = if (h >> 40) % 100 < 4 { "failure" } else { "success" };
        write!(
            out,
            r#"{{"family":"login","license":"{license}","location":"store-{location}","mfa":true,"outcome":"{outcome}","src_ip":"10.{}.{}.{}","state":"{state}","system":"metrc","time":{time},"user":"user.{user:04}","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0"}}"#,
            ip >> 16,
            (ip >> 8) & 0xff,
            ip & 0xff
        )
    } else {
        let key = (h >> 8) % 2_000;
        let records = (h >> 20) % 400;
        let status = if (h >> 40) % 100 < 2 { 500 } else { 200 };
        write!(
            out,
            r#"{{"bytes":{},"endpoint":"/packages/v2/active","family":"api","integration":"treez","key_id":"treez-{key:04}","latency_ms":{},"license":"{license}","location":"store-{location}","method":"GET","records":{records},"src_ip":"192.0.2.{}","state":"{state}","status":{status},"system":"metrc","time":{time}}}"#,
            records * 180,
            (h >> 50) % 400,
            key % 250
        )
    };
    written.expect("writing to a Vec");
}

/// Build the archive at `root` from `n` synthetic events: one thread formats and decodes, this one writes.
fn build(root: &Path, n: u64) {
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Vec<EventBatch>>(4);
    let producer = std::thread::spawn(move || {
        let mut decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"bench-secret-0123456789").expect("fingerprinter")));
        let mut i = 0;
        while i < n {
            let mut chunk = LineChunk::new();
            while i < n && chunk.lines.len() < 64 * 1024 {
                let start = chunk.data.len();
                line(i, n, &mut chunk.data);
                chunk.lines.push(LineSpan { start, end: chunk.data.len(), number: i + 1, original_len: chunk.data.len() - start });
                i += 1;
            }
            let decoded = decoder.decode_chunk(&chunk, 0).expect("decode");
            assert!(decoded.dead_letters.is_none(), "bench lines must decode: {:?}", decoded.dead_letters);
            if tx.send(decoded.events).is_err() {
                return;
            }
        }
    });
    let mut writer = ArchiveWriter::open(root, WriterOptions::default()).expect("open the archive");
    let (mut written, mut since_commit, mut reported) = (0u64, 0u64, Instant::now());
    for events in rx {
        for batch in events {
            writer.write(Table::Events(batch.family), &batch.batch).expect("write");
            written += batch.batch.num_rows() as u64;
            since_commit += batch.batch.num_rows() as u64;
        }
        writer.flush_full().expect("flush");
        if since_commit >= 4_000_000 {
            writer.commit().expect("commit");
            since_commit = 0;
        }
        if reported.elapsed().as_secs() >= 10 {
            eprintln!("query: building the archive, {written} of {n} events ({:.0} k/s)", written as f64 / started.elapsed().as_secs_f64() / 1000.0);
            reported = Instant::now();
        }
    }
    writer.commit().expect("commit");
    producer.join().expect("the decoding thread");
    eprintln!("query: archive of {written} events built in {:.0} s", started.elapsed().as_secs_f64());
}

fn main() {
    let n: u64 = std::env::var("SEEDWATCH_BENCH_QUERY_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000_000);
    let work = std::env::var_os("SEEDWATCH_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/seedwatch-bench")
    });
    // v3: Delta tables, compacted (an archive cached by an older build has another layout).
    let root = work.join(format!("query-archive-v3-{n}"));
    let done = root.join("BUILT");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&root);
        build(&root, n);
        let written: u64 = seedwatch_archive::writer::table_sizes(&root).expect("sizes").iter().map(|(_, b, _)| b).sum();
        println!("query: archive of {n} events as written, {:.2} GB on disk, {:.1} bytes/event", written as f64 / 1e9, written as f64 / n as f64);
        // The queries run over the archive as it is kept: compacted (`seedwatch archive compact`).
        let t = Instant::now();
        let signer = std::sync::Arc::new(seedwatch_archive::manifest::ManifestSigner::load_or_create(&work.join("bench-signing.pem")).expect("signing key"));
        let options = seedwatch_archive::compact::CompactOptions { before: chrono::NaiveDate::from_ymd_opt(2100, 1, 1), ..Default::default() };
        let days = seedwatch_archive::compact::compact(&seedwatch_archive::ArchiveRoot::from(&root), &options, signer).expect("compact");
        eprintln!("query: compacted {} day(s) in {:.0} s", days.len(), t.elapsed().as_secs_f64());
        std::fs::write(&done, format!("{n}\n")).expect("marking the archive built");
    }
    let bytes: u64 = seedwatch_archive::writer::table_sizes(&root).expect("sizes").iter().map(|(_, b, _)| b).sum();
    println!("query: archive of {n} events, compacted, {:.2} GB on disk, {:.1} bytes/event", bytes as f64 / 1e9, bytes as f64 / n as f64);
    // Where the bytes are: compressed column chunks per event, from the Parquet footers.
    for family in [Family::Login, Family::Api] {
        let (sizes, rows) = seedwatch_archive::writer::column_sizes(&root, Table::Events(family)).expect("column sizes");
        let total: u64 = sizes.iter().map(|s| s.bytes).sum();
        let per_event = |b: u64| b as f64 / rows.max(1) as f64;
        let columns: Vec<String> = sizes.iter().filter(|s| per_event(s.bytes) >= 0.05).map(|s| format!("{} {:.2}", s.column, per_event(s.bytes))).collect();
        println!("query: {} columns, {:.1} bytes/event in column chunks: {}", family.as_str(), per_event(total), columns.join(", "));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // SEEDWATCH_BENCH_QUERY picks the queries whose name contains it (for profiling one).
        let only = std::env::var("SEEDWATCH_BENCH_QUERY").unwrap_or_default();
        for (label, sql) in queries().into_iter().filter(|(label, _)| label.contains(only.as_str())) {
            let ctx = open_session(&root).await.expect("session");
            let t = Instant::now();
            let rows: usize = run_query(&ctx, sql).await.expect("query").iter().map(|b| b.num_rows()).sum();
            let cold = t.elapsed().as_secs_f64();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let again: usize = run_query(&ctx, sql).await.expect("query").iter().map(|b| b.num_rows()).sum();
                assert_eq!(again, rows, "{label}: the same query gave a different answer");
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("query/{label}: {rows} rows, first run {cold:.2} s, warm best of 3 {best:.2} s ({:.0} M events/s)", n as f64 / best / 1e6);
        }
    });
}
