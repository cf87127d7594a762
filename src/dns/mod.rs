//! The DNS side: listeners, the query pipeline, answers, cache, upstream.

pub mod answers;
pub mod cache;
pub mod handler;
pub mod server;
pub mod upstream;
pub mod wire;
