//! Loading lists into policy snapshots, and reloading them safely.
//!
//! Each list keeps its last good version. A reload re-reads every list; one
//! that cannot be read, or whose every line is rejected, stays at its
//! previous version, and the new snapshot is built from the mix and swapped
//! in atomically. Queries never wait: they hold whichever snapshot they
//! loaded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::config::{Config, ListSource};
use crate::lists::{self, Format, ParsedList, SkipLog};
use crate::metrics::Metrics;
use crate::policy::{self, Category, ListInput, Policy, PolicyError};

/// Why a list could not be (re)loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "every line of {path} was rejected ({skipped} lines); first: line {first_line}: {first_reason}"
    )]
    AllRejected {
        path: PathBuf,
        skipped: u64,
        first_line: u32,
        first_reason: String,
    },
}

/// Reads and parses one list; fails only when there is nothing usable.
pub fn load_list(source: &ListSource) -> Result<ParsedList, ListError> {
    let bytes = std::fs::read(&source.path).map_err(|e| ListError::Unreadable {
        path: source.path.clone(),
        reason: e.to_string(),
    })?;
    // Invalid UTF-8 must not sink a whole list: such lines become junk
    // characters, which the parser then rejects line by line.
    let text = String::from_utf8_lossy(&bytes);
    let parsed = lists::parse(&text, source.format);
    if parsed.is_empty() && parsed.skipped().count > 0 {
        let first = parsed.skipped().first.first();
        return Err(ListError::AllRejected {
            path: source.path.clone(),
            skipped: parsed.skipped().count,
            first_line: first.map_or(0, |s| s.line),
            first_reason: first.map_or_else(String::new, |s| s.reason.to_string()),
        });
    }
    Ok(if source.category.is_none() {
        parsed.into_allowlist()
    } else {
        parsed
    })
}

/// One list's state in a snapshot.
#[derive(Debug, Clone)]
pub struct ListStatus {
    pub name: String,
    pub path: PathBuf,
    pub format: Option<Format>,
    pub rules: usize,
    pub skipped: SkipLog,
    pub loaded_at: SystemTime,
    /// Set when the last reload failed and the previous version was kept.
    pub kept_because: Option<String>,
}

/// What queries read: the policy plus the per-list block counters.
pub struct Snapshot {
    pub policy: Policy,
    /// Indexed by `ListId`.
    pub blocked: Vec<Counter>,
    pub lists: Vec<ListStatus>,
}

#[derive(Clone)]
struct Loaded {
    parsed: Arc<ParsedList>,
    loaded_at: SystemTime,
}

/// Owns the lists' last good versions and the current snapshot.
pub struct Reloader {
    sources: Vec<ListSource>,
    categories: Vec<Category>,
    metrics: Arc<Metrics>,
    /// Serialises reloads; holds each list's last good version.
    loaded: Mutex<Vec<Loaded>>,
    current: ArcSwap<Snapshot>,
}

/// Why the first load failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("list {name:?}: {error}")]
    List { name: String, error: ListError },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl Reloader {
    /// Loads every list; any failure is fatal at start (there is no previous
    /// version to keep).
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let now = SystemTime::now();
        let mut loaded = Vec::with_capacity(config.lists.len());
        for source in &config.lists {
            let parsed = load_list(source).map_err(|error| StartError::List {
                name: source.name.clone(),
                error,
            })?;
            loaded.push(Loaded {
                parsed: Arc::new(parsed),
                loaded_at: now,
            });
        }
        let kept = vec![None; loaded.len()];
        let snapshot = build_snapshot(&config.lists, &config.categories, &loaded, &kept, &metrics)?;
        Ok(Self {
            sources: config.lists.clone(),
            categories: config.categories.clone(),
            metrics,
            loaded: Mutex::new(loaded),
            current: ArcSwap::from_pointee(snapshot),
        })
    }

    /// The snapshot queries should use now.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Shares the swap cell with the query path.
    pub fn current(&self) -> &ArcSwap<Snapshot> {
        &self.current
    }

    /// Re-reads every list and swaps in a new snapshot. Blocking: call from a
    /// blocking thread. Returns the new snapshot's list statuses.
    pub fn reload(&self) -> Vec<ListStatus> {
        let Ok(mut loaded) = self.loaded.lock() else {
            // A panic while reloading poisoned the lock; keep serving the
            // current snapshot rather than risk a half-built one.
            return self.current.load().lists.clone();
        };
        let now = SystemTime::now();
        let mut kept = vec![None; self.sources.len()];
        for (i, source) in self.sources.iter().enumerate() {
            match load_list(source) {
                Ok(parsed) => {
                    loaded[i] = Loaded {
                        parsed: Arc::new(parsed),
                        loaded_at: now,
                    }
                }
                Err(e) => {
                    tracing::warn!(list = %source.name, error = %e, "list kept at its previous version");
                    kept[i] = Some(e.to_string());
                }
            }
        }
        match build_snapshot(
            &self.sources,
            &self.categories,
            &loaded,
            &kept,
            &self.metrics,
        ) {
            Ok(snapshot) => {
                let ok = kept.iter().all(Option::is_none);
                self.metrics.reload_done(ok);
                let lists = snapshot.lists.clone();
                self.current.store(Arc::new(snapshot));
                tracing::info!(
                    rules = lists.iter().map(|l| l.rules).sum::<usize>(),
                    ok,
                    "lists reloaded"
                );
                lists
            }
            Err(e) => {
                // Cannot happen with validated config; keep serving.
                self.metrics.reload_done(false);
                tracing::error!(error = %e, "reload failed; previous snapshot kept");
                self.current.load().lists.clone()
            }
        }
    }
}

fn build_snapshot(
    sources: &[ListSource],
    categories: &[Category],
    loaded: &[Loaded],
    kept: &[Option<String>],
    metrics: &Metrics,
) -> Result<Snapshot, PolicyError> {
    let inputs: Vec<ListInput> = sources
        .iter()
        .zip(loaded)
        .map(|(s, l)| ListInput {
            name: s.name.clone(),
            path: s.path.clone(),
            category: s.category.clone(),
            rules: l.parsed.clone(),
        })
        .collect();
    let policy = policy::build(categories.to_vec(), &inputs)?;
    let blocked = policy
        .lists()
        .iter()
        .map(|l| match l.category {
            Some(c) => {
                metrics.blocked_counter(&policy.categories()[usize::from(c.0)].name, &l.name)
            }
            // Allowlists block nothing: a detached counter keeps indices
            // aligned without exporting an always-zero series.
            None => Counter::default(),
        })
        .collect();
    let lists = sources
        .iter()
        .zip(loaded)
        .zip(kept)
        .map(|((s, l), kept)| {
            let at = l
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics.set_list(&s.name, l.parsed.len(), at);
            ListStatus {
                name: s.name.clone(),
                path: s.path.clone(),
                format: Some(l.parsed.format()),
                rules: l.parsed.len(),
                skipped: l.parsed.skipped().clone(),
                loaded_at: l.loaded_at,
                kept_because: kept.clone(),
            }
        })
        .collect();
    Ok(Snapshot {
        policy,
        blocked,
        lists,
    })
}
