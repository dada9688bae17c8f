#![no_main]
//! `cargo fuzz run redactor`: see `seedwatch::fuzzing::redactor_line`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::redactor_line(data));
