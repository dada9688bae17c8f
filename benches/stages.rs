//! Criterion micro-benchmarks, one group per stage, on generator data.
//! Run: `cargo bench --bench stages`. Throughput is reported in bytes and
//! elements (lines or events) per second, on one core. The archive group
//! also prints the Parquet bytes per event of each family.

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use seedwatch::generate::{generate, GenerateOptions};
use seedwatch_detect::{load_rules, Detector, RuleEngine};
use seedwatch_ingest::source::{LineChunk, LineSpan};
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use std::sync::Arc;

use seedwatch_archive::{ArchiveWriter, Sink, WriterOptions};
use seedwatch_detect::reference::Reference;
use seedwatch_schemas::{EventBatch, Table};

fn sample() -> (Vec<u8>, Vec<LineSpan>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = GenerateOptions { days: 7, locations: 6, seed: 7, start: NaiveDate::from_ymd_opt(2026, 10, 19).unwrap_or_default() };
    generate(dir.path(), &opts).expect("generate");
    let data = std::fs::read(dir.path().join("events.ndjson")).expect("read");
    let mut spans = Vec::new();
    let mut start = 0;
    for (n, line) in data.split(|b| *b == b'\n').enumerate() {
        if !line.is_empty() {
            spans.push(LineSpan { start, end: start + line.len(), number: n as u64 + 1, original_len: line.len() });
        }
        start += line.len() + 1;
    }
    (data, spans, dir)
}

fn decoder() -> Decoder {
    Decoder::new(Redactor::new(Fingerprinter::new(b"bench-secret-0123456789").expect("fp")))
}

fn chunks(data: &[u8], spans: &[LineSpan], per_chunk: usize) -> Vec<LineChunk> {
    spans
        .chunks(per_chunk)
        .map(|group| {
            let mut c = LineChunk::new();
            for s in group {
                let start = c.data.len();
                c.data.extend_from_slice(&data[s.start..s.end]);
                c.lines.push(LineSpan { start, end: c.data.len(), ..*s });
            }
            c
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let (data, spans, dir) = sample();
    let chunks = chunks(&data, &spans, 32 * 1024);
    let bytes: usize = spans.iter().map(|s| s.end - s.start + 1).sum();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("ndjson_to_arrow/lines={}", spans.len()), |b| {
        let mut dec = decoder();
        b.iter(|| {
            for chunk in &chunks {
                black_box(dec.decode_chunk(chunk, 0).expect("decode"));
            }
        })
    });
    group.finish();

    let mut dec = decoder();
    let batches: Vec<EventBatch> = chunks.iter().flat_map(|c| dec.decode_chunk(c, 0).expect("decode").events).collect();
    let events: usize = batches.iter().map(|b| b.batch.num_rows()).sum();
    let rules_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let rules = load_rules(rules_dir).expect("rules");
    let reference = Arc::new(Reference::load(rules_dir, Some(&dir.path().join("locations.csv")), Some(&dir.path().join("roster.csv"))).expect("reference"));
    let mut group = c.benchmark_group("detect");
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function(format!("shipped_rules/rules={}/events={events}", rules.len()), |b| {
        b.iter_batched(
            || RuleEngine::with_reference(rules.clone(), Arc::clone(&reference)).expect("engine"),
            |mut engine| {
                let mut out = Vec::new();
                for batch in &batches {
                    engine.process(batch, &mut out).expect("detect");
                }
                engine.flush(&mut out);
                black_box(out)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // Archive: the same batches to zstd Parquet (dedup, partition, fsync, rename).
    let mut group = c.benchmark_group("archive");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10);
    group.bench_function(format!("parquet_zstd/events={events}"), |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |root| {
                let mut w = ArchiveWriter::open(root.path(), WriterOptions::default()).expect("open");
                for batch in &batches {
                    w.write(Table::Events(batch.family), &batch.batch).expect("write");
                }
                black_box(w.commit().expect("commit"));
                root
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    let root = tempfile::tempdir().expect("tempdir");
    let mut w = ArchiveWriter::open(root.path(), WriterOptions::default()).expect("open");
    for batch in &batches {
        w.write(Table::Events(batch.family), &batch.batch).expect("write");
    }
    w.commit().expect("commit");
    for (table, bytes, files) in seedwatch_archive::writer::table_sizes(root.path()).expect("sizes") {
        let rows: usize = batches.iter().filter(|b| Table::Events(b.family) == table).map(|b| b.batch.num_rows()).sum();
        if rows > 0 {
            eprintln!("archive/{}: {rows} events, {bytes} bytes in {files} files, {:.1} bytes/event", table.name(), bytes as f64 / rows as f64);
        }
    }
}

criterion_group!(stages, benches);
criterion_main!(stages);
