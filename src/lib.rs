//! sinkhole: a DNS sinkhole resolver.
//!
//! The path of a query, top to bottom: `dns::server` (listener) →
//! `dns::handler` (pipeline) → `policy` (decision) → `dns::answers`
//! (synthesised answer) or `dns::cache` → `dns::upstream`. Lists come in
//! through `lists` and `reload`, which build the `policy` snapshots the
//! handler reads; `http::admin` and `metrics` watch it all.

pub mod app;
pub mod config;
pub mod dns;
pub mod http;
pub mod lists;
pub mod metrics;
pub mod policy;
pub mod reload;
