//! The lists' lifecycle: what is in service, what a change brings, and
//! whether it may replace what is in service.
//!
//! Every trigger (a watched file changing, `SIGHUP`, `POST /reload`, a
//! remote list's refresh) ends in [`Reloader::apply`], on one task
//! ([`trigger`]), so reloads never overlap. Each list keeps its last good
//! version: whatever arrives is verified (signature), decoded (text, not
//! HTML or binary), parsed, guarded (protected names, shrink) and only then
//! taken; otherwise the version in service stays and the status says why.
//! A new policy is built only when some list actually changed, off the
//! query path, and swapped in at once ([`Live`]); queries finish on the
//! snapshot they loaded.

pub mod state;
pub mod trigger;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::{Config, Guard, ListSource};
use crate::lists::guard::{Protected, shrinks_too_much};
use crate::lists::remote::{FetchError, Validators};
use crate::lists::signature::{self, SignatureError};
use crate::lists::source::{self, Digest, Escaped, MAX_FILE_BYTES, Stamp, Unreadable};
use crate::lists::{self, Format, ParsedList, SkipLog, SkipReason, read};
use crate::policy::{self, Category, ListInput, Live, Policy, PolicyError};

/// Why a version of a list was not taken. Displayed as `WHERE:LINE: why`
/// (or `WHERE: why` when no line is to blame), `WHERE` being the file or
/// the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("{}", located(at, what.line(), what))]
    Unreadable { at: String, what: Unreadable },
    #[error("{at}: {error}")]
    Fetch { at: String, error: FetchError },
    #[error("{at}: {error}")]
    Signature { at: String, error: SignatureError },
    #[error(
        "{at}:{first_line}: every line was rejected ({skipped} lines); the first: {}",
        Escaped(first_reason)
    )]
    AllRejected {
        at: String,
        skipped: u64,
        first_line: u32,
        first_reason: String,
    },
    #[error(
        "{at}:1: no line is a rule (only comments or blank lines); a list must hold at least one"
    )]
    NoRules { at: String },
    #[error(
        "{at}: has {new} rules, down from {in_service} in service: more than guard.max_shrink ({max}%) lost; kept (POST /reload?force=true takes it)"
    )]
    Shrunk {
        at: String,
        in_service: usize,
        new: usize,
        max: u8,
    },
    #[error("{at}: not fetched yet, and no copy in state_dir")]
    NeverFetched { at: String },
}

fn located(at: &str, line: Option<u32>, what: &impl std::fmt::Display) -> String {
    match line {
        Some(l) => format!("{at}:{l}: {what}"),
        None => format!("{at}: {what}"),
    }
}

/// Where the version in service came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The list's file (`path:`).
    File,
    /// Downloaded (or confirmed current by a `304`) from its `url:`.
    Url,
    /// The copy in `state_dir`, read at start with the server unreachable
    /// or not yet asked.
    Disk,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Url => "url",
            Source::Disk => "disk",
        }
    }
}

/// How a list stands after the last attempt to update it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The last attempt took the list, or found it unchanged.
    Ok,
    /// The last attempt failed; the previous version stays in service.
    Kept(String),
    /// No version at all yet (a remote list never fetched, no copy).
    Missing(String),
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Kept(_) => "kept",
            Health::Missing(_) => "missing",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Health::Ok => None,
            Health::Kept(e) | Health::Missing(e) => Some(e),
        }
    }
}

/// One list's state, as `/readyz`, `/reload`, metrics and logs show it.
#[derive(Debug, Clone)]
pub struct ListStatus {
    pub name: String,
    /// The file read (for `url:` lists, the copy in `state_dir`).
    pub path: PathBuf,
    pub url: Option<String>,
    pub format: Option<Format>,
    pub rules: usize,
    pub skipped: SkipLog,
    /// When the version in service was taken.
    pub updated: Option<SystemTime>,
    pub source: Option<Source>,
    pub health: Health,
}

impl ListStatus {
    /// Where messages say the list lives.
    pub fn location(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// A version of a list that was taken.
struct Version {
    parsed: Arc<ParsedList>,
    /// Of the bytes it was parsed from: the same bytes again change nothing.
    digest: u64,
    /// A local file's `stat` when it was read: the same again is not read.
    stamp: Option<Stamp>,
    updated: SystemTime,
    source: Source,
}

struct Slot {
    version: Option<Version>,
    health: Health,
    /// A remote list's validators, for the next conditional request.
    validators: Validators,
}

/// What a trigger brought for one list.
#[derive(Debug)]
pub enum Arrival {
    /// Read the list's file now (a local list).
    ReadFile,
    /// A download.
    Downloaded {
        bytes: Vec<u8>,
        content_type: Option<String>,
        /// The detached signature, when the list must be signed.
        signature: Option<Result<Vec<u8>, FetchError>>,
        validators: Validators,
    },
    /// The server says our copy is current (`304`).
    NotModified,
    /// The download failed.
    Failed(FetchError),
}

/// What a load or reload did, for whoever watches (metrics).
pub struct Reloaded<'a> {
    /// Indexed like the configured lists (`ListId`).
    pub lists: &'a [ListStatus],
    /// The lists parsed this time (taken or not) and what they rejected,
    /// by [`SkipReason::kind`].
    pub parsed: &'a [(usize, [u64; SkipReason::KINDS.len()])],
    /// The downloads this reload took in: list and result (`ok`,
    /// `not_modified` or `error`).
    pub fetches: &'a [(usize, &'static str)],
    /// A new policy was built and swapped in.
    pub built: bool,
    /// Every list the trigger touched is ok.
    pub ok: bool,
    /// A reload, not the first load at start.
    pub reload: bool,
}

type Watcher = Box<dyn Fn(&Reloaded<'_>) + Send + Sync>;

/// Owns the lists' versions and swaps the policy in service.
pub struct Reloader {
    sources: Vec<ListSource>,
    categories: Vec<Category>,
    guard: Guard,
    protected: Protected,
    slots: Mutex<Vec<Slot>>,
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
    /// Loads every list. A local list that cannot be taken is fatal (there
    /// is no previous version to keep, and `check` must say so); a remote
    /// list starts from its copy in `state_dir`, or with no version at all,
    /// which does not stop DNS.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let protected = Protected::new(&config.guard.protected);
        let now = SystemTime::now();
        let mut slots = Vec::with_capacity(config.lists.len());
        let mut parsed_kinds = Vec::new();
        for (i, source) in config.lists.iter().enumerate() {
            let slot = match &source.remote {
                None => {
                    let (parsed, digest, stamp) =
                        load_file(source, &config.guard, &protected, None, false).map_err(
                            |error| StartError::List {
                                name: source.name.clone(),
                                error,
                            },
                        )?;
                    parsed_kinds.push((i, parsed.skipped().by_kind));
                    Slot {
                        version: Some(Version {
                            parsed: Arc::new(parsed),
                            digest,
                            stamp: Some(stamp),
                            updated: now,
                            source: Source::File,
                        }),
                        health: Health::Ok,
                        validators: Validators::default(),
                    }
                }
                Some(remote) => {
                    let at = remote.url.clone();
                    match state::read_copy(source) {
                        None => Slot {
                            version: None,
                            health: Health::Missing(ListError::NeverFetched { at }.to_string()),
                            validators: Validators::default(),
                        },
                        Some(copy) => {
                            match accept(
                                source,
                                &config.guard,
                                &protected,
                                &copy.bytes,
                                None,
                                copy.signature.as_deref().ok_or_else(|| {
                                    SignatureError::Missing("no .minisig beside the copy".into())
                                }),
                                None,
                                false,
                                &source.path.display().to_string(),
                            ) {
                                Ok(parsed) => {
                                    parsed_kinds.push((i, parsed.skipped().by_kind));
                                    Slot {
                                        version: Some(Version {
                                            digest: Digest::of(&copy.bytes),
                                            stamp: None,
                                            parsed: Arc::new(parsed),
                                            updated: copy.updated,
                                            source: Source::Disk,
                                        }),
                                        health: Health::Ok,
                                        validators: copy.validators,
                                    }
                                }
                                Err(e) => {
                                    tracing::error!(list = %source.name, error = %e, "the copy in state_dir cannot be used; waiting for a download");
                                    Slot {
                                        version: None,
                                        health: Health::Missing(e.to_string()),
                                        validators: Validators::default(),
                                    }
                                }
                            }
                        }
                    }
                }
            };
            slots.push(slot);
        }
        let policy = build_policy(&config.lists, &config.categories, &slots)?;
        let statuses = statuses(&config.lists, &slots);
        let reloader = Self {
            sources: config.lists.clone(),
            categories: config.categories.clone(),
            guard: config.guard.clone(),
            protected,
            slots: Mutex::new(slots),
            live: Arc::new(Live::from_pointee(policy)),
            statuses: ArcSwap::from_pointee(statuses),
            watchers: Vec::new(),
        };
        reloader.log_parsed(&parsed_kinds);
        Ok(reloader)
    }

    /// Calls `watch` after every reload, and once now with the first load.
    pub fn watch(&mut self, watch: impl Fn(&Reloaded<'_>) + Send + Sync + 'static) {
        let lists = self.statuses.load();
        let parsed: Vec<_> = lists
            .iter()
            .enumerate()
            .filter(|(_, l)| l.updated.is_some())
            .map(|(i, l)| (i, l.skipped.by_kind))
            .collect();
        watch(&Reloaded {
            lists: &lists,
            parsed: &parsed,
            fetches: &[],
            built: true,
            ok: true,
            reload: false,
        });
        self.watchers.push(Box::new(watch));
    }

    /// The policy in service, as queries read it.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Each list's state.
    pub fn statuses(&self) -> Arc<Vec<ListStatus>> {
        self.statuses.load_full()
    }

    /// The configured lists, indexed like the statuses.
    pub fn sources(&self) -> &[ListSource] {
        &self.sources
    }

    /// Every list has a version in service (`/readyz`).
    pub fn complete(&self) -> bool {
        self.statuses.load().iter().all(|l| l.updated.is_some())
    }

    /// A remote list's validators and whether it has a version, for the
    /// next fetch.
    pub fn validators(&self, list: usize) -> (Validators, bool) {
        match self.slots.lock() {
            Ok(slots) => slots.get(list).map_or((Validators::default(), false), |s| {
                (s.validators.clone(), s.version.is_some())
            }),
            Err(_) => (Validators::default(), false),
        }
    }

    /// Takes what the triggers brought, where the guard rails allow, and
    /// swaps in a new policy if anything changed. `force` takes a list that
    /// shrank too much. Blocking (reads and parses): call from a blocking
    /// thread. Returns the statuses afterwards.
    pub fn apply(&self, arrivals: Vec<(usize, Arrival)>, force: bool) -> Arc<Vec<ListStatus>> {
        let Ok(mut slots) = self.slots.lock() else {
            // A panic while reloading poisoned the lock; keep serving the
            // current snapshot rather than risk a half-built one.
            return self.statuses();
        };
        let now = SystemTime::now();
        let mut changed = false;
        let mut ok = true;
        let mut parsed_kinds = Vec::new();
        let mut copies = Vec::new();
        let fetches: Vec<(usize, &'static str)> = arrivals
            .iter()
            .filter_map(|(i, a)| match a {
                Arrival::ReadFile => None,
                Arrival::Downloaded { .. } => Some((*i, "ok")),
                Arrival::NotModified => Some((*i, "not_modified")),
                Arrival::Failed(_) => Some((*i, "error")),
            })
            .collect();
        let mut built = false;
        for (i, arrival) in arrivals {
            let (Some(source), Some(slot)) = (self.sources.get(i), slots.get_mut(i)) else {
                continue;
            };
            let outcome = self.take(source, slot, arrival, force, now, &mut parsed_kinds, i);
            match outcome {
                Taken::New { copy } => {
                    changed = true;
                    if let Some(c) = copy {
                        copies.push((i, c));
                    }
                }
                Taken::Same => {}
                Taken::Not(e) => {
                    ok = false;
                    let e = e.to_string();
                    if slot.version.is_some() {
                        tracing::warn!(event = "list_kept", list = %source.name, reason = %e, "list kept at its previous version");
                        slot.health = Health::Kept(e);
                    } else {
                        tracing::warn!(event = "list_missing", list = %source.name, reason = %e, "list has no version yet");
                        slot.health = Health::Missing(e);
                    }
                }
            }
        }
        if changed {
            let started = std::time::Instant::now();
            match build_policy(&self.sources, &self.categories, &slots) {
                Ok(policy) => {
                    let rules = policy.rule_count();
                    let old = self.live.swap(Arc::new(policy));
                    tracing::info!(
                        event = "policy_built",
                        rules,
                        build_ms = started.elapsed().as_millis() as u64,
                        "new policy in service"
                    );
                    release(old);
                    built = true;
                }
                Err(e) => {
                    // Cannot happen with a validated config; keep serving.
                    tracing::error!(error = %e, "policy build failed; previous policy kept");
                    ok = false;
                }
            }
        }
        let lists = Arc::new(statuses(&self.sources, &slots));
        self.statuses.store(lists.clone());
        drop(slots);
        // Remote lists' copies: written after the swap, off the answer's
        // way; a failure to write is logged and leaves the old copy.
        for (i, copy) in copies {
            if let Some(source) = self.sources.get(i)
                && let Err(e) = state::write_copy(source, &copy)
            {
                tracing::error!(list = %source.name, error = %e, "cannot keep a copy in state_dir; a restart without the list server would not have this version");
            }
        }
        self.log_parsed(&parsed_kinds);
        let r = Reloaded {
            lists: &lists,
            parsed: &parsed_kinds,
            fetches: &fetches,
            built,
            ok,
            reload: true,
        };
        for w in &self.watchers {
            w(&r);
        }
        if changed {
            trim_heap();
        }
        lists
    }

    #[allow(clippy::too_many_arguments)]
    fn take(
        &self,
        source: &ListSource,
        slot: &mut Slot,
        arrival: Arrival,
        force: bool,
        now: SystemTime,
        parsed_kinds: &mut Vec<(usize, [u64; SkipReason::KINDS.len()])>,
        i: usize,
    ) -> Taken {
        let started = std::time::Instant::now();
        let in_service = slot.version.as_ref().map(|v| v.parsed.len());
        let known = slot.version.as_ref().map(|v| v.digest);
        let (parsed, digest, copy, stamp) = match arrival {
            Arrival::NotModified => {
                if let Some(v) = &mut slot.version {
                    v.source = Source::Url;
                }
                slot.health = if slot.version.is_some() {
                    Health::Ok
                } else {
                    // A 304 to an unconditional request: a broken server.
                    Health::Missing(
                        "the server answered 304 to a request for a list we do not have".into(),
                    )
                };
                return Taken::Same;
            }
            Arrival::Failed(error) => {
                let at = source
                    .remote
                    .as_ref()
                    .map_or_else(String::new, |r| r.url.clone());
                return Taken::Not(ListError::Fetch { at, error });
            }
            Arrival::ReadFile => {
                // Untouched since it was read (a SIGHUP, a reload of
                // another list, an event for a neighbour in the directory):
                // not read again. A forced reload reads regardless.
                let stamp = slot.version.as_ref().and_then(|v| v.stamp);
                if !force && stamp.is_some() && stamp == Stamp::now(&source.path) {
                    slot.health = Health::Ok;
                    return Taken::Same;
                }
                match load_file(source, &self.guard, &self.protected, in_service, force) {
                    Ok((p, d, stamp)) => {
                        if known == Some(d) {
                            if let Some(v) = &mut slot.version {
                                v.stamp = Some(stamp);
                            }
                            slot.health = Health::Ok;
                            return Taken::Same;
                        }
                        (p, d, None, Some(stamp))
                    }
                    Err(e) => return Taken::Not(e),
                }
            }
            Arrival::Downloaded {
                bytes,
                content_type,
                signature,
                validators,
            } => {
                let at = source
                    .remote
                    .as_ref()
                    .map_or_else(String::new, |r| r.url.clone());
                let d = Digest::of(&bytes);
                if known == Some(d) {
                    // Same body without a 304 (a server that ignores our
                    // validators): nothing to rebuild.
                    slot.validators = validators;
                    if let Some(v) = &mut slot.version {
                        v.source = Source::Url;
                    }
                    slot.health = Health::Ok;
                    return Taken::Same;
                }
                let sig = match &signature {
                    None => Err(SignatureError::Missing("not fetched".into())),
                    Some(Ok(s)) => Ok(s.as_slice()),
                    Some(Err(e)) => Err(SignatureError::Missing(format!("{at}.minisig: {e}"))),
                };
                match accept(
                    source,
                    &self.guard,
                    &self.protected,
                    &bytes,
                    content_type.as_deref(),
                    sig,
                    in_service,
                    force,
                    &at,
                ) {
                    Ok(p) => {
                        slot.validators = validators.clone();
                        let copy = state::Copy {
                            bytes,
                            signature: signature.and_then(Result::ok),
                            validators,
                            updated: now,
                        };
                        (p, d, Some(copy), None)
                    }
                    Err(e) => return Taken::Not(e),
                }
            }
        };
        parsed_kinds.push((i, parsed.skipped().by_kind));
        let source_kind = if source.remote.is_some() {
            Source::Url
        } else {
            Source::File
        };
        tracing::info!(
            event = "list_taken",
            list = %source.name,
            rules = parsed.len(),
            previous = in_service.unwrap_or(0),
            skipped = parsed.skipped().count,
            source = source_kind.as_str(),
            read_ms = started.elapsed().as_millis() as u64,
            "list taken"
        );
        slot.version = Some(Version {
            parsed: Arc::new(parsed),
            digest,
            stamp,
            updated: now,
            source: source_kind,
        });
        slot.health = Health::Ok;
        Taken::New { copy }
    }

    /// One log line per rule the guard rails rejected (the first few per
    /// list; the rest are counted in the metrics).
    fn log_parsed(&self, parsed: &[(usize, [u64; SkipReason::KINDS.len()])]) {
        let statuses = self.statuses.load();
        for (i, _) in parsed {
            let (Some(source), Some(status)) = (self.sources.get(*i), statuses.get(*i)) else {
                continue;
            };
            for s in &status.skipped.first {
                if let SkipReason::Protected(name) = &s.reason {
                    tracing::error!(
                        event = "rule_rejected",
                        list = %source.name,
                        file = %status.location(),
                        line = s.line,
                        protected = %name,
                        reason = "protected",
                        "{}:{}: blocks protected name {name}",
                        status.location(),
                        s.line
                    );
                }
            }
        }
    }
}

enum Taken {
    New { copy: Option<state::Copy> },
    Same,
    Not(ListError),
}

/// A local list's detached signature (`PATH.minisig`), read only when the
/// list must be signed.
fn local_signature(source: &ListSource) -> Result<Vec<u8>, SignatureError> {
    if source.public_key.is_none() {
        return Ok(Vec::new());
    }
    let path = source.signature_path();
    source::read_regular_file(&path, 64 << 10)
        .map_err(|e| SignatureError::Missing(format!("{}: {e}", path.display())))
}

/// Reads, verifies and parses a local list a chunk at a time ([`read`]),
/// then judges it as any version ([`judge`]). For start, reloads, `check`,
/// `explain` and `diff` alike. Returns the list, its digest and the file's
/// stamp.
pub fn load_file(
    source: &ListSource,
    guard: &Guard,
    protected: &Protected,
    in_service: Option<usize>,
    force: bool,
) -> Result<(ParsedList, u64, Stamp), ListError> {
    let at = source.path.display().to_string();
    let signature_error = |error| ListError::Signature {
        at: at.clone(),
        error,
    };
    let expected = match &source.public_key {
        None => None,
        Some(key) => {
            let sig = local_signature(source).map_err(signature_error)?;
            Some(signature::Expected::new(key, &sig).map_err(signature_error)?)
        }
    };
    let file = read::read_file(
        &source.path,
        MAX_FILE_BYTES,
        source.format,
        expected.as_ref(),
    )
    .map_err(|e| match e {
        read::ReadError::Unreadable(what) => ListError::Unreadable {
            at: at.clone(),
            what,
        },
        read::ReadError::Signature(error) => signature_error(error),
    })?;
    let parsed = judge(
        source,
        guard,
        protected,
        file.parsed,
        file.not_utf8,
        in_service,
        force,
        &at,
    )?;
    Ok((parsed, file.digest, file.stamp))
}

/// Reads and parses one list as `check` does, with the default guard.
pub fn load_list(source: &ListSource) -> Result<ParsedList, ListError> {
    let guard = Guard::default();
    let protected = Protected::new(&guard.protected);
    load_file(source, &guard, &protected, None, false).map(|(p, ..)| p)
}

/// A list as `check` reads it from disk: a local list's file, or a remote
/// list's copy in `state_dir`.
pub fn check_file(config: &Config, source: &ListSource) -> Result<ParsedList, ListError> {
    let protected = Protected::new(&config.guard.protected);
    let Some(remote) = &source.remote else {
        return load_file(source, &config.guard, &protected, None, false).map(|(p, ..)| p);
    };
    let copy = state::read_copy(source).ok_or_else(|| ListError::NeverFetched {
        at: remote.url.clone(),
    })?;
    let at = source.path.display().to_string();
    accept(
        source,
        &config.guard,
        &protected,
        &copy.bytes,
        None,
        copy.signature
            .as_deref()
            .ok_or_else(|| SignatureError::Missing("no .minisig beside the copy".into())),
        None,
        false,
        &at,
    )
}

/// A remote list as `check` fetches it now (unconditionally).
pub async fn check_download(
    config: &Config,
    source: &ListSource,
    fetcher: &crate::lists::remote::Fetcher,
) -> Result<ParsedList, ListError> {
    use crate::lists::remote::Fetched;
    let Some(remote) = &source.remote else {
        return check_file(config, source);
    };
    let at = remote.url.clone();
    let body = match fetcher.fetch(&remote.url, &Validators::default()).await {
        Ok(Fetched::New(body)) => body,
        Ok(Fetched::NotModified) => {
            return Err(ListError::Fetch {
                at,
                error: FetchError::Status(304),
            });
        }
        Err(error) => return Err(ListError::Fetch { at, error }),
    };
    let signature = match &source.public_key {
        Some(_) => Some(fetcher.fetch_small(&remote.signature_url()).await),
        None => None,
    };
    let sig = match &signature {
        None => Err(SignatureError::Missing("not fetched".into())),
        Some(Ok(s)) => Ok(s.as_slice()),
        Some(Err(e)) => Err(SignatureError::Missing(format!("{at}.minisig: {e}"))),
    };
    let protected = Protected::new(&config.guard.protected);
    accept(
        source,
        &config.guard,
        &protected,
        &body.bytes,
        body.content_type.as_deref(),
        sig,
        None,
        false,
        &at,
    )
}

/// Decides whether `bytes` may become the list's version in service.
#[allow(clippy::too_many_arguments)]
fn accept(
    source: &ListSource,
    guard: &Guard,
    protected: &Protected,
    bytes: &[u8],
    content_type: Option<&str>,
    signature: Result<&[u8], SignatureError>,
    in_service: Option<usize>,
    force: bool,
    at: &str,
) -> Result<ParsedList, ListError> {
    if let Some(key) = &source.public_key {
        let sig = signature.map_err(|error| ListError::Signature {
            at: at.to_owned(),
            error,
        })?;
        signature::verify(key, bytes, sig).map_err(|error| ListError::Signature {
            at: at.to_owned(),
            error,
        })?;
    }
    let text = source::decode(bytes, content_type).map_err(|what| ListError::Unreadable {
        at: at.to_owned(),
        what,
    })?;
    let parsed = lists::parse(&text.text, source.format);
    judge(
        source,
        guard,
        protected,
        parsed,
        text.not_utf8,
        in_service,
        force,
        at,
    )
}

/// The rules every version must pass, however it was read: lines that were
/// not UTF-8 reported, an allowlist made one, protected names rejected,
/// not empty where that would lose rules, not shrunk past the guard.
#[allow(clippy::too_many_arguments)]
fn judge(
    source: &ListSource,
    guard: &Guard,
    protected: &Protected,
    mut parsed: ParsedList,
    not_utf8: Vec<u32>,
    in_service: Option<usize>,
    force: bool,
    at: &str,
) -> Result<ParsedList, ListError> {
    for line in not_utf8 {
        parsed.skip(line, "", SkipReason::Unrecognised("not UTF-8 text"));
    }
    parsed.sort_skipped();
    let parsed = if source.category.is_none() {
        parsed.into_allowlist()
    } else {
        protected.apply(&mut parsed);
        parsed
    };
    if parsed.is_empty() {
        if parsed.skipped().count > 0 {
            let first = parsed.skipped().first.first();
            return Err(ListError::AllRejected {
                at: at.to_owned(),
                skipped: parsed.skipped().count,
                first_line: first.map_or(1, |s| s.line),
                first_reason: first.map_or_else(String::new, |s| s.reason.to_string()),
            });
        }
        // An empty file is a placeholder only where nothing would be lost:
        // a download must always look like a list.
        if source.remote.is_some() || in_service.is_some_and(|n| n > 0) {
            return Err(ListError::NoRules { at: at.to_owned() });
        }
    }
    if let Some(old) = in_service
        && !force
        && shrinks_too_much(old, parsed.len(), guard.max_shrink_percent)
    {
        return Err(ListError::Shrunk {
            at: at.to_owned(),
            in_service: old,
            new: parsed.len(),
            max: guard.max_shrink_percent,
        });
    }
    Ok(parsed)
}

/// Frees the policy taken out of service here, on the builder thread: a
/// query still holding it (for microseconds) would otherwise be the one to
/// free a hundred megabytes, on a DNS worker. Waits for those queries to
/// finish, up to a second, then drops it (whoever drops last frees).
fn release(old: Arc<Policy>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(old);
}

/// Gives the freed parts of the old policy back to the system, so memory
/// returns to its steady state after a reload instead of staying at peak.
fn trim_heap() {
    // SAFETY: glibc's malloc_trim only walks the allocator's own lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn build_policy(
    sources: &[ListSource],
    categories: &[Category],
    slots: &[Slot],
) -> Result<Policy, PolicyError> {
    let empty = ParsedList::new(Format::Domains);
    let inputs: Vec<ListInput<'_, ParsedList>> = sources
        .iter()
        .zip(slots)
        .map(|(s, slot)| ListInput {
            name: &s.name,
            path: &s.path,
            category: s.category.as_deref(),
            rules: slot.version.as_ref().map_or(&empty, |v| &*v.parsed),
        })
        .collect();
    policy::build(categories.to_vec(), &inputs)
}

fn statuses(sources: &[ListSource], slots: &[Slot]) -> Vec<ListStatus> {
    sources
        .iter()
        .zip(slots)
        .map(|(s, slot)| ListStatus {
            name: s.name.clone(),
            path: s.path.clone(),
            url: s.remote.as_ref().map(|r| r.url.clone()),
            format: slot.version.as_ref().map(|v| v.parsed.format()),
            rules: slot.version.as_ref().map_or(0, |v| v.parsed.len()),
            skipped: slot
                .version
                .as_ref()
                .map(|v| v.parsed.skipped().clone())
                .unwrap_or_default(),
            updated: slot.version.as_ref().map(|v| v.updated),
            source: slot.version.as_ref().map(|v| v.source),
            health: slot.health.clone(),
        })
        .collect()
}
