//! sinkhole: a DNS sinkhole resolver.
//!
//! The path of a query: `dns` (listener, handler) → `policy` (decision) →
//! `dns::answers` (synthesised) or `dns::cache` → `dns::upstream`.

pub mod config;
pub mod lists;
pub mod policy;
