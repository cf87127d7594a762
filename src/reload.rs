//! Loading lists into policy snapshots, and reloading them safely.
//!
//! Each list keeps its last good version. A reload re-reads every list; one
//! that cannot be read, or whose every line is rejected, stays at its
//! previous version, and the new policy is built from the mix and swapped
//! in atomically ([`Live`]). Queries never wait: they hold whichever
//! snapshot they loaded. The DNS side sees only the `Live` cell; whoever
//! cares about reloads (the metrics) registers with [`Reloader::watch`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::{Config, ListSource};
use crate::lists::{self, Format, ParsedList, SkipLog};
use crate::policy::{self, Category, ListInput, Live, Policy, PolicyError};

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

#[derive(Clone)]
struct Loaded {
    parsed: Arc<ParsedList>,
    loaded_at: SystemTime,
}

/// What a load or reload did, for whoever watches (the metrics).
pub struct Reloaded<'a> {
    /// Indexed like the configured lists (`ListId`).
    pub lists: &'a [ListStatus],
    /// Every list took its new version.
    pub ok: bool,
    /// A reload, not the first load at start.
    pub reload: bool,
}

type Watcher = Box<dyn Fn(&Reloaded<'_>) + Send + Sync>;

/// Owns the lists' last good versions and swaps the policy in service.
pub struct Reloader {
    sources: Vec<ListSource>,
    categories: Vec<Category>,
    /// Serialises reloads; holds each list's last good version.
    loaded: Mutex<Vec<Loaded>>,
    live: Arc<Live>,
    statuses: ArcSwap<Vec<ListStatus>>,
    watchers: Vec<Watcher>,
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
    pub fn start(config: &Config) -> Result<Self, StartError> {
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
        let policy = build_policy(&config.lists, &config.categories, &loaded)?;
        let statuses = statuses(&config.lists, &loaded, &kept);
        Ok(Self {
            sources: config.lists.clone(),
            categories: config.categories.clone(),
            loaded: Mutex::new(loaded),
            live: Arc::new(Live::from_pointee(policy)),
            statuses: ArcSwap::from_pointee(statuses),
            watchers: Vec::new(),
        })
    }

    /// Calls `watch` after every reload, and once now with the first load.
    pub fn watch(&mut self, watch: impl Fn(&Reloaded<'_>) + Send + Sync + 'static) {
        watch(&Reloaded {
            lists: &self.statuses.load(),
            ok: true,
            reload: false,
        });
        self.watchers.push(Box::new(watch));
    }

    /// The policy in service, as queries read it.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Each list's state in the policy in service.
    pub fn statuses(&self) -> Arc<Vec<ListStatus>> {
        self.statuses.load_full()
    }

    /// Re-reads every list and swaps in a new policy. Blocking: call from a
    /// blocking thread. Returns the new statuses.
    pub fn reload(&self) -> Arc<Vec<ListStatus>> {
        let Ok(mut loaded) = self.loaded.lock() else {
            // A panic while reloading poisoned the lock; keep serving the
            // current snapshot rather than risk a half-built one.
            return self.statuses();
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
        let ok = kept.iter().all(Option::is_none);
        match build_policy(&self.sources, &self.categories, &loaded) {
            Ok(policy) => {
                let statuses = Arc::new(statuses(&self.sources, &loaded, &kept));
                self.live.store(Arc::new(policy));
                self.statuses.store(statuses.clone());
                tracing::info!(
                    rules = statuses.iter().map(|l| l.rules).sum::<usize>(),
                    ok,
                    "lists reloaded"
                );
                self.tell(&statuses, ok);
                statuses
            }
            Err(e) => {
                // Cannot happen with validated config; keep serving.
                tracing::error!(error = %e, "reload failed; previous policy kept");
                let statuses = self.statuses();
                self.tell(&statuses, false);
                statuses
            }
        }
    }

    fn tell(&self, lists: &[ListStatus], ok: bool) {
        let r = Reloaded {
            lists,
            ok,
            reload: true,
        };
        for w in &self.watchers {
            w(&r);
        }
    }
}

fn build_policy(
    sources: &[ListSource],
    categories: &[Category],
    loaded: &[Loaded],
) -> Result<Policy, PolicyError> {
    let inputs: Vec<ListInput<'_, ParsedList>> = sources
        .iter()
        .zip(loaded)
        .map(|(s, l)| ListInput {
            name: &s.name,
            path: &s.path,
            category: s.category.as_deref(),
            rules: &*l.parsed,
        })
        .collect();
    policy::build(categories.to_vec(), &inputs)
}

fn statuses(sources: &[ListSource], loaded: &[Loaded], kept: &[Option<String>]) -> Vec<ListStatus> {
    sources
        .iter()
        .zip(loaded)
        .zip(kept)
        .map(|((s, l), kept)| ListStatus {
            name: s.name.clone(),
            path: s.path.clone(),
            format: Some(l.parsed.format()),
            rules: l.parsed.len(),
            skipped: l.parsed.skipped().clone(),
            loaded_at: l.loaded_at,
            kept_because: kept.clone(),
        })
        .collect()
}
