//! HTTP: the admin API on `listen.admin`, and the block page staff see on
//! `listen.http` / `listen.https`.

pub mod admin;
pub mod blockpage;
pub mod conn;
pub mod limits;
pub mod page;
pub mod tls;
