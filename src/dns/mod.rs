//! The DNS side: the query pipeline, its stages, and the listeners.
//!
//! A query's path, top to bottom (see [`pipeline`] for the chain itself):
//! [`listen`] reads it into a [`request::Request`]; stages [`parse`],
//! [`access`], [`policy`], [`cache`] and [`upstream`] decide its answer,
//! which [`answers`] writes; it leaves as one [`record::QueryRecord`].
//! [`wire`] holds the format primitives, [`sys`] the Linux system calls.

pub mod access;
pub mod answers;
pub mod cache;
pub mod chase;
pub mod listen;
pub mod mnemonic;
pub mod parse;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod record;
pub mod request;
pub mod sys;
pub mod upstream;
pub mod wire;
