//! Upstream transport: sinkhole's own raw forwarder against hickory-net's UDP
//! client, over loopback to an in-process responder that answers instantly.
//!
//! Three transports, each doing one full exchange per call for the same
//! client query (`www.example.com A`, EDNS) and handing back the reply bytes:
//!
//! - `sinkhole_raw`: `Upstreams::forward` (fresh connected socket, our bytes).
//! - `hickory_net`: the idiomatic hickory-net path, as hickory-resolver uses
//!   it: a `UdpClientStream` wrapped in a `DnsExchange` (background task),
//!   sent a `DnsRequest` built from the client's question, reply taken with
//!   `DnsResponse::into_buffer`.
//! - `hickory_net_direct`: hickory-net's leanest public path, calling
//!   `DnsRequestSender::send_message` on a `UdpClientStream` directly (no
//!   exchange channel, no background task).
//!
//! Both hickory variants pay for what a forwarder would: decoding the qname
//! into a `Name`, building the `Message`, and getting bytes back. All three
//! record the same upstream metric and check TC/SERVFAIL.
//!
//! Besides criterion's wall times, the binary prints CPU and allocations per
//! exchange (N = 20,000 per transport, interleaved in rounds), for the
//! production-like multi-thread runtime and for a current-thread one.
//! `UPSTREAM_CPU=0` skips that part; `UPSTREAM_CRITERION=0` skips criterion.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use hickory_net::proto::op::{DnsRequest, DnsRequestOptions, Query as HQuery, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RecordType};
use hickory_net::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsExchange, DnsHandle, DnsRequestSender, FirstAnswer};
use sinkhole::dns::answers::EDNS_PAYLOAD;
use sinkhole::dns::upstream::Upstreams;
use sinkhole::dns::wire::{FLAG_AD, FLAG_CD, Query, parse_query};
use sinkhole::metrics::{Metrics, UpstreamResult};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------
// Counting allocator (process-wide; the responder allocates nothing per query)

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------
// The responder: a blocking thread answering every packet at once

/// Writes the answer to `q` into `out`: ID and question copied, QR|RD|RA,
/// one A record (TTL 300) by pointer to the question, an OPT if `q` had an
/// additional record.
fn answer(q: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        i += len;
    }
    let qend = i + 4;
    if q.len() < qend {
        return None;
    }
    let rd = q[2] & 0x01;
    let had_opt = u16::from_be_bytes([q[10], q[11]]) > 0;
    out[0..2].copy_from_slice(&q[0..2]);
    out[2] = 0x80 | rd; // QR, opcode 0, RD as asked
    out[3] = 0x80; // RA, NOERROR
    out[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, u8::from(had_opt)]);
    let mut n = 12;
    out[n..n + qend - 12].copy_from_slice(&q[12..qend]);
    n += qend - 12;
    const A: [u8; 16] = [
        0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x01, 0x2C, 0, 4, 93, 184, 215, 14,
    ];
    out[n..n + A.len()].copy_from_slice(&A);
    n += A.len();
    if had_opt {
        let [hi, lo] = EDNS_PAYLOAD.to_be_bytes();
        let opt = [0, 0, 41, hi, lo, 0, 0, 0, 0, 0, 0];
        out[n..n + opt.len()].copy_from_slice(&opt);
        n += opt.len();
    }
    Some(n)
}

/// Starts the responder; returns its address and its thread's CPU clock.
fn spawn_responder() -> (SocketAddr, libc::clockid_t) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind responder");
    let addr = socket.local_addr().expect("responder address");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("responder".into())
        .spawn(move || {
            let mut clock: libc::clockid_t = 0;
            // SAFETY: querying our own thread's CPU clock id into a local.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
            assert_eq!(rc, 0, "pthread_getcpuclockid");
            tx.send(clock).expect("send clock id");
            let mut buf = [0u8; 4096];
            let mut out = [0u8; 512];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(n) = answer(&buf[..len], &mut out) {
                    let _ = socket.send_to(&out[..n], peer);
                }
            }
        })
        .expect("spawn responder");
    (addr, rx.recv().expect("responder clock id"))
}

// ---------------------------------------------------------------------------
// The client query and the transports

/// `www.example.com A IN`, RD, with an OPT (1232, DO clear): what a stub sends.
fn client_packet() -> &'static [u8] {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["www", "example", "com"] {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    Box::leak(p.into_boxed_slice())
}

const TIMEOUT: Duration = Duration::from_secs(2);

enum Transport {
    Sinkhole(Upstreams),
    HickoryExchange(DnsExchange<TokioRuntimeProvider>),
    HickoryDirect(Mutex<UdpClientStream<TokioRuntimeProvider>>),
}

struct Client {
    transport: Transport,
    metrics: Metrics,
}

/// The request a hickory-based forwarder would send for the client's query:
/// same question, RD, CD/AD carried over, our EDNS size, DO as asked.
fn hickory_request(q: &Query<'_>) -> DnsRequest {
    let name = Name::read(&mut BinDecoder::new(q.qname)).expect("qname");
    let mut query = HQuery::query(name, RecordType::from(q.qtype));
    query.set_query_class(DNSClass::from(q.qclass));
    let mut options = DnsRequestOptions::default();
    options.edns_payload_len = EDNS_PAYLOAD;
    options.edns_set_dnssec_ok = q.dnssec_ok();
    options.recursion_desired = true;
    let mut request = DnsRequest::from_query(query, options);
    request.metadata.checking_disabled = q.flags & FLAG_CD != 0;
    request.metadata.authentic_data = q.flags & FLAG_AD != 0;
    request
}

impl Client {
    /// Must be called inside `rt` (hickory's exchange spawns its task there).
    fn new(kind: &str, server: SocketAddr) -> Self {
        let provider = TokioRuntimeProvider::default();
        let transport = match kind {
            "sinkhole_raw" => Transport::Sinkhole(Upstreams::new(vec![server], TIMEOUT)),
            "hickory_net" => Transport::HickoryExchange(
                UdpClientStream::builder(server, provider)
                    .with_timeout(Some(TIMEOUT))
                    .exchange(),
            ),
            "hickory_net_direct" => Transport::HickoryDirect(Mutex::new(
                UdpClientStream::builder(server, provider)
                    .with_timeout(Some(TIMEOUT))
                    .build(),
            )),
            other => panic!("unknown transport {other}"),
        };
        Self {
            transport,
            metrics: Metrics::new(&[server]),
        }
    }

    /// One full exchange for `packet`; returns the upstream reply's bytes.
    async fn exchange(&self, packet: &[u8]) -> Vec<u8> {
        let q = parse_query(packet).expect("client query");
        let stream = match &self.transport {
            Transport::Sinkhole(up) => {
                return up.forward(&q, &self.metrics).await.expect("forward");
            }
            Transport::HickoryExchange(exchange) => {
                let request = hickory_request(&q);
                let started = Instant::now();
                let response = exchange.send(request).first_answer().await;
                (response, started)
            }
            Transport::HickoryDirect(stream) => {
                let request = hickory_request(&q);
                let started = Instant::now();
                let pending = stream.lock().expect("lock").send_message(request);
                (pending.first_answer().await, started)
            }
        };
        let (response, started) = stream;
        let response = response.expect("hickory exchange");
        let ok = !response.metadata.truncation
            && response.metadata.response_code != ResponseCode::ServFail;
        let result = if ok {
            UpstreamResult::Ok
        } else {
            UpstreamResult::Error
        };
        self.metrics.upstream_done(0, result, started.elapsed());
        assert!(ok, "unexpected TC or SERVFAIL");
        response.into_buffer()
    }
}

const BURST: usize = 64;

/// `BURST` exchanges in flight at once, each its own task (as the server
/// spawns one per query).
async fn burst(client: &Arc<Client>, packet: &'static [u8]) {
    let mut set = JoinSet::new();
    for _ in 0..BURST {
        let client = client.clone();
        set.spawn(async move { client.exchange(packet).await });
    }
    while let Some(reply) = set.join_next().await {
        black_box(reply.expect("task"));
    }
}

const KINDS: [&str; 3] = ["sinkhole_raw", "hickory_net", "hickory_net_direct"];

struct Setup {
    name: &'static str,
    rt: Runtime,
    clients: Vec<(&'static str, Arc<Client>)>,
}

fn setup(name: &'static str, rt: Runtime, server: SocketAddr) -> Setup {
    let clients = {
        let _guard = rt.enter();
        KINDS
            .iter()
            .map(|k| (*k, Arc::new(Client::new(k, server))))
            .collect()
    };
    Setup { name, rt, clients }
}

// ---------------------------------------------------------------------------
// CPU and allocations per exchange

fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut ru), 0);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn thread_cpu(clock: libc::clockid_t) -> Duration {
    // SAFETY: clock_gettime fills the zeroed struct we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        assert_eq!(libc::clock_gettime(clock, &mut ts), 0);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[derive(Default, Clone, Copy)]
struct Totals {
    exchanges: u64,
    wall: Duration,
    cpu: Duration,
    responder: Duration,
    allocs: u64,
    bytes: u64,
}

/// Runs `n` exchanges (`n / BURST` bursts if `concurrent`) in a task spawned
/// on the runtime, as the server's per-query tasks are, and returns the time
/// that task took. (Driving the loop from `block_on` would instead measure
/// wake-ups of the blocked main thread on the multi-thread runtime.)
fn run(
    s: &Setup,
    client: &Arc<Client>,
    packet: &'static [u8],
    n: u64,
    concurrent: bool,
) -> Duration {
    let client = client.clone();
    let task = s.rt.spawn(async move {
        let started = Instant::now();
        if concurrent {
            for _ in 0..n / BURST as u64 {
                burst(&client, packet).await;
            }
        } else {
            for _ in 0..n {
                black_box(client.exchange(packet).await);
            }
        }
        started.elapsed()
    });
    s.rt.block_on(task).expect("bench task")
}

fn measure(
    s: &Setup,
    client: &Arc<Client>,
    packet: &'static [u8],
    n: usize,
    concurrent: bool,
    clock: libc::clockid_t,
) -> Totals {
    let (a0, b0) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
    let (c0, r0) = (process_cpu(), thread_cpu(clock));
    let wall = run(s, client, packet, n as u64, concurrent);
    let (cpu, responder) = (process_cpu() - c0, thread_cpu(clock) - r0);
    Totals {
        exchanges: (if concurrent { n / BURST * BURST } else { n }) as u64,
        wall,
        cpu,
        responder,
        allocs: ALLOCS.load(Relaxed) - a0,
        bytes: ALLOC_BYTES.load(Relaxed) - b0,
    }
}

const N: usize = 20_000;
const ROUNDS: usize = 8;

/// Per exchange, in µs: the mean over all rounds and the best round (the
/// least disturbed by the other load on the machine).
fn per_exchange(rounds: &[Totals], f: impl Fn(&Totals) -> Duration) -> (f64, f64) {
    let us = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n as f64;
    let n: u64 = rounds.iter().map(|r| r.exchanges).sum();
    let mean = us(rounds.iter().map(&f).sum(), n);
    let best = rounds
        .iter()
        .map(|r| us(f(r), r.exchanges))
        .fold(f64::INFINITY, f64::min);
    (mean, best)
}

fn cpu_report(setups: &[Setup], packet: &'static [u8], clock: libc::clockid_t) {
    println!("Per exchange: N={N} per transport in {ROUNDS} interleaved rounds; mean / best round");
    println!("cpu = whole process incl. responder; client = cpu - responder thread's cpu");
    println!(
        "{:<7} {:<4} {:<19} {:>15} {:>15} {:>8} {:>15} {:>7} {:>6} {:>7}",
        "runtime",
        "mode",
        "transport",
        "wall_us",
        "cpu_us",
        "resp_us",
        "client_us",
        "x_raw",
        "allocs",
        "bytes"
    );
    for s in setups {
        for concurrent in [false, true] {
            // Warm up (sockets, timers, lazy statics) before counting.
            for (_, c) in &s.clients {
                measure(s, c, packet, 1024, concurrent, clock);
            }
            let mut rounds = vec![Vec::with_capacity(ROUNDS); KINDS.len()];
            for _ in 0..ROUNDS {
                for (r, (_, c)) in rounds.iter_mut().zip(&s.clients) {
                    r.push(measure(s, c, packet, N / ROUNDS, concurrent, clock));
                }
            }
            let client = |t: &Totals| t.cpu.saturating_sub(t.responder);
            let raw_client = per_exchange(&rounds[0], client).0;
            for (r, (kind, _)) in rounds.iter().zip(&s.clients) {
                let n: u64 = r.iter().map(|t| t.exchanges).sum();
                let allocs: u64 = r.iter().map(|t| t.allocs).sum();
                let bytes: u64 = r.iter().map(|t| t.bytes).sum();
                let wall = per_exchange(r, |t| t.wall);
                let cpu = per_exchange(r, |t| t.cpu);
                let resp = per_exchange(r, |t| t.responder);
                let cl = per_exchange(r, client);
                println!(
                    "{:<7} {:<4} {:<19} {:>7.2} /{:>6.2} {:>7.2} /{:>6.2} {:>8.2} {:>7.2} /{:>6.2} {:>7.2} {:>6.1} {:>7.0}",
                    s.name,
                    if concurrent { "x64" } else { "seq" },
                    kind,
                    wall.0,
                    wall.1,
                    cpu.0,
                    cpu.1,
                    resp.0,
                    cl.0,
                    cl.1,
                    cl.0 / raw_client,
                    allocs as f64 / n as f64,
                    bytes as f64 / n as f64,
                );
            }
        }
    }
    println!();
}

// ---------------------------------------------------------------------------
// Criterion

fn criterion_benches(c: &mut Criterion, setups: &[Setup], packet: &'static [u8]) {
    // Criterion runs on the production-like runtime only; the current-thread
    // figures come from the CPU report, which also gives wall time.
    for s in setups.iter().filter(|s| s.name == "multi") {
        let mut g = c.benchmark_group("upstream/forward");
        g.throughput(Throughput::Elements(1));
        for (kind, client) in &s.clients {
            g.bench_function(*kind, |b| {
                b.iter_custom(|iters| run(s, client, packet, iters, false));
            });
        }
        g.finish();

        let mut g = c.benchmark_group("upstream/forward_x64");
        g.throughput(Throughput::Elements(BURST as u64));
        for (kind, client) in &s.clients {
            g.bench_function(*kind, |b| {
                b.iter_custom(|iters| run(s, client, packet, iters * BURST as u64, true));
            });
        }
        g.finish();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listing = args.iter().any(|a| a == "--list" || a == "--test");
    let (server, clock) = spawn_responder();
    let packet = client_packet();

    // The production runtime is multi-thread with one worker per core (2 here).
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    let setups = [
        setup("multi", multi, server),
        setup("current", current, server),
    ];

    // Sanity: all transports get the same answer back.
    for s in &setups {
        for (kind, client) in &s.clients {
            let reply = s.rt.block_on(client.exchange(packet));
            assert_eq!(reply.len(), packet.len() + 16, "{kind}: reply size");
            assert_eq!(&reply[12..33], &packet[12..33], "{kind}: question");
        }
    }

    let env_on = |k: &str| std::env::var(k).map_or(true, |v| v != "0");
    if !listing && env_on("UPSTREAM_CPU") {
        cpu_report(&setups, packet, clock);
    }
    if env_on("UPSTREAM_CRITERION") {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(20)
            .without_plots()
            .configure_from_args();
        criterion_benches(&mut c, &setups, packet);
        c.final_summary();
    }
}
