//! Prometheus metrics (names are part of the product contract: SPEC.md).
//!
//! Label values come only from the configuration (outcomes, list and
//! category names, upstream addresses), never from queries or clients, so
//! cardinality is bounded. Every series is registered once, at start, from
//! the configuration (lists and upstreams do not change while the server
//! runs), so counting a query is an atomic add, not a label lookup, and
//! nothing else ever registers anything.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use crate::dns::record::{
    AttemptResult, CacheLookup, Decided, Outcome, QueryRecord, UpstreamAttempt,
};
use crate::lists::SkipReason;
use crate::policy::ListId;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `result` label of an upstream attempt.
fn attempt_label(r: AttemptResult) -> &'static str {
    match r {
        AttemptResult::Answered => "ok",
        AttemptResult::Timeout => "timeout",
        AttemptResult::Error => "error",
    }
}

const ATTEMPT_RESULTS: [AttemptResult; 3] = [
    AttemptResult::Answered,
    AttemptResult::Timeout,
    AttemptResult::Error,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockedLabels {
    category: String,
    list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabel {
    list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    list: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    list: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Per-upstream handles, indexed like the configured servers.
struct UpstreamHandles {
    results: [Counter; 3],
    duration: Histogram,
    /// 1 until an attempt fails, then what the latest attempt said.
    up: Gauge,
}

/// The block page's answers, as `sinkhole_blockpage_requests_total` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPageResult {
    Blocked,
    NotBlocked,
    BadRequest,
}

impl BlockPageResult {
    const ALL: [BlockPageResult; 3] = [
        BlockPageResult::Blocked,
        BlockPageResult::NotBlocked,
        BlockPageResult::BadRequest,
    ];

    fn as_str(self) -> &'static str {
        match self {
            BlockPageResult::Blocked => "blocked",
            BlockPageResult::NotBlocked => "not_blocked",
            BlockPageResult::BadRequest => "bad_request",
        }
    }
}

/// A list as the metrics know it: its name, and its category for a
/// blocklist (`None` for an allowlist).
pub struct ListLabels<'a> {
    pub name: &'a str,
    pub category: Option<&'a str>,
    /// The category's action is `monitor`.
    pub monitor: bool,
    /// Downloaded from a URL.
    pub remote: bool,
}

/// Per-list handles, indexed by `ListId`.
struct ListHandles {
    /// Detached for allowlists: they block nothing, and an always-zero
    /// series would only confuse.
    blocked: Counter,
    /// Matches of a monitored (`action: monitor`) list; detached likewise.
    monitored: Counter,
    rules: Gauge,
    reloaded: Gauge<f64, AtomicU64>,
    /// Rejected rules, by `SkipReason::KINDS`.
    rejected: Vec<Counter>,
    /// Downloads, by `FETCH_RESULTS` (detached for local lists).
    fetches: [Counter; 3],
}

/// The `result` label of `sinkhole_list_fetches_total`.
const FETCH_RESULTS: [&str; 3] = ["ok", "not_modified", "error"];

pub struct Metrics {
    registry: Registry,
    queries: [Counter; 5],
    durations: [Histogram; 5],
    lists: Vec<ListHandles>,
    upstreams: Vec<UpstreamHandles>,
    cache_entries: Gauge,
    /// hit, miss, stale.
    cache_lookups: [Counter; 3],
    reloads: [Counter; 2],
    builds: Counter,
    blockpage: [Counter; 3],
    log_dropped: Counter,
    upstream_mismatched: Counter,
    ratelimited: Counter,
    /// Datagrams the kernel dropped at the DNS sockets, and the reading
    /// already counted (the kernel's count only grows while the sockets
    /// live).
    udp_drops: Counter,
    udp_drops_seen: std::sync::Mutex<u64>,
    dns_ports: Vec<u16>,
}

fn query_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0,
    ]
    .into_iter()
}

impl Metrics {
    pub fn new(upstreams: &[SocketAddr], lists: &[ListLabels<'_>]) -> Self {
        let mut registry = Registry::default();

        let queries_family = Family::<OutcomeLabel, Counter>::default();
        let queries = Outcome::ALL.map(|o| {
            queries_family.get_or_create_owned(&OutcomeLabel {
                outcome: o.as_str(),
            })
        });
        registry.register(
            "sinkhole_queries",
            "DNS queries answered, by outcome",
            queries_family,
        );

        let durations_family = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(query_buckets())
        });
        let durations = Outcome::ALL.map(|o| {
            durations_family.get_or_create_owned(&OutcomeLabel {
                outcome: o.as_str(),
            })
        });
        registry.register(
            "sinkhole_query_duration_seconds",
            "Time from receiving a query to sending its answer, by outcome",
            durations_family,
        );

        let blocked = Family::<BlockedLabels, Counter>::default();
        let monitored = Family::<BlockedLabels, Counter>::default();
        let rejected = Family::<RejectedLabels, Counter>::default();
        let fetches = Family::<FetchLabels, Counter>::default();
        let list_rules = Family::<ListLabel, Gauge>::default();
        let list_reloaded = Family::<ListLabel, Gauge<f64, AtomicU64>>::default();
        let lists = lists
            .iter()
            .map(|l| {
                let label = ListLabel {
                    list: l.name.to_owned(),
                };
                ListHandles {
                    blocked: match l.category {
                        Some(category) => blocked.get_or_create_owned(&BlockedLabels {
                            category: category.to_owned(),
                            list: l.name.to_owned(),
                        }),
                        None => Counter::default(),
                    },
                    monitored: match (l.category, l.monitor) {
                        (Some(category), true) => monitored.get_or_create_owned(&BlockedLabels {
                            category: category.to_owned(),
                            list: l.name.to_owned(),
                        }),
                        _ => Counter::default(),
                    },
                    rejected: SkipReason::KINDS
                        .iter()
                        .map(|reason| {
                            rejected.get_or_create_owned(&RejectedLabels {
                                list: l.name.to_owned(),
                                reason,
                            })
                        })
                        .collect(),
                    fetches: FETCH_RESULTS.map(|result| {
                        if l.remote {
                            fetches.get_or_create_owned(&FetchLabels {
                                list: l.name.to_owned(),
                                result,
                            })
                        } else {
                            Counter::default()
                        }
                    }),
                    rules: list_rules.get_or_create_owned(&label),
                    reloaded: list_reloaded.get_or_create_owned(&label),
                }
            })
            .collect();
        registry.register(
            "sinkhole_blocked",
            "Blocked queries, by category and list",
            blocked,
        );

        let up_requests = Family::<UpstreamLabels, Counter>::default();
        let up_gauges = Family::<UpstreamLabel, Gauge>::default();
        let up_durations = Family::<UpstreamLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        let upstreams = upstreams
            .iter()
            .map(|addr| {
                let upstream = addr.to_string();
                UpstreamHandles {
                    results: ATTEMPT_RESULTS.map(|r| {
                        up_requests.get_or_create_owned(&UpstreamLabels {
                            upstream: upstream.clone(),
                            result: attempt_label(r),
                        })
                    }),
                    duration: up_durations.get_or_create_owned(&UpstreamLabel {
                        upstream: upstream.clone(),
                    }),
                    up: {
                        let g = up_gauges.get_or_create_owned(&UpstreamLabel { upstream });
                        g.set(1);
                        g
                    },
                }
            })
            .collect();
        registry.register(
            "sinkhole_upstream_requests",
            "Upstream attempts, by upstream and result",
            up_requests,
        );
        registry.register(
            "sinkhole_upstream_duration_seconds",
            "Time per upstream attempt",
            up_durations,
        );
        registry.register(
            "sinkhole_upstream_up",
            "Whether the upstream is in service: 0 while marked down (from a failed attempt until it answers) and while it loops back to us",
            up_gauges,
        );

        let cache_entries = Gauge::default();
        registry.register(
            "sinkhole_cache_entries",
            "Answers held in the cache",
            cache_entries.clone(),
        );
        let lookups_family = Family::<ResultLabel, Counter>::default();
        let cache_lookups = ["hit", "miss", "stale"]
            .map(|result| lookups_family.get_or_create_owned(&ResultLabel { result }));
        registry.register(
            "sinkhole_cache_lookups",
            "Cache lookups, by result",
            lookups_family,
        );
        let blockpage_family = Family::<ResultLabel, Counter>::default();
        let blockpage = BlockPageResult::ALL
            .map(|r| blockpage_family.get_or_create_owned(&ResultLabel { result: r.as_str() }));
        registry.register(
            "sinkhole_blockpage_requests",
            "Block page requests, by result",
            blockpage_family,
        );
        let log_dropped = Counter::default();
        registry.register(
            "sinkhole_log_dropped",
            "Audit log lines dropped because the writer could not keep up",
            log_dropped.clone(),
        );

        registry.register(
            "sinkhole_monitored",
            "Queries a monitored list (action: monitor) would have blocked, by category and list",
            monitored,
        );
        registry.register(
            "sinkhole_list_rejected_rules",
            "List lines rejected when a list was read, by list and reason (protected: a block rule reaching guard.protected)",
            rejected,
        );
        registry.register(
            "sinkhole_list_rules",
            "Rules in service, per list",
            list_rules,
        );
        registry.register(
            "sinkhole_list_last_reload_timestamp_seconds",
            "When each list's version in service was loaded (Unix time)",
            list_reloaded,
        );

        let reloads_family = Family::<ResultLabel, Counter>::default();
        let reloads = [
            reloads_family.get_or_create_owned(&ResultLabel { result: "ok" }),
            reloads_family.get_or_create_owned(&ResultLabel { result: "error" }),
        ];
        registry.register(
            "sinkhole_reloads",
            "List reloads, by result",
            reloads_family,
        );
        let builds = Counter::default();
        registry.register(
            "sinkhole_policy_builds",
            "Policies built and swapped in (a reload that changes nothing builds none)",
            builds.clone(),
        );
        registry.register(
            "sinkhole_list_fetches",
            "Downloads of url: lists, by list and result (not_modified: a 304, nothing rebuilt)",
            fetches,
        );

        let udp_drops = Counter::default();
        registry.register(
            "sinkhole_udp_drops",
            "Queries the kernel dropped at the DNS sockets because their receive buffer was full (/proc/net/udp drops), read at each scrape",
            udp_drops.clone(),
        );
        let ratelimited = Counter::default();
        registry.register(
            "sinkhole_ratelimited",
            "Queries over their client's limits.client_qps (dropped or refused; also counted as outcome=refused)",
            ratelimited.clone(),
        );
        let upstream_mismatched = Counter::default();
        registry.register(
            "sinkhole_upstream_mismatched",
            "Datagrams on an upstream socket that answer nothing we asked (another source, ID or question; late, stray or spoofed), dropped",
            upstream_mismatched.clone(),
        );

        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "sinkhole_build_info",
            "Build information (always 1)",
            build_info,
        );

        Self {
            registry,
            queries,
            durations,
            lists,
            upstreams,
            cache_entries,
            cache_lookups,
            reloads,
            builds,
            blockpage,
            log_dropped,
            upstream_mismatched,
            ratelimited,
            udp_drops,
            udp_drops_seen: std::sync::Mutex::new(0),
            dns_ports: Vec::new(),
        }
    }

    /// The DNS listeners' ports, whose sockets' kernel drops are counted.
    pub fn with_dns_ports(mut self, ports: Vec<u16>) -> Self {
        self.dns_ports = ports;
        self
    }

    /// Counts one answered query, and its list when it was blocked.
    #[inline]
    pub fn query(&self, r: &QueryRecord<'_>) {
        let i = r.outcome as usize;
        self.queries[i].inc();
        self.durations[i].observe(r.duration.as_secs_f64());
        match r.decided {
            Decided::Blocked { rule, .. } => {
                if let Some(l) = self.lists.get(usize::from(rule.list.0)) {
                    l.blocked.inc();
                }
            }
            Decided::Monitored { rule, .. } => {
                if let Some(l) = self.lists.get(usize::from(rule.list.0)) {
                    l.monitored.inc();
                }
            }
            _ => {}
        }
        match r.cache {
            CacheLookup::NotAsked => {}
            CacheLookup::Hit => {
                self.cache_lookups[0].inc();
            }
            CacheLookup::Miss => {
                self.cache_lookups[1].inc();
            }
            CacheLookup::Stale => {
                self.cache_lookups[2].inc();
            }
        }
    }

    pub fn blockpage(&self, result: BlockPageResult) {
        self.blockpage[result as usize].inc();
    }

    /// The counter the audit log's queue counts refused lines with.
    pub fn log_dropped(&self) -> Counter {
        self.log_dropped.clone()
    }

    /// A query over its client's rate limit.
    pub fn ratelimited(&self) {
        self.ratelimited.inc();
    }

    /// An upstream datagram that matched no query (dropped).
    pub fn upstream_mismatched(&self) {
        self.upstream_mismatched.inc();
    }

    pub fn upstream(&self, a: &UpstreamAttempt) {
        if let Some(h) = self.upstreams.get(a.server) {
            let i = ATTEMPT_RESULTS
                .iter()
                .position(|r| *r == a.result)
                .unwrap_or(2);
            h.results[i].inc();
            h.duration.observe(a.took.as_secs_f64());
        }
    }

    /// A list's version in service: its rule count and when it was loaded.
    pub fn list_loaded(&self, list: ListId, rules: usize, loaded_at_unix: f64) {
        if let Some(l) = self.lists.get(usize::from(list.0)) {
            l.rules.set(rules as i64);
            l.reloaded.set(loaded_at_unix);
        }
    }

    /// Lines a list's read rejected, by `SkipReason::KINDS`.
    pub fn list_rejected(&self, list: ListId, by_kind: &[u64]) {
        if let Some(l) = self.lists.get(usize::from(list.0)) {
            for (c, n) in l.rejected.iter().zip(by_kind) {
                if *n > 0 {
                    c.inc_by(*n);
                }
            }
        }
    }

    /// A download of a `url:` list, by result (`FETCH_RESULTS`).
    pub fn list_fetched(&self, list: ListId, result: &str) {
        if let (Some(l), Some(i)) = (
            self.lists.get(usize::from(list.0)),
            FETCH_RESULTS.iter().position(|r| *r == result),
        ) {
            l.fetches[i].inc();
        }
    }

    /// A new policy was built and swapped in.
    pub fn policy_built(&self) {
        self.builds.inc();
    }

    pub fn reload_done(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
    }

    /// Prometheus text exposition, with the cache gauge and each
    /// upstream's state (`upstream_up(i)`, by index) read at scrape time.
    pub fn encode(&self, cache_entries: usize, upstream_up: impl Fn(usize) -> bool) -> String {
        self.cache_entries.set(cache_entries as i64);
        for (i, h) in self.upstreams.iter().enumerate() {
            h.up.set(i64::from(upstream_up(i)));
        }
        if !self.dns_ports.is_empty()
            && let Ok(mut seen) = self.udp_drops_seen.lock()
        {
            let now = crate::dns::sys::drops::receive_drops(&self.dns_ports);
            self.udp_drops.inc_by(now.saturating_sub(*seen));
            *seen = now.max(*seen);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dns::record::{Decided, RuleRef};
    use crate::dns::request::Transport;
    use crate::policy::{Action, CategoryId};

    #[test]
    fn exposes_every_contract_name() {
        let lists = [
            ListLabels {
                name: "list",
                category: Some("ads"),
                monitor: false,
                remote: false,
            },
            ListLabels {
                name: "ok",
                category: None,
                monitor: false,
                remote: false,
            },
        ];
        let m = Metrics::new(&["127.0.0.1:53".parse().unwrap()], &lists);
        m.query(&QueryRecord {
            client: "192.0.2.1:5000".parse().unwrap(),
            transport: Transport::Udp,
            name: Some(b"\x01a\x00"),
            qtype: 1,
            cache: CacheLookup::NotAsked,
            decided: Decided::Blocked {
                rule: RuleRef {
                    list: ListId(0),
                    rule: 0,
                    depth: 1,
                    below_only: false,
                },
                category: CategoryId(0),
                action: Action::Nxdomain,
            },
            rcode: 3,
            outcome: Outcome::Blocked,
            received: std::time::Instant::now(),
            duration: Duration::from_micros(10),
        });
        m.upstream(&UpstreamAttempt {
            server: 0,
            result: AttemptResult::Answered,
            took: Duration::from_millis(1),
        });
        m.list_loaded(ListId(0), 3, 1.0);
        m.reload_done(true);
        let text = m.encode(7, |_| true);
        for name in [
            "sinkhole_queries_total{outcome=\"blocked\"} 1",
            "sinkhole_blocked_total{category=\"ads\",list=\"list\"} 1",
            "sinkhole_query_duration_seconds_bucket",
            "sinkhole_upstream_requests_total{upstream=\"127.0.0.1:53\",result=\"ok\"} 1",
            "sinkhole_upstream_duration_seconds_bucket",
            "sinkhole_cache_entries 7",
            "sinkhole_list_rules{list=\"list\"} 3",
            "sinkhole_list_last_reload_timestamp_seconds{list=\"list\"}",
            "sinkhole_reloads_total{result=\"ok\"} 1",
            "sinkhole_build_info{version=",
            "sinkhole_upstream_up{upstream=\"127.0.0.1:53\"} 1",
            "sinkhole_cache_lookups_total{result=\"hit\"} 0",
            "sinkhole_blockpage_requests_total{result=\"bad_request\"} 0",
            "sinkhole_log_dropped_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("sinkhole_blocked_total") && l.contains("list=\"ok\"")),
            "an allowlist has no blocked series:\n{text}"
        );
    }

    #[test]
    fn upstream_up_is_read_at_scrape_time() {
        let up: std::net::SocketAddr = "127.0.0.1:53".parse().unwrap();
        let m = Metrics::new(&[up], &[]);
        assert!(
            m.encode(0, |_| true)
                .contains("sinkhole_upstream_up{upstream=\"127.0.0.1:53\"} 1")
        );
        assert!(
            m.encode(0, |_| false)
                .contains("sinkhole_upstream_up{upstream=\"127.0.0.1:53\"} 0")
        );
    }
}
