#![no_main]
//! Configuration text through `Config::parse`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sinkhole_fuzz::config::run(data));
