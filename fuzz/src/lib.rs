//! Shared code of sinkhole's fuzz targets (`fuzz_targets/`): each target
//! is one call into a module here, so the targets stay one line long and
//! the checks live in one place.
//!
//! - [`query`]: a client's packet through the query pipeline.
//! - [`upstream`]: an upstream's reply through validation, the cache and
//!   the client's answer.
//! - [`lists`]: a list file in each format, parsed whole and streamed.
//! - [`config`]: the configuration loader.
//!
//! [`check`] reads sinkhole's answers with hickory-proto, independently of
//! sinkhole's own wire code; [`wire`] writes the few fixed messages the
//! harnesses need.

pub mod check;
pub mod config;
pub mod lists;
pub mod query;
pub mod upstream;
pub mod wire;

/// `SINKHOLE_FUZZ_VERBOSE=1`: the harnesses say what each input did (for
/// replaying one input, not for fuzzing).
pub static VERBOSE: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    std::env::var_os("SINKHOLE_FUZZ_VERBOSE").is_some_and(|v| v == "1")
});

/// `SINKHOLE_FUZZ_STRICT=1`: no excuse for the known issues (see
/// `fuzz/regressions/*/README.md`); replay their regressions with it.
pub static STRICT: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("SINKHOLE_FUZZ_STRICT").is_some_and(|v| v == "1"));
