//! Shared harness for the black-box integration tests (`tests/e2e_*.rs`).
//!
//! Every test talks to the real `sinkhole` binary over loopback sockets:
//! - [`sinkhole`]: writes a config + lists into a temp dir, spawns the binary,
//!   waits for `/readyz`, kills it on drop.
//! - [`dns`]: a small DNS client (hickory-proto `Message` over UDP/TCP, or raw bytes).
//! - [`upstream`]: a scripted fake upstream resolver running in the test process.
//! - [`unbound`]: a real Unbound started on a loopback port with a local zone.
//! - [`http`]: a tiny blocking HTTP/1.1 client for the admin endpoints.
//! - [`cli`]: runs `sinkhole check` / `sinkhole explain`.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod dns;
pub mod http;
pub mod listserver;
pub mod ports;
pub mod sinkhole;
pub mod unbound;
pub mod upstream;

pub use dns::{Q, Reply};
pub use sinkhole::{Setup, Sinkhole};
pub use upstream::{FakeUpstream, Script};

pub use hickory_proto::op::{Message, OpCode, ResponseCode};
pub use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Deterministic xorshift PRNG (for garbage packets; no extra dependency).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
