#![no_main]
//! A client's packet through `Pipeline::begin` (and `resume`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sinkhole_fuzz::query::run(data));
