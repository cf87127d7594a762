//! What each command does, wired from the modules. `main.rs` only parses
//! the command line and maps results to exit codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BUILTIN, Config, ConfigError};
use crate::dns::answers::BlockStyle;
use crate::dns::cache::Cache;
use crate::dns::handler::Resolver;
use crate::dns::server::Listeners;
use crate::dns::upstream::Upstreams;
use crate::http::admin::{self, AdminState};
use crate::metrics::Metrics;
use crate::policy::DomainName;
use crate::policy::explain::Explanation;
use crate::reload::{Reloader, StartError, load_list};

/// Why a command could not do its job (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(std::io::Error),
}

/// Loads `-c FILE`, else `./sinkhole.yaml`, else the built-in default.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => {
            let local = PathBuf::from("sinkhole.yaml");
            if local.is_file() {
                Config::load(&local)
            } else {
                Config::parse(
                    BUILTIN,
                    Path::new("<built-in sinkhole.yaml>"),
                    Path::new("."),
                )
            }
        }
    }
}

/// `sinkhole serve`: runs until SIGTERM or SIGINT; SIGHUP reloads lists.
pub fn serve(config: Config) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new(&config.upstream.servers));
    let reloader = Arc::new(Reloader::start(&config, metrics.clone())?);
    for l in &reloader.snapshot().lists {
        tracing::info!(list = %l.name, rules = l.rules, skipped = l.skipped.count, "list loaded");
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    runtime.block_on(run(config, reloader, metrics, workers))
}

async fn run(
    config: Config,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    workers: usize,
) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let ready = Arc::new(AtomicBool::new(false));

    let resolver = Arc::new(Resolver::new(
        reloader.clone(),
        Cache::new(config.cache_size),
        Upstreams::new(config.upstream.servers.clone(), config.upstream.timeout),
        BlockStyle {
            ttl: config.block.ttl,
            redirect_v4: config.block.redirect_v4,
            redirect_v6: config.block.redirect_v6,
        },
        metrics.clone(),
    ));

    // Admin first, so /readyz answers 503 while DNS comes up.
    let admin_task = match config.listen.admin {
        Some(addr) => {
            let listener = admin::bind(addr).await.map_err(|source| AppError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            let state = AdminState {
                reloader: reloader.clone(),
                resolver: resolver.clone(),
                metrics: metrics.clone(),
                ready: ready.clone(),
            };
            tracing::info!(addr = %addr, "admin listening");
            Some(tokio::spawn(admin::serve(
                listener,
                state,
                shutdown.clone(),
            )))
        }
        None => None,
    };

    let listeners =
        Listeners::bind(&config.listen.dns, workers).map_err(|source| AppError::Bind {
            addr: format!("{:?}", config.listen.dns),
            source,
        })?;
    for addr in listeners.local_addrs() {
        tracing::info!(addr = %addr, workers, "dns listening (udp, tcp)");
    }
    listeners.serve(resolver, shutdown.clone(), &tasks);
    if config.listen.http.is_some() {
        tracing::warn!(
            "listen.http is set, but the block page is not part of this release; not serving it"
        );
    }
    ready.store(true, Ordering::Release);
    tracing::info!(upstreams = ?config.upstream.servers, "ready");

    wait_for_signals(&reloader).await;
    tracing::info!("shutting down: finishing in-flight queries");
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    tasks.close();
    // In-flight queries finish within one upstream timeout per server.
    let budget = config.upstream.timeout * (config.upstream.servers.len() as u32 * 2)
        + Duration::from_secs(1);
    let _ = tokio::time::timeout(budget, tasks.wait()).await;
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(reloader: &Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload()).await;
            }
        }
    }
}

/// `sinkhole check`: loads every list and prints what it found. Returns
/// whether the configuration is usable.
pub fn check(config: &Config, out: &mut impl std::io::Write) -> std::io::Result<bool> {
    let mut usable = true;
    let mut reports = Vec::new();
    writeln!(
        out,
        "{:<28} {:<9} {:<10} {:>10} {:>9}",
        "LIST", "KIND", "FORMAT", "RULES", "SKIPPED"
    )?;
    for source in &config.lists {
        let kind = if source.category.is_some() {
            "block"
        } else {
            "allow"
        };
        match load_list(source) {
            Ok(parsed) => {
                writeln!(
                    out,
                    "{:<28} {:<9} {:<10} {:>10} {:>9}",
                    source.name,
                    kind,
                    parsed.format().as_str(),
                    parsed.len(),
                    parsed.skipped().count
                )?;
                reports.push((source, Ok(parsed)));
            }
            Err(e) => {
                usable = false;
                writeln!(
                    out,
                    "{:<28} {:<9} {:<10} {:>10} {:>9}",
                    source.name, kind, "-", "ERROR", "-"
                )?;
                reports.push((source, Err(e)));
            }
        }
    }
    for (source, report) in &reports {
        match report {
            Ok(parsed) if parsed.skipped().count > 0 => {
                writeln!(
                    out,
                    "\n{}: {} lines skipped",
                    source.name,
                    parsed.skipped().count
                )?;
                for s in parsed.skipped().first.iter().take(5) {
                    writeln!(
                        out,
                        "  {}:{}: {} ({})",
                        source.path.display(),
                        s.line,
                        s.reason,
                        s.text
                    )?;
                }
                if parsed.skipped().count > 5 {
                    writeln!(out, "  … and {} more", parsed.skipped().count - 5)?;
                }
            }
            Ok(_) => {}
            Err(e) => writeln!(out, "\n{}: ERROR: {e}", source.name)?,
        }
    }
    writeln!(
        out,
        "\n{}",
        if usable {
            "OK: configuration and lists are usable"
        } else {
            "NOT USABLE: fix the errors above"
        }
    )?;
    Ok(usable)
}

/// `sinkhole explain`: the decision for one name, offline.
pub fn explain(
    config: &Config,
    name: &DomainName,
    client: Option<String>,
) -> Result<Explanation, AppError> {
    let metrics = Arc::new(Metrics::new(&[]));
    let reloader = Reloader::start(config, metrics)?;
    Ok(Explanation::new(&reloader.snapshot().policy, name, client))
}
