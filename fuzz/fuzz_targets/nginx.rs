#![no_main]
//! `cargo fuzz run nginx`: see `seedwatch::fuzzing::nginx`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::nginx(data));
