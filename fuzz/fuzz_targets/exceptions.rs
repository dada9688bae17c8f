#![no_main]
//! `cargo fuzz run exceptions`: see `seedwatch::fuzzing::exceptions`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::exceptions(data));
