//! Matcher benchmark: the policy's reversed-label trie against the classic
//! `FxHashSet<Box<str>>` suffix walk (Pi-hole/Blocky style), on the real
//! public lists in `../shared/data` and on the same lists padded with
//! synthetic names to exactly 1,000,000 rules.
//!
//! Before the criterion groups run, the bench prints what BENCHMARKS.md
//! records besides lookups: rule counts, parse and build times (median of a
//! few repetitions), heap bytes and process RSS growth. RSS is measured in a
//! child process per structure (this same binary, re-run with
//! `SINKHOLE_MATCHER_RSS_PROBE` set) so one structure's freed memory cannot
//! hide another's growth.
//!
//! Each lookup group (`matcher/{hits,subdomains,misses}` and the same under
//! `matcher_1m/`) runs 10,000 fixed queries, a third of them in mixed case,
//! through three functions:
//! - `trie`: `Policy::decide` over `name.rsplit('.')`, the dot search included;
//! - `trie_labels`: `Policy::decide` over labels split ahead of time (the
//!   lookup alone, as over wire-format labels);
//! - `fxhashset`: the suffix walk, lowercasing the mixed-case queries first.
//!
//! Run: `cargo bench --bench matcher`.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rustc_hash::FxHashSet;
use sinkhole::lists::{self, Format, FormatChoice, ParsedList, Rule, Scope, Verdict};
use sinkhole::policy::trie::{RuleRef, TrieBuilder};
use sinkhole::policy::{self, Action, Category, Decision, DomainName, ListInput, Policy};

const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");
/// Queries per set.
const QUERIES: usize = 10_000;
/// Of the misses, how many are long names (many labels).
const DEEP_MISSES: usize = 100;
/// Rule count of the padded variant.
const BIG: usize = 1_000_000;
/// Repetitions for parse and build timings (the median is reported).
const REPS: usize = 5;
const PROBE_ENV: &str = "SINKHOLE_MATCHER_RSS_PROBE";
/// `/proc/self/statm` counts pages; 4 KiB on the x86_64 machines we run on.
const PAGE: usize = 4096;
const CATEGORY: &str = "ads";
/// Set (to `real` or `1m`) to run each query set a fixed number of times through functions
/// callgrind can isolate (see `count_instructions`), instead of criterion.
const COUNT_ENV: &str = "SINKHOLE_MATCHER_COUNT";
/// Rounds per set in count mode.
const COUNT_ROUNDS: usize = 3;

fn main() {
    let dir = Path::new(DATA_DIR);
    if !dir.join("blocklists").is_dir() || !dir.join("top-domains.csv").is_file() {
        println!("skipping matcher bench: ../shared/data not found");
        return;
    }
    if let Ok(kind) = std::env::var(PROBE_ENV) {
        rss_probe(dir, &kind);
        return;
    }

    let sources = read_sources(dir);
    let real = Dataset::real(&sources);
    if real.rule_count() == 0 {
        println!("skipping matcher bench: the list parsers returned no rules");
        return;
    }
    let top = read_top_domains(dir);

    if let Ok(variant) = std::env::var(COUNT_ENV) {
        count_instructions(&real, &top, &variant);
        return;
    }

    let mut c = Criterion::default().without_plots().configure_from_args();

    // The real lists.
    let parse_times: Vec<Duration> = (0..REPS)
        .map(|_| {
            let t = Instant::now();
            for s in &sources {
                black_box(lists::parse(&s.text, FormatChoice::Auto));
            }
            t.elapsed()
        })
        .collect();
    println!(
        "== matcher: real lists ({})",
        dir.join("blocklists").display()
    );
    for input in &real.inputs {
        println!(
            "  {:<32} {:>8} format, {:>7} rules, {:>6} lines skipped",
            input.name,
            input.rules.format().as_str(),
            input.rules.len(),
            input.rules.skipped().count
        );
    }
    println!(
        "  parse (all {} files, format auto): median {} of {REPS} ({})",
        sources.len(),
        ms(median(&parse_times)),
        list_ms(&parse_times)
    );
    let (policy, fx) = report_builds(&real, "real", "policy", "fxhash");
    let sets = real.query_sets(&policy, &fx, &top);
    for set in &sets {
        bench_group(&mut c, "matcher", set, &policy, &fx);
    }
    drop((policy, fx, sets));

    // Padded to 1,000,000 rules.
    let big = Dataset::padded(&real, BIG);
    println!(
        "== matcher_1m: unique block names of the real lists + {} synthetic names = {} rules",
        big.inputs[1].rules.len(),
        big.rule_count()
    );
    let (policy, fx) = report_builds(&big, "1m", "policy_1m", "fxhash_1m");
    let sets = big.query_sets(&policy, &fx, &top);
    for set in &sets {
        bench_group(&mut c, "matcher_1m", set, &policy, &fx);
    }

    c.final_summary();
}

// ---------------------------------------------------------------- data

struct Source {
    name: String,
    path: PathBuf,
    text: String,
}

/// Every `*.txt` under `blocklists/`, in file-name order.
fn read_sources(dir: &Path) -> Vec<Source> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("blocklists"))
        .expect("read blocklists dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| Source {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&path).expect("read list"),
            path,
        })
        .collect()
}

/// The names of `top-domains.csv` (`rank,domain`), validated and lowercased.
fn read_top_domains(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("top-domains.csv")).expect("read top-domains");
    text.lines()
        .filter_map(|l| l.split_once(',').map(|(_, d)| d.trim()))
        .filter_map(|d| DomainName::parse(d).ok())
        .map(|d| d.as_str().to_owned())
        .collect()
}

fn categories() -> Vec<Category> {
    vec![Category {
        name: CATEGORY.to_owned(),
        action: Action::Nxdomain,
        reason: None,
        alternatives: Vec::new(),
    }]
}

/// One list of a benchmark variant.
struct List {
    name: String,
    path: PathBuf,
    rules: ParsedList,
}

/// The lists one benchmark variant loads.
struct Dataset {
    inputs: Vec<List>,
}

impl Dataset {
    /// One list per file, all in category "ads".
    fn real(sources: &[Source]) -> Self {
        let inputs = sources
            .iter()
            .map(|s| List {
                name: s.name.clone(),
                path: s.path.clone(),
                rules: lists::parse(&s.text, FormatChoice::Auto),
            })
            .collect();
        Self { inputs }
    }

    /// Two lists: every distinct block name of `real` once (first occurrence
    /// in list order, with its scope), then synthetic `{hex(i)}-{word}.{tld}`
    /// names up to exactly `total` rules.
    fn padded(real: &Dataset, total: usize) -> Self {
        const WORDS: [&str; 16] = [
            "ads",
            "track",
            "pixel",
            "metrics",
            "stats",
            "beacon",
            "click",
            "promo",
            "banner",
            "analytics",
            "telemetry",
            "cdn",
            "tag",
            "sync",
            "collect",
            "events",
        ];
        const TLDS: [&str; 6] = ["com", "net", "org", "io", "co.uk", "xyz"];
        let unique = real.unique_block_rules();
        assert!(unique.len() <= total, "real lists exceed {total} rules");
        let mut seen: FxHashSet<&str> = unique.iter().map(|r| r.name).collect();
        let mut union = ParsedList::new(Format::Domains);
        for (i, r) in unique.iter().enumerate() {
            union.push_rule(i as u32 + 1, r.name, r.name, r.scope, Verdict::Block);
        }
        let mut synthetic = ParsedList::new(Format::Domains);
        let mut names = Vec::with_capacity(total - unique.len());
        let mut i = 0usize;
        while unique.len() + names.len() < total {
            let name = format!(
                "{i:x}-{}.{}",
                WORDS[i % WORDS.len()],
                TLDS[(i / WORDS.len()) % TLDS.len()]
            );
            i += 1;
            names.push(name);
        }
        for (line, name) in names.iter().enumerate() {
            assert!(seen.insert(name.as_str()), "synthetic name {name} collides");
            assert!(synthetic.push_rule(
                line as u32 + 1,
                name,
                name,
                Scope::Subtree,
                Verdict::Block
            ));
        }
        drop(seen);
        let list = |name: &str, rules| List {
            name: name.to_owned(),
            path: PathBuf::from(name),
            rules,
        };
        Self {
            inputs: vec![list("union", union), list("synthetic", synthetic)],
        }
    }

    fn rule_count(&self) -> usize {
        self.inputs.iter().map(|l| l.rules.len()).sum()
    }

    fn rules(&self) -> impl Iterator<Item = Rule<'_>> {
        self.inputs.iter().flat_map(|l| l.rules.rules())
    }

    fn unique_names(&self) -> usize {
        self.rules().map(|r| r.name).collect::<FxHashSet<_>>().len()
    }

    /// Distinct block-rule names, first occurrence in list order.
    fn unique_block_rules(&self) -> Vec<Rule<'_>> {
        let mut seen = FxHashSet::default();
        self.rules()
            .filter(|r| r.verdict == Verdict::Block && seen.insert(r.name))
            .collect()
    }

    fn build_policy(&self) -> Policy {
        let inputs: Vec<ListInput<'_, ParsedList>> = self
            .inputs
            .iter()
            .map(|l| ListInput {
                name: &l.name,
                path: &l.path,
                category: Some(CATEGORY),
                rules: &l.rules,
            })
            .collect();
        policy::build(categories(), &inputs).expect("policy builds")
    }

    /// The baseline: every block-rule name, once, as a boxed string.
    fn build_fxhash(&self) -> FxHashSet<Box<str>> {
        let mut set = FxHashSet::default();
        for r in self.rules() {
            if r.verdict == Verdict::Block && !set.contains(r.name) {
                set.insert(Box::<str>::from(r.name));
            }
        }
        set
    }

    /// The raw trie alone (for node count and the trie's share of the heap).
    fn build_trie(&self) -> sinkhole::policy::trie::Trie {
        let mut b = TrieBuilder::new();
        for (i, r) in self.rules().enumerate() {
            b.insert(r.name, r.scope, RuleRef::new(i as u32, r.verdict));
        }
        b.build()
    }

    fn query_sets(
        &self,
        policy: &Policy,
        fx: &FxHashSet<Box<str>>,
        top: &[String],
    ) -> Vec<QuerySet> {
        let names: Vec<&str> = self.unique_block_rules().iter().map(|r| r.name).collect();
        let blocked = |name: &str| matches!(trie_decide(policy, name), Decision::Block { .. });
        let forward = |name: &str| matches!(trie_decide(policy, name), Decision::Forward);

        // Hits: list names exactly as listed (a `*.name` rule does not block
        // `name` itself, so those are filtered out by asking the policy).
        let mut rng = SplitMix64(0x5151_0001);
        let hits = sample(&mut rng, names.len(), QUERIES, |i| {
            let n = names[i];
            blocked(n).then(|| n.to_owned())
        });

        // Subdomain hits: a list name under a new first label.
        let mut rng = SplitMix64(0x5151_0002);
        let mut prefix_rng = SplitMix64(0x5151_0003);
        let subdomains = sample(&mut rng, names.len(), QUERIES, |i| {
            let r = prefix_rng.next();
            let name = if r & 1 == 0 {
                format!("www.{}", names[i])
            } else {
                format!("{:04x}.{}", (r >> 8) & 0xffff, names[i])
            };
            (name.len() <= 253 && blocked(&name)).then_some(name)
        });

        // Misses: popular names no rule matches (neither the trie nor the
        // baseline), plus a few long ones.
        let mut rng = SplitMix64(0x5151_0004);
        let misses_ok = |n: &str| forward(n) && !fx_contains(fx, n);
        let mut misses = sample(&mut rng, top.len(), QUERIES - DEEP_MISSES, |i| {
            misses_ok(&top[i]).then(|| top[i].clone())
        });
        const PREFIXES: [&str; 10] = [
            "a", "cdn", "img", "static", "eu", "prod", "edge", "v2", "api", "node",
        ];
        let mut label_rng = SplitMix64(0x5151_0005);
        let mut deep = Vec::new();
        let mut k = 0;
        while deep.len() < DEEP_MISSES {
            let base = &misses[k % misses.len()];
            k += 1;
            let extra = 6 + (label_rng.next() % 5) as usize;
            let mut name = String::new();
            for _ in 0..extra {
                let r = label_rng.next();
                name.push_str(PREFIXES[(r % 10) as usize]);
                name.push_str(&format!("{:x}.", (r >> 32) & 0xff));
            }
            name.push_str(base);
            if name.len() <= 253 && misses_ok(&name) {
                deep.push(name);
            }
        }
        // Spread the long names through the set rather than bunching them.
        let stride = misses.len() / DEEP_MISSES;
        for (j, name) in deep.into_iter().enumerate() {
            misses.insert(j * (stride + 1), name);
        }

        let mut sets = vec![
            QuerySet::new("hits", hits, 0x5151_0006),
            QuerySet::new("subdomains", subdomains, 0x5151_0007),
            QuerySet::new("misses", misses, 0x5151_0008),
        ];
        // Both matchers must agree with what each set claims, mixed case
        // included.
        let mut buf = String::new();
        for set in &mut sets {
            let expect_hit = set.name != "misses";
            for q in &set.queries {
                let trie_hit = matches!(trie_decide(policy, &q.name), Decision::Block { .. });
                assert_eq!(trie_hit, expect_hit, "trie on {} ({})", q.name, set.name);
                assert_eq!(
                    fx_lookup(fx, q, &mut buf),
                    expect_hit,
                    "fxhashset on {} ({})",
                    q.name,
                    set.name
                );
            }
            let labels: usize = set.queries.iter().map(|q| q.name.split('.').count()).sum();
            println!(
                "  query set {:<10}: {} names, {} mixed-case, {:.2} labels/name",
                set.name,
                set.queries.len(),
                set.queries.iter().filter(|q| q.mixed).count(),
                labels as f64 / set.queries.len() as f64
            );
        }
        sets
    }
}

/// Picks up to `want` distinct indices below `n`, keeping those `keep` maps
/// to `Some`. Deterministic for a given seed.
fn sample<T>(
    rng: &mut SplitMix64,
    n: usize,
    want: usize,
    mut keep: impl FnMut(usize) -> Option<T>,
) -> Vec<T> {
    let mut tried = HashSet::new();
    let mut out = Vec::with_capacity(want);
    while out.len() < want && tried.len() < n {
        let i = (rng.next() % n as u64) as usize;
        if tried.insert(i)
            && let Some(t) = keep(i)
        {
            out.push(t);
        }
    }
    out
}

/// A small seeded generator, so query sets are the same on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------- queries

struct Query {
    name: String,
    /// Written in mixed case: the baseline must lowercase it first.
    mixed: bool,
}

struct QuerySet {
    name: &'static str,
    queries: Vec<Query>,
}

impl QuerySet {
    /// Every third name is rewritten in random mixed case.
    fn new(name: &'static str, names: Vec<String>, seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let queries = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                if i % 3 != 2 {
                    return Query { name, mixed: false };
                }
                let mut bytes = name.into_bytes();
                for b in &mut bytes {
                    if rng.next() & 1 == 1 {
                        b.make_ascii_uppercase();
                    }
                }
                if let Some(b) = bytes.iter_mut().find(|b| b.is_ascii_lowercase()) {
                    b.make_ascii_uppercase(); // at least one capital
                }
                Query {
                    name: String::from_utf8(bytes).expect("ascii"),
                    mixed: true,
                }
            })
            .collect();
        Self { name, queries }
    }
}

/// What the server does: labels from the top down, any case.
#[inline]
fn trie_decide<'p>(policy: &'p Policy, name: &str) -> Decision<'p> {
    policy.decide(name.rsplit('.').map(str::as_bytes))
}

/// The baseline walk: the whole name, then without its first label, and so
/// on down to the top-level label. `name` must be lowercase.
#[inline]
fn fx_contains(set: &FxHashSet<Box<str>>, name: &str) -> bool {
    let mut rest = name;
    loop {
        if set.contains(rest) {
            return true;
        }
        match rest.find('.') {
            Some(dot) => rest = &rest[dot + 1..],
            None => return false,
        }
    }
}

/// The baseline for one query, lowercasing first when the query has capitals.
#[inline]
fn fx_lookup(set: &FxHashSet<Box<str>>, q: &Query, buf: &mut String) -> bool {
    if q.mixed {
        buf.clear();
        buf.push_str(&q.name);
        buf.make_ascii_lowercase();
        fx_contains(set, buf)
    } else {
        fx_contains(set, &q.name)
    }
}

fn bench_group(
    c: &mut Criterion,
    prefix: &str,
    set: &QuerySet,
    policy: &Policy,
    fx: &FxHashSet<Box<str>>,
) {
    let mut g = c.benchmark_group(format!("{prefix}/{}", set.name));
    g.throughput(Throughput::Elements(set.queries.len() as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("trie", |b| {
        b.iter(|| {
            for q in &set.queries {
                black_box(trie_decide(policy, black_box(q.name.as_str())));
            }
        })
    });
    // The same lookups with the labels split ahead of time, as a server
    // holding wire-format labels would pass them: lookup cost only.
    let labels: Vec<Vec<&[u8]>> = set
        .queries
        .iter()
        .map(|q| q.name.rsplit('.').map(str::as_bytes).collect())
        .collect();
    g.bench_function("trie_labels", |b| {
        b.iter(|| {
            for l in &labels {
                black_box(policy.decide(black_box(l.as_slice()).iter().copied()));
            }
        })
    });
    g.bench_function("fxhashset", |b| {
        let mut buf = String::with_capacity(256);
        b.iter(|| {
            for q in &set.queries {
                black_box(fx_lookup(fx, black_box(q), &mut buf));
            }
        })
    });
    g.finish();
}

// ---------------------------------------------------------------- instruction counts

/// Count mode: for instruction counts that do not move with the machine's
/// load. Run under callgrind, collecting only inside the `count_*` functions:
///
/// ```text
/// SINKHOLE_MATCHER_COUNT=real valgrind --tool=callgrind --toggle-collect='*count_*' \
///     target/release/deps/matcher-HASH
/// callgrind_annotate --inclusive=yes callgrind.out.PID | grep count_
/// ```
///
/// Each function runs its set `COUNT_ROUNDS` times: instructions per lookup
/// = its inclusive count ÷ (rounds × queries, printed here).
fn count_instructions(real: &Dataset, top: &[String], variant: &str) {
    let big;
    let data = if variant == "1m" {
        big = Dataset::padded(real, BIG);
        &big
    } else {
        real
    };
    {
        let policy = data.build_policy();
        let fx = data.build_fxhash();
        let sets = data.query_sets(&policy, &fx, top);
        for set in &sets {
            let labels: Vec<Vec<&[u8]>> = set
                .queries
                .iter()
                .map(|q| q.name.rsplit('.').map(str::as_bytes).collect())
                .collect();
            let (trie, fxc) = match set.name {
                "hits" => (count_trie_hits(&policy, &labels), count_fx_hits(&fx, set)),
                "subdomains" => (
                    count_trie_subdomains(&policy, &labels),
                    count_fx_subdomains(&fx, set),
                ),
                _ => (
                    count_trie_misses(&policy, &labels),
                    count_fx_misses(&fx, set),
                ),
            };
            println!(
                "count {variant} {}: {} queries x {COUNT_ROUNDS} rounds (trie {trie}, fx {fxc} hits)",
                set.name,
                set.queries.len()
            );
        }
    }
}

macro_rules! count_fns {
    ($($tag:literal: $trie:ident, $fx:ident;)*) => {$(
        // The tags keep the compiler from merging the identical bodies into
        // one symbol, which would pool the sets' counts.
        #[inline(never)]
        fn $trie(policy: &Policy, labels: &[Vec<&[u8]>]) -> usize {
            let mut blocked = black_box($tag);
            for _ in 0..COUNT_ROUNDS {
                for l in labels {
                    let d = policy.decide(black_box(l.as_slice()).iter().copied());
                    blocked += usize::from(matches!(d, Decision::Block { .. }));
                }
            }
            blocked - $tag
        }

        #[inline(never)]
        fn $fx(fx: &FxHashSet<Box<str>>, set: &QuerySet) -> usize {
            let mut buf = String::with_capacity(256);
            let mut blocked = black_box($tag);
            for _ in 0..COUNT_ROUNDS {
                for q in &set.queries {
                    blocked += usize::from(fx_lookup(fx, black_box(q), &mut buf));
                }
            }
            blocked - $tag
        }
    )*};
}

count_fns! {
    1: count_trie_hits, count_fx_hits;
    2: count_trie_subdomains, count_fx_subdomains;
    3: count_trie_misses, count_fx_misses;
}

// ---------------------------------------------------------------- builds and memory

/// Times both builds, reports them with heap and RSS, and returns one of each.
fn report_builds(
    data: &Dataset,
    variant: &str,
    policy_probe: &str,
    fx_probe: &str,
) -> (Policy, FxHashSet<Box<str>>) {
    let rules = data.rule_count();
    println!(
        "  rules {rules}, unique names {}, unique block names {}",
        data.unique_names(),
        data.unique_block_rules().len()
    );

    let trie = data.build_trie();
    let trie_heap = trie.heap_bytes();
    let nodes = trie.node_count();
    drop(trie);

    let (policy_times, policy) = time_builds(|| data.build_policy());
    let heap = policy.heap_bytes();
    println!(
        "  trie [{variant}]: policy::build median {} of {REPS} ({}); heap {} ({:.1} B/rule; trie {} in {nodes} nodes, rule table {}); RSS {}",
        ms(median(&policy_times)),
        list_ms(&policy_times),
        mib_b(heap),
        heap as f64 / rules as f64,
        mib_b(trie_heap),
        mib(heap - trie_heap),
        run_probe(policy_probe),
    );

    let (fx_times, fx) = time_builds(|| data.build_fxhash());
    let fx_heap = fx_heap_estimate(&fx);
    println!(
        "  fxhashset [{variant}]: build median {} of {REPS} ({}); heap estimate {} ({:.1} B/name, {} names, capacity {}); RSS {}",
        ms(median(&fx_times)),
        list_ms(&fx_times),
        mib_b(fx_heap),
        fx_heap as f64 / fx.len() as f64,
        fx.len(),
        fx.capacity(),
        run_probe(fx_probe),
    );
    (policy, fx)
}

/// Builds `REPS` times; returns the times and the last build.
fn time_builds<T>(mut build: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut times = Vec::with_capacity(REPS);
    let mut last = None;
    for _ in 0..REPS {
        drop(last.take());
        let t = Instant::now();
        let built = build();
        times.push(t.elapsed());
        last = Some(built);
    }
    (times, last.expect("REPS > 0"))
}

/// String bytes plus `capacity * (16 + 1)` for the table (a fat pointer and a
/// control byte per slot). Leaves out malloc's per-string overhead, which the
/// RSS figure shows.
fn fx_heap_estimate(set: &FxHashSet<Box<str>>) -> usize {
    set.iter().map(|s| s.len()).sum::<usize>() + set.capacity() * (16 + 1)
}

/// Runs this binary again as an RSS probe for one structure; returns a
/// printable summary.
fn run_probe(kind: &str) -> String {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return format!("n/a ({e})"),
    };
    let out = match Command::new(exe).env(PROBE_ENV, kind).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => return format!("n/a (probe exited {})", out.status),
        Err(e) => return format!("n/a ({e})"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Option<usize> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    match (field("growth"), field("kept"), field("peak")) {
        (Some(growth), Some(kept), Some(peak)) => format!(
            "growth {} (kept after malloc_trim {}, peak during build {})",
            mib(growth),
            mib(kept),
            mib(peak)
        ),
        (Some(growth), Some(kept), None) => {
            format!(
                "growth {} (kept after malloc_trim {})",
                mib(growth),
                mib(kept)
            )
        }
        _ => format!("n/a (probe said {text:?})"),
    }
}

/// In a fresh process: load the inputs, then report how much the resident
/// set grows when one structure is built and kept: right after the build
/// (`growth`), at the build's peak (`peak`), and once malloc has handed its
/// free pages back (`kept`).
fn rss_probe(dir: &Path, kind: &str) {
    let sources = read_sources(dir);
    let real = Dataset::real(&sources);
    let big = kind.ends_with("_1m").then(|| Dataset::padded(&real, BIG));
    let data = big.as_ref().unwrap_or(&real);
    // Memory freed while preparing the inputs would otherwise be reused by
    // the build without showing up as growth.
    release_free_memory();
    let before = rss_bytes();
    // Reset the peak counter so VmHWM afterwards is the peak of the build.
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let kept: Box<dyn std::any::Any> = match kind {
        "policy" | "policy_1m" => Box::new(data.build_policy()),
        "fxhash" | "fxhash_1m" => Box::new(data.build_fxhash()),
        other => panic!("unknown probe {other}"),
    };
    let after = rss_bytes();
    let peak = peak_reset.then(hwm_bytes).flatten();
    release_free_memory();
    let settled = rss_bytes();
    black_box(&kept);
    print!(
        "growth={} kept={}",
        after.saturating_sub(before),
        settled.saturating_sub(before)
    );
    if let Some(peak) = peak {
        print!(" peak={}", peak.saturating_sub(before));
    }
    println!();
}

/// Returns malloc's free pages to the kernel (glibc's `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers; it only releases free memory.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Resident set size from `/proc/self/statm`.
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * PAGE)
}

/// Peak resident set size (VmHWM) from `/proc/self/status`.
fn hwm_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

// ---------------------------------------------------------------- formatting

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn list_ms(times: &[Duration]) -> String {
    times
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join("/")
        + " ms"
}

/// MiB with the exact byte count.
fn mib_b(bytes: usize) -> String {
    format!("{} = {bytes} B", mib(bytes))
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
