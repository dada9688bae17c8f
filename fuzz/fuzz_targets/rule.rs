#![no_main]
//! `cargo fuzz run rule`: see `seedwatch::fuzzing::rule`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::rule(data));
