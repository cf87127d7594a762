//! HTTP: the admin API (the block page comes with its own release).

pub mod admin;
