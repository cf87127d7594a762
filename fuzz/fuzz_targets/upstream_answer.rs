#![no_main]
//! An upstream's reply through `matches`, `validate`, the cache and the
//! client's answer.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sinkhole_fuzz::upstream::run(data));
