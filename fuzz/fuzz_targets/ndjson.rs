#![no_main]
//! `cargo fuzz run ndjson`: see `seedwatch::fuzzing::ndjson`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::ndjson(data));
