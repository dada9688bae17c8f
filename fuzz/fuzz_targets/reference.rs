#![no_main]
//! `cargo fuzz run reference`: see `seedwatch::fuzzing::reference`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedwatch::fuzzing::reference(data));
