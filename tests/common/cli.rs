//! Runs the offline subcommands (`check`, `explain`) of the real binary.

use crate::common::sinkhole::BIN;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Output {
    /// Exit code (None if killed by a signal or by our deadline).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    /// Context for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
    /// No Rust panic or debug dump reached the user.
    pub fn assert_no_panic(&self) {
        let all = self.all();
        for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(
                !all.contains(bad),
                "output contains {bad:?}:\n{}",
                self.show()
            );
        }
    }
    /// `stdout` parsed as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", self.show()))
    }
}

/// Runs `sinkhole ARGS...` in `cwd`, with a 60 s safety deadline.
pub fn run<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Output {
    assert!(
        cwd.is_dir(),
        "cwd {} is gone (was its Setup dropped?)",
        cwd.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out_p = dir.path().join("stdout");
    let err_p = dir.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).unwrap())
        .stderr(File::create(&err_p).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status.and_then(|s| s.code()),
        stdout: fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: fs::read_to_string(&err_p).unwrap_or_default(),
    }
}

/// `sinkhole check -c CONFIG`
pub fn check(config: &Path) -> Output {
    run(
        config.parent().unwrap(),
        &[OsStr::new("check"), "-c".as_ref(), config.as_os_str()],
    )
}

/// `sinkhole explain -c CONFIG NAME [extra...]`
pub fn explain(config: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "explain".as_ref(),
        "-c".as_ref(),
        config.as_os_str(),
        name.as_ref(),
    ];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    run(config.parent().unwrap(), &args)
}
