#![no_main]
//! `cargo fuzz run policy`: see `seedwatch::fuzzing::policy`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::policy(data));
