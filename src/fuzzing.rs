//! Fuzz harnesses: one function per input a sender or an operator controls, each checking what
//! must hold for any bytes (not only that nothing panics). `fuzz/` runs them under libFuzzer
//! (`scripts/fuzz.sh`, nightly); `tests/fuzz_replay.rs` replays the corpus and bounded
//! mutations of it on stable in every test run, and every crash found becomes a file there.

use std::path::Path;
use std::sync::OnceLock;

use seedwatch_ingest::source::reader_source;
use seedwatch_ingest::nginx::NginxMapping;
use seedwatch_ingest::{Decoder, Fingerprinter, LineChunk, Redactor, Source};

use crate::intake::RequestLimits;

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| Fingerprinter::new(b"seedwatch-fuzzing-secret").map(Redactor::new).unwrap_or_else(|e| panic!("fuzzing redactor: {e}")))
}

/// The NDJSON path: bytes split into lines as a file is, then decoded. Every line is an event
/// or a dead letter with a reason; nothing is lost or counted twice.
pub fn ndjson(data: &[u8]) {
    let mut decoder = Decoder::new(redactor().clone());
    let mut source = reader_source("fuzz", data);
    let mut chunk = LineChunk::new();
    while source.next_chunk(&mut chunk).unwrap_or(false) {
        let Ok(decoded) = decoder.decode_chunk(&chunk, 1_800_000_000_000) else { continue };
        let events: usize = decoded.events.iter().map(|e| e.batch.num_rows()).sum();
        let dead = decoded.dead_letters.as_ref().map_or(0, |d| d.num_rows());
        assert_eq!(events + dead, chunk.lines.len(), "a line was lost or doubled");
        assert_eq!(decoded.stats.events_total() + decoded.stats.dead_total(), chunk.lines.len() as u64, "the counts disagree with the rows");
        if let Some(d) = &decoded.dead_letters {
            use seedwatch_schemas::arrow::array::AsArray;
            let reasons = d.column_by_name("reason").map(|c| c.as_string::<i32>().iter().all(|r| r.is_some_and(|r| !r.is_empty())));
            assert_eq!(reasons, Some(true), "a dead letter without a reason");
        }
    }
}

/// The nginx JSON mapping: a line is either left for the decoder (not JSON) or becomes one JSON
/// object of the api family.
pub fn nginx(data: &[u8]) {
    if let Some(mapped) = NginxMapping::default().map_line(data) {
        let value: serde_json::Value = serde_json::from_str(&mapped).unwrap_or_else(|e| panic!("mapped to invalid JSON ({e}): {mapped}"));
        assert_eq!(value["family"], "api", "{mapped}");
        ndjson(mapped.as_bytes());
    }
}

/// Credentials are redacted whatever surrounds them: a value under a credential's name, at the
/// top or nested, leaves no trace in the line sent on, for any text around and inside it.
pub fn redactor_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = redactor().redact_line(&text);
    let secret = "SWFUZZk7Q2secret";
    let value = serde_json::Value::String(format!("{text}{secret}{text}"));
    let other = serde_json::Value::String(text.to_string());
    for line in [
        serde_json::json!({"family": "api", "apiKey": value, "note": other}),
        serde_json::json!({"x": {"user_api_key": value}, "list": [other, {"password": value}]}),
    ] {
        let line = line.to_string();
        let out = redactor().redact_line(&line);
        assert!(!out.contains(secret), "a credential survived redaction: {out}");
    }
}

/// A loader's errors name the file (and a line) and never panic.
fn loads<T, E: std::fmt::Display>(name: &str, data: &[u8], load: impl FnOnce(&Path) -> Result<T, E>) {
    /// A directory of this process's own, removed when the thread ends.
    struct ScratchDir(std::path::PathBuf);
    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    thread_local! {
        static DIR: ScratchDir = {
            let dir = std::env::temp_dir().join(format!("seedwatch-fuzz-{}-{:?}", std::process::id(), std::thread::current().id()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            ScratchDir(dir)
        };
    }
    DIR.with(|dir| {
        let path = dir.0.join(name);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = load(&path) {
            let e = e.to_string();
            assert!(e.contains(name) || !e.contains('\n'), "an error that names neither the file nor fits one line: {e}");
        }
    });
}

/// A rule file.
pub fn rule(data: &[u8]) {
    static CONTEXT: OnceLock<datafusion::prelude::SessionContext> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(seedwatch_detect::rule::rule_context);
    let text = String::from_utf8_lossy(data);
    if let Err(e) = seedwatch_detect::rule::compile_rule(Path::new("fuzz.yaml"), &text, ctx) {
        assert!(e.to_string().starts_with("fuzz.yaml"), "the error does not name the file: {e}");
    }
}

/// `policy.yaml`.
pub fn policy(data: &[u8]) {
    loads("policy.yaml", data, seedwatch_detect::policy::load_policy);
}

/// `exceptions.yaml`.
pub fn exceptions(data: &[u8]) {
    loads("exceptions.yaml", data, |p| seedwatch_detect::exception::load_file(p).map_err(|(line, why)| format!("exceptions.yaml:{line}: {why}")));
}

/// `locations.csv`, and `roster.csv` read against it (the same bytes as both).
pub fn reference(data: &[u8]) {
    loads("locations.csv", data, seedwatch_detect::reference::load_locations);
    loads("roster.csv", data, |p| seedwatch_detect::reference::load_roster(p, &Default::default()));
}

/// The intake's body: the first byte says whether it is gzip. Within the limits or refused;
/// never more lines or bytes than the limits let through.
pub fn intake_body(data: &[u8]) {
    let Some((&flag, body)) = data.split_first() else { return };
    let limits = RequestLimits { max_body_bytes: 64 * 1024, max_inflate_ratio: 100, max_lines: 1_000, ..RequestLimits::default() };
    if let Ok(chunk) = crate::intake::body_lines(body.to_vec(), flag & 1 == 1, &limits, "fuzz") {
        assert!(chunk.data.len() <= limits.max_body_bytes, "{} bytes through a {} byte limit", chunk.data.len(), limits.max_body_bytes);
        assert!(chunk.lines.len() <= limits.max_lines, "{} lines through a {} line limit", chunk.lines.len(), limits.max_lines);
    }
}

/// Every harness by name, as `fuzz/fuzz_targets/` and `tests/fuzz_replay.rs` know them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("ndjson", ndjson),
    ("nginx", nginx),
    ("redactor", redactor_line),
    ("rule", rule),
    ("policy", policy),
    ("exceptions", exceptions),
    ("reference", reference),
    ("intake_body", intake_body),
];
