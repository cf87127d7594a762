//! The one path every trigger takes: a single task that gathers requests,
//! fetches what is remote, and hands the lot to [`Reloader::apply`].
//!
//! Requests that arrive while a reload runs are merged into the next one:
//! two hundred `POST /reload`s at once cost two rebuilds, not two hundred,
//! and each caller gets the statuses of a reload that started after it
//! asked (so it sees the files as they were when it asked, or newer).
//! Downloads run beside the task and report back as they finish, so a slow
//! list server never delays a local file's change; a caller that asked for
//! every list hears back once its downloads are in. Remote lists are also
//! fetched on their own schedule: every `refresh`, and after a failure
//! again within 10 s, backing off to `refresh`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Arrival, ListStatus, Reloader};
use crate::lists::remote::{Fetched, Fetcher};

/// The first retry after a failed fetch; each further failure doubles it,
/// up to the list's `refresh`.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Requests waiting for the reload task; a full queue makes callers wait.
const QUEUE: usize = 256;

/// Which lists a request is about.
#[derive(Debug, Clone)]
pub enum Which {
    /// Every list (SIGHUP, `POST /reload`): files re-read, remote lists
    /// fetched.
    All,
    /// These lists (a watched file changed).
    Lists(Vec<usize>),
}

struct Request {
    which: Which,
    force: bool,
    reply: Option<oneshot::Sender<Arc<Vec<ListStatus>>>>,
}

/// A handle to ask for reloads; cheap to clone.
#[derive(Clone)]
pub struct Reloads {
    tx: mpsc::Sender<Request>,
}

impl Reloads {
    /// Reloads and waits for the outcome (`POST /reload`). `None` when the
    /// server is shutting down.
    pub async fn reload(&self, which: Which, force: bool) -> Option<Arc<Vec<ListStatus>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                which,
                force,
                reply: Some(reply),
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Asks for a reload without waiting for it (SIGHUP, file watch).
    pub async fn nudge(&self, which: Which) {
        let _ = self
            .tx
            .send(Request {
                which,
                force: false,
                reply: None,
            })
            .await;
    }
}

/// Starts the reload task; it ends with `shutdown`.
pub fn start(
    reloader: Arc<Reloader>,
    fetcher: Option<Fetcher>,
    shutdown: CancellationToken,
) -> (Reloads, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(reloader, fetcher, rx, shutdown));
    (Reloads { tx }, task)
}

/// When each remote list is next fetched, and how many failures in a row.
struct Schedule {
    next: Vec<Option<Instant>>,
    failures: Vec<u32>,
}

impl Schedule {
    fn due(&self, now: Instant) -> Vec<usize> {
        self.next
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect()
    }

    fn earliest(&self) -> Option<Instant> {
        self.next.iter().flatten().min().copied()
    }
}

/// A caller of [`Reloads::reload`] waiting for the downloads its reload
/// started.
struct Waiter {
    reply: oneshot::Sender<Arc<Vec<ListStatus>>>,
    pending: BTreeSet<usize>,
}

async fn run(
    reloader: Arc<Reloader>,
    fetcher: Option<Fetcher>,
    mut rx: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
) {
    let sources = reloader.sources().to_vec();
    let Some(builder) = Builder::start(reloader.clone()) else {
        tracing::error!("cannot start the list builder thread; lists will not reload");
        return;
    };
    let now = Instant::now();
    // Every remote list is fetched at once at start: the copy on disk, if
    // any, is only a stand-in until the server has been asked.
    let mut schedule = Schedule {
        next: sources
            .iter()
            .map(|s| s.remote.as_ref().map(|_| now))
            .collect(),
        failures: vec![0; sources.len()],
    };
    // Downloads run beside the loop, never in it: a list server that takes
    // its 30 s must not hold up a local file's change.
    let mut fetches: tokio::task::JoinSet<(usize, bool, Arrival)> = tokio::task::JoinSet::new();
    let mut fetching = vec![false; sources.len()];
    let mut waiters: Vec<Waiter> = Vec::new();
    loop {
        let wake = schedule.earliest();
        let mut batch: Vec<Request> = Vec::new();
        let mut fetched: Vec<(usize, bool, Arrival)> = Vec::new();
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.recv() => match r {
                Some(r) => batch.push(r),
                None => return,
            },
            Some(Ok(done)) = fetches.join_next(), if !fetches.is_empty() => fetched.push(done),
            () = sleep_until(wake) => {}
        }
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        while let Some(Ok(done)) = fetches.try_join_next() {
            fetched.push(done);
        }

        let force = batch.iter().any(|r| r.force);
        let mut wanted: BTreeSet<usize> = BTreeSet::new();
        for r in &batch {
            match &r.which {
                Which::All => wanted.extend(0..sources.len()),
                Which::Lists(l) => wanted.extend(l.iter().copied()),
            }
        }
        let now = Instant::now();
        wanted.extend(schedule.due(now));

        // Local files now; remote lists as downloads that report back.
        let mut arrivals = Vec::new();
        let mut remote_wanted = BTreeSet::new();
        for &i in &wanted {
            let Some(source) = sources.get(i) else {
                continue;
            };
            let (Some(remote), Some(fetcher)) = (&source.remote, &fetcher) else {
                if source.remote.is_none() {
                    arrivals.push((i, Arrival::ReadFile));
                }
                continue;
            };
            remote_wanted.insert(i);
            // Not due again until this fetch reports (or its deadline).
            schedule.next[i] = None;
            if fetching[i] {
                continue;
            }
            fetching[i] = true;
            let (validators, have) = reloader.validators(i);
            let fetcher = fetcher.clone();
            let url = remote.url.clone();
            let sig_url = source.public_key.as_ref().map(|_| remote.signature_url());
            fetches.spawn(async move {
                // Without a version, ask unconditionally: a 304 would
                // leave us with nothing.
                let known = if have { validators } else { Default::default() };
                let arrival = match fetcher.fetch(&url, &known).await {
                    Ok(Fetched::NotModified) => Arrival::NotModified,
                    Ok(Fetched::New(body)) => {
                        let signature = match sig_url {
                            Some(u) => Some(fetcher.fetch_small(&u).await),
                            None => None,
                        };
                        Arrival::Downloaded {
                            bytes: body.bytes,
                            content_type: body.content_type,
                            signature,
                            validators: body.validators,
                        }
                    }
                    Err(e) => Arrival::Failed(e),
                };
                (i, force, arrival)
            });
        }
        // Each finished download: reschedule it by how it went.
        let mut fetched_force = false;
        let mut done_lists = BTreeSet::new();
        for (i, f, a) in fetched {
            fetching[i] = false;
            fetched_force |= f;
            done_lists.insert(i);
            if let Some(remote) = sources.get(i).and_then(|s| s.remote.as_ref()) {
                let failed = matches!(a, Arrival::Failed(_));
                schedule.failures[i] = if failed { schedule.failures[i] + 1 } else { 0 };
                let wait = if failed {
                    backoff(schedule.failures[i], remote.refresh)
                } else {
                    remote.refresh
                };
                schedule.next[i] = Some(Instant::now() + wait);
            }
            arrivals.push((i, a));
        }

        let statuses = if arrivals.is_empty() {
            reloader.statuses()
        } else {
            let force = force || fetched_force;
            match builder.build(arrivals, force).await {
                Some(s) => s,
                None => reloader.statuses(),
            }
        };
        for r in batch {
            let Some(reply) = r.reply else { continue };
            let pending: BTreeSet<usize> = match &r.which {
                Which::All => remote_wanted.clone(),
                Which::Lists(l) => l
                    .iter()
                    .copied()
                    .filter(|i| remote_wanted.contains(i))
                    .collect(),
            };
            if pending.is_empty() {
                let _ = reply.send(statuses.clone());
            } else {
                waiters.push(Waiter { reply, pending });
            }
        }
        if !done_lists.is_empty() {
            let mut still = Vec::with_capacity(waiters.len());
            for mut w in waiters.drain(..) {
                w.pending.retain(|i| !done_lists.contains(i));
                if w.pending.is_empty() {
                    let _ = w.reply.send(statuses.clone());
                } else {
                    still.push(w);
                }
            }
            waiters = still;
        }
    }
}

/// The thread that reads, parses and builds: one, so builds never overlap,
/// and at the lowest priority (`SCHED_IDLE`), so on a busy core the DNS workers
/// always run first and a reload takes the time they leave. Everything a
/// build frees (the old policy, the old lists) is freed here too, never on
/// a worker.
struct Builder {
    tx: std::sync::mpsc::Sender<Job>,
}

type Job = (
    Vec<(usize, Arrival)>,
    bool,
    oneshot::Sender<Arc<Vec<ListStatus>>>,
);

impl Builder {
    fn start(reloader: Arc<Reloader>) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("list-builder".into())
            .spawn(move || {
                lower_priority();
                while let Ok((arrivals, force, reply)) = rx.recv() {
                    let _ = reply.send(reloader.apply(arrivals, force));
                }
            })
            .ok()?;
        Some(Self { tx })
    }

    async fn build(
        &self,
        arrivals: Vec<(usize, Arrival)>,
        force: bool,
    ) -> Option<Arc<Vec<ListStatus>>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((arrivals, force, reply)).ok()?;
        rx.await.ok()
    }
}

/// `SCHED_IDLE` for the calling thread only (Linux schedules threads; pid
/// 0 is the caller). Nice 19 was not enough: the scheduler let a nice-19
/// build run out its slice (a few ms) before a woken DNS worker on the
/// same core got it, which the reload bench saw as a 3x p99. An idle-class
/// thread is preempted at once by any other wake-up, and still gets every
/// cycle the workers leave. Falls back to nice 19 where refused.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on the calling thread's own id.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
            return;
        }
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
            tracing::debug!("could not lower the list builder's priority");
        }
    }
}

/// 10 s, 20 s, 40 s … capped at `refresh`.
pub fn backoff(failures: u32, refresh: Duration) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (FIRST_RETRY * factor)
        .min(refresh)
        .max(Duration::from_millis(100))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_refresh() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, hour), Duration::from_secs(10));
        assert_eq!(backoff(2, hour), Duration::from_secs(20));
        assert_eq!(backoff(3, hour), Duration::from_secs(40));
        assert_eq!(backoff(20, hour), hour);
        assert_eq!(backoff(1, Duration::from_secs(5)), Duration::from_secs(5));
    }
}
