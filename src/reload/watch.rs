//! Watching local list files, so an edit is in service within 2 s.
//!
//! The directories are watched, not the files: an editor saves by writing a
//! new file and renaming it over the old one, `git pull` may delete and
//! create, and a Kubernetes ConfigMap swaps a `..data` symlink, and in each
//! case a watch on the old file would go quiet (it follows the replaced
//! inode). Any change in a list's directory (or in the directory its
//! symlink points into) marks that list; after a short quiet spell the
//! marked lists are reloaded. Re-reading an unchanged file costs a read and
//! a hash and changes nothing, so false alarms are cheap.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::trigger::{Reloads, Which};
use crate::config::ListSource;

/// Quiet spell after the last change before reloading (an editor's or
/// git's burst of events is one change).
const QUIET: Duration = Duration::from_millis(200);
/// The longest a steady stream of changes can hold a reload back.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// How often the fallback poller looks, where inotify is unavailable.
const POLL: Duration = Duration::from_millis(500);

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: Box<dyn notify::Watcher + Send>,
}

/// Starts watching the local lists' directories. `None` when no list is a
/// local file.
pub fn start(
    sources: &[ListSource],
    reloads: Reloads,
    shutdown: CancellationToken,
) -> Option<FileWatch> {
    // Directory → lists whose file (or its signature) lives there.
    let mut dirs: HashMap<PathBuf, BTreeSet<usize>> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        if s.remote.is_some() {
            continue;
        }
        let mut add = |p: &Path| {
            if let Some(d) = p.parent() {
                let d = if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                };
                dirs.entry(d.to_owned()).or_default().insert(i);
            }
        };
        add(&s.path);
        if let Ok(real) = std::fs::canonicalize(&s.path) {
            add(&real);
        }
    }
    if dirs.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel::<usize>(256);
    let overflow = Arc::new(AtomicBool::new(false));
    let locals: Vec<usize> = dirs.values().flatten().copied().collect();
    let by_dir = Arc::new(dirs);
    let handler = {
        let by_dir = by_dir.clone();
        let overflow = overflow.clone();
        move |res: notify::Result<notify::Event>| {
            let event = match res {
                Ok(e) => e,
                Err(e) => {
                    // Lost events (queue overflow): reread every local list.
                    tracing::warn!(error = %e, "file watch error; rereading local lists");
                    overflow.store(true, Ordering::Release);
                    let _ = tx.try_send(usize::MAX);
                    return;
                }
            };
            // Our own reads (open, read, close) are not changes.
            if matches!(
                event.kind,
                EventKind::Access(
                    AccessKind::Read
                        | AccessKind::Open(_)
                        | AccessKind::Close(AccessMode::Read)
                        | AccessKind::Close(AccessMode::Execute)
                )
            ) {
                return;
            }
            for path in &event.paths {
                let Some(dir) = path.parent() else { continue };
                if let Some(lists) = by_dir.get(dir) {
                    for &i in lists {
                        if tx.try_send(i).is_err() {
                            overflow.store(true, Ordering::Release);
                        }
                    }
                }
            }
        }
    };
    let watcher: Box<dyn notify::Watcher + Send> = match notify::recommended_watcher(
        handler.clone(),
    ) {
        Ok(w) => Box::new(w),
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; polling list files every 500 ms");
            match notify::PollWatcher::new(
                handler,
                notify::Config::default().with_poll_interval(POLL),
            ) {
                Ok(w) => Box::new(w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch list files; reload them with SIGHUP or POST /reload");
                    return None;
                }
            }
        }
    };
    let mut watcher = watcher;
    for dir in by_dir.keys() {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot watch this list directory; its changes need SIGHUP or POST /reload");
        }
    }
    tokio::spawn(debounce(rx, overflow, locals, reloads, shutdown));
    Some(FileWatch { _watcher: watcher })
}

/// Gathers marked lists until things go quiet, then asks for their reload.
async fn debounce(
    mut rx: mpsc::Receiver<usize>,
    overflow: Arc<AtomicBool>,
    locals: Vec<usize>,
    reloads: Reloads,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.recv() => match r { Some(i) => i, None => return },
        };
        let mut marked = BTreeSet::new();
        marked.insert(first);
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            let quiet = tokio::time::Instant::now() + QUIET;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(quiet.min(deadline)) => break,
                r = rx.recv() => match r {
                    Some(i) => { marked.insert(i); }
                    None => return,
                },
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        if overflow.swap(false, Ordering::AcqRel) || marked.contains(&usize::MAX) {
            marked.extend(locals.iter().copied());
        }
        marked.remove(&usize::MAX);
        reloads
            .nudge(Which::Lists(marked.into_iter().collect()))
            .await;
    }
}
