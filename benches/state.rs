//! Benchmark 7: detector state per tracked key.
//!
//! Feeds the shipped rule catalog one million distinct users (each logging in from its own
//! address) and, in a second engine, one million distinct API keys (each from its own
//! address), then reports the heap the engine holds afterwards: bytes per entity and per
//! tracked key (one entity is tracked by several rules: failed-login counts, new IP per user,
//! off-hours, ...). Memory is counted by a counting global allocator, not sampled from RSS.
//!
//! Run: `cargo bench --bench state` (`SEEDWATCH_BENCH_KEYS` changes the million).

use std::alloc::System;
use std::path::Path;
use std::sync::Arc;

use seedwatch_detect::reference::Reference;
use seedwatch_detect::{load_rules, CompiledRule, Detector, RuleEngine};
use seedwatch_ingest::source::{LineChunk, LineSpan};
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use seedwatch_schemas::EventBatch;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// 2026-10-19T14:00:00Z, a Monday afternoon: inside business hours, one hour for every event
/// so no window expires while the keys are counted.
const START_MS: i64 = 1_792_418_400_000;
const LICENSES: [(&str, &str); 4] = [("C10-000011004", "CA"), ("402R-01429", "CO"), ("RD01076", "NV"), ("PC-0001175", "MI")];

fn address(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn login_line(i: usize, n: usize) -> String {
    let (license, state) = LICENSES[i % LICENSES.len()];
    let time = START_MS + (i as i64 * 3_600_000 / n as i64);
    format!(
        r#"{{"family":"login","license":"{license}","location":"store-{}","mfa":true,"outcome":"success","src_ip":"{}","state":"{state}","system":"metrc","time":{time},"user":"user.{i:07}","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0"}}"#,
        i % 40,
        address(i)
    )
}

fn api_line(i: usize, n: usize) -> String {
    let (license, state) = LICENSES[i % LICENSES.len()];
    let time = START_MS + (i as i64 * 3_600_000 / n as i64);
    format!(
        r#"{{"bytes":12720,"endpoint":"/packages/v2/active","family":"api","integration":"treez","key_id":"treez-key-{i:07}","latency_ms":109,"license":"{license}","location":"store-{}","method":"GET","records":69,"src_ip":"{}","state":"{state}","status":200,"system":"metrc","time":{time}}}"#,
        i % 40,
        address(i)
    )
}

/// Decoded batches of `n` lines made by `line`, 32 k lines per chunk.
fn batches(n: usize, line: fn(usize, usize) -> String) -> Vec<EventBatch> {
    let mut decoder = Decoder::new(Redactor::new(Fingerprinter::new(b"bench-secret-0123456789").expect("fingerprinter")));
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let mut chunk = LineChunk::new();
        for j in i..(i + 32 * 1024).min(n) {
            let start = chunk.data.len();
            chunk.data.extend_from_slice(line(j, n).as_bytes());
            chunk.lines.push(LineSpan { start, end: chunk.data.len(), number: j as u64 + 1, original_len: chunk.data.len() - start });
        }
        i += chunk.lines.len();
        let decoded = decoder.decode_chunk(&chunk, 0).expect("decode");
        assert!(decoded.dead_letters.is_none(), "bench lines must decode: {:?}", decoded.dead_letters);
        out.extend(decoded.events);
    }
    out
}

/// Heap bytes held now that were allocated inside `region`.
fn held(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64 + c.bytes_reallocated as i64
}

/// The engine's heap after `batches`, and the keys it tracks.
fn held_by(rules: Vec<CompiledRule>, reference: &Arc<Reference>, batches: &[EventBatch]) -> (i64, usize, usize, f64) {
    let region = Region::new(GLOBAL);
    let mut engine = RuleEngine::with_reference(rules, reference.clone()).expect("engine");
    let empty = held(&region);
    let mut findings = Vec::new();
    let started = std::time::Instant::now();
    for batch in batches {
        engine.process(batch, &mut findings).expect("detect");
    }
    let seconds = started.elapsed().as_secs_f64();
    let found = findings.len();
    drop(findings);
    let state = held(&region) - empty;
    (state, engine.tracked_keys(), found, seconds)
}

fn measure(what: &str, n: usize, batches: &[EventBatch], rules_dir: &Path) {
    let reference = Arc::new(Reference::load(rules_dir, None, None).expect("reference"));
    let (state, keys, found, seconds) = held_by(load_rules(rules_dir).expect("rules"), &reference, batches);
    println!(
        "state/{what}: {n} distinct, {keys} keys tracked across rules, {:.1} MiB held: {:.0} bytes per {what}, {:.0} bytes per tracked key ({found} findings, {:.0} k events/s)",
        state as f64 / 1048576.0,
        state as f64 / n as f64,
        state as f64 / keys.max(1) as f64,
        n as f64 / seconds / 1000.0
    );
    // The same, one rule at a time: which structure the bytes are in.
    let family = batches.first().map(|b| b.family);
    for rule in load_rules(rules_dir).expect("rules").into_iter().filter(|r| Some(r.family) == family) {
        let (id, kind) = (rule.id.clone(), format!("{:?}", rule.rule_type).to_lowercase());
        let (state, keys, _, _) = held_by(vec![rule], &reference, batches);
        if keys > 0 {
            println!("state/{what}/{id} ({kind}): {keys} keys, {:.0} bytes per key", state as f64 / keys as f64);
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is configurable on the command line.
    let n: usize = std::env::var("SEEDWATCH_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rules_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let logins = batches(n, login_line);
    measure("user", n, &logins, rules_dir);
    drop(logins);
    let calls = batches(n, api_line);
    measure("api_key", n, &calls, rules_dir);
}
