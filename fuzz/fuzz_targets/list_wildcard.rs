#![no_main]
//! A `wildcard` list file, parsed whole and streamed.
use libfuzzer_sys::fuzz_target;
use sinkhole::lists::Format;

fuzz_target!(|data: &[u8]| sinkhole_fuzz::lists::run(Format::Wildcard, data));
