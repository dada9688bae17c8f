#![no_main]
//! `cargo fuzz run intake_body`: see `seedwatch::fuzzing::intake_body`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::intake_body(data));
