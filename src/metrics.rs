//! Prometheus metrics (names are part of the product contract: SPEC.md).
//!
//! Label values come only from the configuration (outcomes, list and
//! category names, upstream addresses), never from queries or clients, so
//! cardinality is bounded. Handles are resolved once, outside the query
//! path: counting a query is an atomic add, not a label lookup.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a query ended; each query counts exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Blocked,
    Allowed,
    Cached,
    Refused,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Blocked,
        Outcome::Allowed,
        Outcome::Cached,
        Outcome::Refused,
        Outcome::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Allowed => "allowed",
            Outcome::Cached => "cached",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamResult {
    Ok,
    Timeout,
    Error,
}

impl UpstreamResult {
    const ALL: [UpstreamResult; 3] = [
        UpstreamResult::Ok,
        UpstreamResult::Timeout,
        UpstreamResult::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamResult::Ok => "ok",
            UpstreamResult::Timeout => "timeout",
            UpstreamResult::Error => "error",
        }
    }
}

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
}

pub struct Metrics {
    registry: Registry,
    queries: [Counter; 5],
    durations: [Histogram; 5],
    blocked: Family<BlockedLabels, Counter>,
    upstreams: Vec<UpstreamHandles>,
    cache_entries: Gauge,
    list_rules: Family<ListLabel, Gauge>,
    list_reloaded: Family<ListLabel, Gauge<f64, AtomicU64>>,
    reloads: [Counter; 2],
}

fn query_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0,
    ]
    .into_iter()
}

impl Metrics {
    pub fn new(upstreams: &[SocketAddr]) -> Self {
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
        registry.register(
            "sinkhole_blocked",
            "Blocked queries, by category and list",
            blocked.clone(),
        );

        let up_requests = Family::<UpstreamLabels, Counter>::default();
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
                    results: UpstreamResult::ALL.map(|r| {
                        up_requests.get_or_create_owned(&UpstreamLabels {
                            upstream: upstream.clone(),
                            result: r.as_str(),
                        })
                    }),
                    duration: up_durations.get_or_create_owned(&UpstreamLabel { upstream }),
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

        let cache_entries = Gauge::default();
        registry.register(
            "sinkhole_cache_entries",
            "Answers held in the cache",
            cache_entries.clone(),
        );

        let list_rules = Family::<ListLabel, Gauge>::default();
        registry.register(
            "sinkhole_list_rules",
            "Rules in service, per list",
            list_rules.clone(),
        );
        let list_reloaded = Family::<ListLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "sinkhole_list_last_reload_timestamp_seconds",
            "When each list's version in service was loaded (Unix time)",
            list_reloaded.clone(),
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
            blocked,
            upstreams,
            cache_entries,
            list_rules,
            list_reloaded,
            reloads,
        }
    }

    /// Counts one answered query.
    #[inline]
    pub fn query_done(&self, outcome: Outcome, took: Duration) {
        let i = outcome as usize;
        self.queries[i].inc();
        self.durations[i].observe(took.as_secs_f64());
    }

    /// A handle counting blocks for one (category, list) pair; resolved when
    /// a policy snapshot is built, so the query path only increments it.
    pub fn blocked_counter(&self, category: &str, list: &str) -> Counter {
        self.blocked.get_or_create_owned(&BlockedLabels {
            category: category.to_owned(),
            list: list.to_owned(),
        })
    }

    pub fn upstream_done(&self, index: usize, result: UpstreamResult, took: Duration) {
        if let Some(h) = self.upstreams.get(index) {
            h.results[result as usize].inc();
            h.duration.observe(took.as_secs_f64());
        }
    }

    pub fn set_list(&self, list: &str, rules: usize, loaded_at_unix: f64) {
        let label = ListLabel {
            list: list.to_owned(),
        };
        self.list_rules.get_or_create(&label).set(rules as i64);
        self.list_reloaded.get_or_create(&label).set(loaded_at_unix);
    }

    pub fn reload_done(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
    }

    /// Prometheus text exposition, with the cache gauge read at scrape time.
    pub fn encode(&self, cache_entries: usize) -> String {
        self.cache_entries.set(cache_entries as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_contract_name() {
        let m = Metrics::new(&["127.0.0.1:53".parse().unwrap()]);
        m.query_done(Outcome::Blocked, Duration::from_micros(10));
        m.blocked_counter("ads", "list").inc();
        m.upstream_done(0, UpstreamResult::Ok, Duration::from_millis(1));
        m.set_list("list", 3, 1.0);
        m.reload_done(true);
        let text = m.encode(7);
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
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
