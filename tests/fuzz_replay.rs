//! The fuzz harnesses (`src/fuzzing.rs`) on stable, in every test run: the corpus in
//! `fuzz/corpus/<target>/` and the files the repository already holds of each kind, then a
//! bounded number of deterministic mutations of them (bit flips, cuts, splices, repeats and
//! tokens a parser trips on). What libFuzzer finds in a long run (`scripts/fuzz.sh`) is added
//! to the corpus and so replayed here for good. A failing input is written to
//! `$TMPDIR/seedwatch-fuzz-failures/` and named in the panic.

mod common;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use seedwatch::fuzzing::TARGETS;

/// Mutations per target, and the time any one target may take (a slow machine stops early).
const MUTATIONS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(15);

/// Bytes parsers trip on: quotes, escapes, nesting, huge and odd numbers, controls, BOMs, gzip.
const TOKENS: &[&[u8]] = &[
    b"\"", b"\\", b"\\u0000", b"\\ud800", b"{", b"}", b"[", b"]", b":", b",", b"\n", b"\r\n", b"\0", b"\xef\xbb\xbf", b"\xff\xfe",
    b"1e400", b"-0", b"9223372036854775808", b"NaN", b"null", b"true", b"\"\":\"\"", b"{\"a\":{\"b\":{\"c\":[[[[",
    b"- ", b": ", b"---\n", b"&anchor ", b"*anchor", b"!!binary ", b"'", b"%", b"${", b"2026-13-45T25:61:61Z", b"\x1f\x8b\x08\x00",
];

/// A xorshift generator: the same mutations every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(at),
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 if !other.is_empty() => {
                let from = rng.below(other.len());
                let to = from + rng.below(other.len() - from + 1);
                out.splice(at..at, other[from..to].iter().copied());
            }
            4 if at < out.len() => {
                let end = at + rng.below(out.len() - at + 1);
                let piece = out[at..end].to_vec();
                for _ in 0..1 + rng.below(8) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 if at < out.len() => {
                let end = at + rng.below((out.len() - at).min(64) + 1);
                out.drain(at..end);
            }
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

fn files_in(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    common::files_under(dir).into_iter().filter(|p| keep(p)).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// The corpus of `target`: its directory under `fuzz/corpus/`, and what the repository holds
/// of that kind (rule files, their fixtures, the policy, the fixtures' reference files).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let repo = common::repo();
    let ext = |e: &'static str| move |p: &Path| p.extension().is_some_and(|x| x == e);
    let mut paths = files_in(&repo.join("fuzz/corpus").join(target), &|_| true);
    match target {
        "ndjson" | "redactor" => paths.extend(files_in(&repo.join("rules"), &ext("ndjson"))),
        "rule" => paths.extend(files_in(&repo.join("rules"), &|p| ext("yaml")(p) && !p.ends_with("policy.yaml") && !p.ends_with("exceptions.yaml"))),
        "policy" => paths.push(repo.join("rules/policy.yaml")),
        "reference" => paths.extend(files_in(&repo.join("rules/fixtures"), &ext("csv"))),
        _ => {}
    }
    let mut seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect();
    if target == "intake_body" {
        // A flag byte (odd: gzip), then the body: plain, one gzip member, two.
        let lines = std::fs::read(repo.join("rules/login/failed_burst.positive.ndjson")).expect("fixture");
        let two = [gzip(&lines), gzip(b"{\"family\":\"login\"}\n")].concat();
        seeds.extend([[&[0u8][..], &lines].concat(), [&[1u8][..], &gzip(&lines)].concat(), [&[1u8][..], &two].concat()]);
    }
    assert!(!seeds.is_empty(), "no corpus for fuzz target {target}");
    seeds
}

#[test]
fn every_fuzz_target_holds_on_its_corpus_and_bounded_mutations_of_it() {
    let failures_dir = std::env::temp_dir().join("seedwatch-fuzz-failures");
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for (name, harness) in TARGETS {
        let seeds = corpus(name);
        let started = Instant::now();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let mut inputs = 0;
        let mut fail = |input: &[u8], panic: Box<dyn std::any::Any + Send>| {
            let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            std::fs::create_dir_all(&failures_dir).expect("mkdir");
            let path = failures_dir.join(format!("{name}-{:016x}", fnv1a(input)));
            std::fs::write(&path, input).expect("write failure");
            failures.push(format!("{name}: {why} (input: {})", path.display()));
        };
        for seed in &seeds {
            inputs += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| harness(seed))) {
                fail(seed, panic);
            }
        }
        for i in 0..MUTATIONS {
            if started.elapsed() > BUDGET {
                break;
            }
            let seed = &seeds[i % seeds.len()];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            inputs += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| harness(&input))) {
                fail(&input, panic);
            }
        }
        ran.push(format!("{name}: {inputs} inputs in {:.1} s", started.elapsed().as_secs_f64()));
    }
    eprintln!("{}", ran.join("\n"));
    assert!(failures.is_empty(), "fuzz targets failed:\n{}", failures.join("\n"));
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
