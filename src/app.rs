//! What each command does, wired from the modules. `main.rs` only parses
//! the command line and maps results to exit codes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BUILTIN, Config, ConfigError};
use crate::dns::answers::BlockStyle;
use crate::dns::cache::Cache;
use crate::dns::listen::Listeners;
use crate::dns::listen::tcp::TcpLimits;
use crate::dns::listen::worker::WorkerConfig;
use crate::dns::pipeline::Pipeline;
use crate::dns::ratelimit::RateLimiter;
use crate::dns::upstream::{Servers, health as upstream_health, pool};
use crate::http::admin::{self, AdminState};
use crate::http::blockpage::{self, BlockPage};
use crate::http::tls::{Certificate, TlsError};
use crate::lists::remote::{ClientError, Fetcher};
use crate::lists::source::{Escaped, io_reason};
use crate::lists::{ParsedList, SkipReason};
use crate::metrics::{ListLabels, Metrics};
use crate::observe::Observer;
use crate::observe::audit::{AuditLog, Names};
use crate::observe::stats::Stats;
use crate::policy::explain::Explanation;
use crate::policy::{Action, DomainName, ListId};
use crate::reload::trigger::{self, Reloads, Which};
use crate::reload::{self, ListError, Reloader, StartError, watch};

/// Why a command could not do its job (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    // Each cause is printed once: wrapped errors are transparent (or kept
    // as text), so the error chain `main` prints repeats nothing.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    /// The OS's reason is kept as text, not as an error source, so it is
    /// printed once (not again by the error chain).
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("{0}")]
    Runtime(std::io::Error),
    #[error("block page certificate: {0}")]
    Tls(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl From<TlsError> for AppError {
    fn from(e: TlsError) -> Self {
        AppError::Tls(e.to_string())
    }
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

/// Descriptors kept back for everything but the upstream pools: lists,
/// admin and TCP connections, the runtime's own.
const RESERVED_FDS: u64 = 1024;

/// Allocations from this size up get pages of their own (`mmap`), which go
/// back to the system the moment they are freed.
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// Pins glibc's mmap threshold. Left alone it rises to the size of each
/// large block freed (up to 32 MiB), so after the first reload a list's
/// buffers come from the heap instead, where old and new policy interleave
/// and a freed one cannot always be returned: measured on a 1M-name list,
/// reload peaks crept from 1.47x to 1.8x steady RSS over four reloads, and
/// RSS stayed 50% up after some. Pinned, every reload peaks at 1.47x and
/// falls back to steady. The DNS path allocates nothing this large.
fn fix_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// `sinkhole serve`: runs until SIGTERM or SIGINT; SIGHUP reloads lists.
pub fn serve(config: Config) -> Result<(), AppError> {
    fix_mmap_threshold();
    let labels: Vec<ListLabels<'_>> = config
        .lists
        .iter()
        .map(|l| ListLabels {
            name: &l.name,
            category: l.category.as_deref(),
            monitor: l.category.as_ref().is_some_and(|c| {
                config
                    .categories
                    .iter()
                    .any(|k| k.name == *c && k.action == Action::Monitor)
            }),
            remote: l.remote.is_some(),
        })
        .collect();
    let metrics = Arc::new(
        Metrics::new(&config.upstream.servers, &labels)
            .with_dns_ports(config.listen.dns.iter().map(|a| a.port()).collect()),
    );
    // Set up before anything serves: a bad tls_ca is a start-up error.
    let fetcher = if config.lists.iter().any(|l| l.remote.is_some()) {
        Some(Fetcher::new(config.tls_ca.as_deref())?)
    } else {
        None
    };
    let mut reloader = Reloader::start(&config)?;
    let m = metrics.clone();
    reloader.watch(move |r| {
        for (i, l) in r.lists.iter().enumerate() {
            let at = l
                .updated
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            m.list_loaded(ListId(i as u16), l.rules, at);
        }
        for (i, by_kind) in r.parsed {
            m.list_rejected(ListId(*i as u16), by_kind);
        }
        for (i, result) in r.fetches {
            m.list_fetched(ListId(*i as u16), result);
        }
        if r.built {
            m.policy_built();
        }
        if r.reload {
            m.reload_done(r.ok);
        }
    });
    for l in reloader.statuses().iter() {
        match &l.source {
            Some(source) => tracing::info!(
                event = "list_taken",
                list = %l.name,
                rules = l.rules,
                skipped = l.skipped.count,
                source = source.as_str(),
                "list loaded"
            ),
            None => tracing::warn!(
                event = "list_missing",
                list = %l.name,
                reason = l.health.error().unwrap_or_default(),
                "list has no version yet; serving without it"
            ),
        }
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    runtime.block_on(run(config, Arc::new(reloader), fetcher, metrics, workers))
}

/// Raises the open-file soft limit to the hard limit and sizes each
/// worker's upstream pool to fit what it allows.
fn pool_sockets(workers: usize, families: usize) -> usize {
    let limit = crate::fds::raise_limit();
    let room = limit.saturating_sub(RESERVED_FDS) / (workers * families.max(1)) as u64;
    let sockets = (room as usize).min(pool::SOCKETS);
    if sockets < pool::SOCKETS {
        tracing::warn!(
            open_files = limit,
            sockets,
            wanted = pool::SOCKETS,
            "the open-file limit leaves room for fewer upstream sockets than wanted: \
             spoofed answers are easier to land; raise the limit (LimitNOFILE=)"
        );
    }
    sockets.max(16)
}

async fn run(
    config: Config,
    reloader: Arc<Reloader>,
    fetcher: Option<Fetcher>,
    metrics: Arc<Metrics>,
    workers: usize,
) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // One path for every reload trigger; local files watched.
    let (reloads, _reload_task) = trigger::start(reloader.clone(), fetcher, shutdown.clone());
    let _watch = watch::start(reloader.sources(), reloads.clone(), shutdown.clone());
    let ready = Arc::new(AtomicBool::new(false));

    // The audit log's writer and the counts behind /stats.
    let stats = Arc::new(Mutex::new(Stats::new(
        config.stats.window.as_secs(),
        config.categories.iter().map(|c| c.name.clone()).collect(),
    )));
    let names = Names {
        lists: config.lists.iter().map(|l| l.name.clone()).collect(),
        categories: config.categories.iter().map(|c| c.name.clone()).collect(),
    };
    let (audit, writer) = AuditLog::start(&config.log, names, stats.clone(), metrics.log_dropped())
        .map_err(AppError::Runtime)?;
    let audit = Arc::new(audit);

    let observer = Arc::new(Observer::new(metrics.clone(), audit.clone()));
    let upstreams = Arc::new(Servers::new(
        config.upstream.servers.clone(),
        config.upstream.timeout,
    ));
    let pipeline = Arc::new(Pipeline::new(
        config.access.stage(),
        config.limits.rate.map(RateLimiter::new),
        reloader.live(),
        Cache::new(config.cache_size).serving_stale(config.serve_stale),
        BlockStyle {
            ttl: config.block.ttl,
            redirect_v4: config.block.redirect_v4,
            redirect_v6: config.block.redirect_v6,
        },
        observer.clone(),
        upstreams.loops.clone(),
    ));

    // Admin first, so /readyz answers 503 while DNS comes up.
    let admin_task = match config.listen.admin {
        Some(addr) => {
            let listener = admin::bind(addr).await.map_err(|e| AppError::Bind {
                addr: addr.to_string(),
                reason: io_reason(&e),
            })?;
            let state = AdminState {
                reloader: reloader.clone(),
                reloads: reloads.clone(),
                pipeline: pipeline.clone(),
                metrics: metrics.clone(),
                upstreams: upstreams.clone(),
                stats: stats.clone(),
                ready: ready.clone(),
                token: config.listen.admin_token.clone().map(Arc::new),
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

    let listeners = Listeners::bind(&config.listen.dns, workers).map_err(|e| AppError::Bind {
        addr: config
            .listen
            .dns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        reason: io_reason(&e),
    })?;
    for addr in listeners.local_addrs() {
        tracing::info!(addr = %addr, workers, "dns listening (udp, tcp)");
    }
    let servers = &config.upstream.servers;
    let families = usize::from(servers.iter().any(|s| s.is_ipv4()))
        + usize::from(servers.iter().any(|s| s.is_ipv6()));
    tasks.spawn(upstream_health::probe(upstreams.clone(), shutdown.clone()));
    let worker_config = WorkerConfig {
        servers: upstreams.clone(),
        pool_sockets: pool_sockets(workers, families),
        inflight: config.limits.upstream_inflight.div_ceil(workers),
        observer,
        tcp: TcpLimits {
            connections: config.limits.tcp_connections,
            idle: config.limits.tcp_idle,
        },
    };
    listeners
        .serve(pipeline, worker_config, shutdown.clone(), &tasks)
        .map_err(|e| AppError::Bind {
            addr: "upstream socket pool".into(),
            reason: io_reason(&e),
        })?;
    let certificate = start_blockpage(
        &config,
        &reloader,
        audit.clone(),
        &metrics,
        &shutdown,
        &tasks,
    )
    .await?;
    // Everything is open that stays open: what the limit leaves is for
    // client connections (`fds`).
    let budget = crate::fds::settle();
    let wanted = config.limits.tcp_connections
        + config
            .listen
            .admin
            .map_or(0, |_| crate::http::limits::MAX_CONNECTIONS)
        + if config.listen.http.is_some() || config.listen.https.is_some() {
            crate::http::blockpage::MAX_CONNECTIONS
        } else {
            0
        };
    if budget.connections < wanted {
        tracing::warn!(
            open_files = budget.limit,
            open = budget.open,
            connections = budget.connections,
            wanted,
            "the open-file limit allows fewer client connections than limits.tcp_connections \
             and the admin API's and block page's caps; past it connections are closed at once, UDP is unaffected \
             (raise LimitNOFILE=)"
        );
    } else {
        tracing::info!(
            open_files = budget.limit,
            open = budget.open,
            connections = budget.connections,
            "descriptor budget"
        );
    }
    ready.store(true, Ordering::Release);
    tracing::info!(upstreams = ?config.upstream.servers, "ready");

    wait_for_signals(&reloads, certificate.as_ref()).await;
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
    // The last queries' audit lines out before the process ends.
    let _ = tokio::task::spawn_blocking(move || audit.stop(writer, Duration::from_secs(2))).await;
    Ok(())
}

/// Binds and serves the block page on `listen.http` and `listen.https`;
/// returns the certificate (for SIGHUP to reload) when there is one.
async fn start_blockpage(
    config: &Config,
    reloader: &Reloader,
    audit: Arc<AuditLog>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Option<Arc<Certificate>>, AppError> {
    if config.listen.http.is_none() && config.listen.https.is_none() {
        return Ok(None);
    }
    let page = Arc::new(BlockPage::new(
        reloader.live(),
        config.blockpage.organisation.clone(),
        config.blockpage.contact.clone(),
        audit,
        metrics.clone(),
    ));
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AppError::Bind {
                addr: addr.to_string(),
                reason: io_reason(&e),
            })
    };
    if let Some(addr) = config.listen.http {
        let listener = bind(addr).await?;
        tracing::info!(addr = %addr, "block page listening (http)");
        tasks.spawn(blockpage::serve_http(
            listener,
            page.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
    }
    let mut certificate = None;
    if let (Some(addr), Some(files)) = (config.listen.https, &config.blockpage.tls) {
        let cert = Arc::new(Certificate::load(files)?);
        let listener = bind(addr).await?;
        tracing::info!(addr = %addr, "block page listening (https)");
        tasks.spawn(blockpage::serve_https(
            listener,
            page,
            cert.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
        certificate = Some(cert);
    }
    Ok(certificate)
}

#[cfg(unix)]
async fn wait_for_signals(reloads: &Reloads, certificate: Option<&Arc<Certificate>>) {
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
                reloads.nudge(Which::All).await;
                if let Some(cert) = certificate {
                    match cert.reload() {
                        Ok(()) => tracing::info!("block page certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "block page certificate kept: cannot load the new one"),
                    }
                }
            }
        }
    }
}

/// `sinkhole check`: loads every list and prints what it found. Returns
/// whether the configuration is usable: every list readable, and no block
/// rule reaching a protected name (so a list repository's CI stops it).
pub fn check(config: &Config, out: &mut impl std::io::Write) -> std::io::Result<bool> {
    let mut usable = true;
    let mut reports = Vec::new();
    let lists = check_lists(config);
    writeln!(
        out,
        "{:<28} {:<9} {:<10} {:>10} {:>9}  SOURCE",
        "LIST", "KIND", "FORMAT", "RULES", "SKIPPED"
    )?;
    for (source, loaded) in config.lists.iter().zip(lists) {
        let kind = if source.category.is_some() {
            "block"
        } else {
            "allow"
        };
        match loaded {
            Ok((parsed, from)) => {
                writeln!(
                    out,
                    "{:<28} {:<9} {:<10} {:>10} {:>9}  {}",
                    source.name,
                    kind,
                    parsed.format().as_str(),
                    parsed.len(),
                    parsed.skipped().count,
                    from
                )?;
                reports.push((source, Ok(parsed)));
            }
            Err(e) => {
                writeln!(
                    out,
                    "{:<28} {:<9} {:<10} {:>10} {:>9}  -",
                    source.name, kind, "-", "ERROR", "-"
                )?;
                reports.push((source, Err(e)));
            }
        }
    }
    let mut protected = 0u64;
    for (source, report) in &reports {
        match report {
            Ok(parsed) if parsed.skipped().count > 0 => {
                let skipped = parsed.skipped();
                writeln!(out, "\n{}: {} lines skipped", source.name, skipped.count)?;
                let at = source
                    .remote
                    .as_ref()
                    .map_or_else(|| source.path.display().to_string(), |r| r.url.clone());
                // Every protected-name rejection (each one stops the list's
                // CI); of the rest, the first few.
                let mut others = 0;
                for s in &skipped.first {
                    let is_protected = matches!(s.reason, SkipReason::Protected(_));
                    if !is_protected {
                        others += 1;
                        if others > 5 {
                            continue;
                        }
                    }
                    let prefix = if is_protected { "ERROR " } else { "" };
                    // A protected rejection's text is the rule's name, which
                    // its reason already gives.
                    if s.text.is_empty() || is_protected {
                        writeln!(out, "  {prefix}{at}:{}: {}", s.line, s.reason)?;
                    } else {
                        writeln!(
                            out,
                            "  {prefix}{at}:{}: {} ({})",
                            s.line,
                            s.reason,
                            Escaped(&s.text)
                        )?;
                    }
                }
                let kept = skipped.first.len() as u64;
                if skipped.count > kept.min(5) && skipped.count > 5 {
                    writeln!(out, "  … and {} more", skipped.count - kept.min(5))?;
                }
                protected += skipped.by_kind[PROTECTED_KIND];
            }
            Ok(_) => {}
            Err(e) => {
                usable = false;
                writeln!(out, "\n{}: ERROR: {e}", source.name)?;
            }
        }
    }
    if protected > 0 {
        usable = false;
        writeln!(
            out,
            "\n{protected} block rule(s) reach a protected name (guard.protected: {}); remove them, or allowlist what must stay reachable",
            config
                .guard
                .protected
                .iter()
                .map(DomainName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if !config.lists.iter().any(|l| l.category.is_some()) {
        writeln!(
            out,
            "\nWARNING: no blocklist is configured (lists:); sinkhole will forward every name"
        )?;
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

/// Index of "protected" in `SkipReason::KINDS`.
const PROTECTED_KIND: usize = 4;

/// Each list as `check` sees it, and where it came from: local files as
/// they are; remote lists fetched once now, else their copy in `state_dir`.
fn check_lists(config: &Config) -> Vec<Result<(ParsedList, &'static str), ListError>> {
    let remote = config.lists.iter().any(|l| l.remote.is_some());
    let fetcher = if remote {
        match Fetcher::new(config.tls_ca.as_deref()) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the HTTPS client");
                None
            }
        }
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
    config
        .lists
        .iter()
        .map(|source| {
            let Some(r) = &source.remote else {
                return reload::check_file(config, source).map(|p| (p, "file"));
            };
            let fetched = match (&fetcher, &runtime) {
                (Some(f), Some(rt)) => Some(rt.block_on(reload::check_download(config, source, f))),
                _ => None,
            };
            match fetched {
                Some(Ok(p)) => Ok((p, "url")),
                Some(Err(e)) => match reload::check_file(config, source) {
                    // The server is down but the copy is good: usable,
                    // as the server would start with it.
                    Ok(p) => {
                        eprintln!("warning: {}: {e}; checked the copy in state_dir", r.url);
                        Ok((p, "disk"))
                    }
                    Err(_) => Err(e),
                },
                None => reload::check_file(config, source).map(|p| (p, "disk")),
            }
        })
        .collect()
}

/// `sinkhole explain`: the decision for one name, offline.
pub fn explain(
    config: &Config,
    name: &DomainName,
    client: Option<String>,
) -> Result<Explanation, AppError> {
    let reloader = Reloader::start(config)?;
    let admission = client
        .as_deref()
        .and_then(|c| c.parse::<std::net::IpAddr>().ok())
        .map(|ip| config.access.stage().check(ip).as_str());
    let mut e = Explanation::new(&reloader.live().load(), name, client);
    e.access = admission;
    Ok(e)
}
