#!/usr/bin/env python3
"""The reload benchmark proper; run.sh builds and prepares, then runs this.

usage: bench.py --work DIR --sinkhole BIN --out DIR [--rev REV] [--floor BIN]

DIR holds benches/e2e/prep.py's files (union.txt, union1m.txt, q_mixed.txt,
q_cached.txt, probes.json). Starts NSD (the e2e bench's upstream: a wildcard
private root) on the client core; with --floor, first runs the load below
against the e2e bench's floor responder (no DNS work: what the machine and
client lose and how late they are on their own). Then starts sinkhole on the
server core with a ~1,000,000-name list, warms the cache, and runs dnsperf
twice at one fixed rate for the same time:

  steady     no reloads;
  reloading  every RELOAD_INTERVAL seconds, a new version of the list is
             written beside it and renamed over it, a reload is triggered
             (RELOAD_TRIGGER: post = POST /reload, sighup = kill -HUP,
             watch = nothing: the server must notice the rename itself),
             and a separate client asks for that version's canary name
             every 10 ms until it is blocked (NXDOMAIN): trigger to new
             policy in service.

For each phase: queries sent, lost, SERVFAIL, answers with the wrong RCODE
for their name, p50/p99/p99.9/max latency (dnsperf -v: every query's
latency), the lowest answers per second (dnsperf -S 1), the server's RSS every
100 ms (VmRSS) and its peak (VmHWM, reset at the start of each phase).
Prints a markdown table; writes it and every raw figure into --out
(result.md, result.json).

Tunables (environment): RELOAD_QPS (20000), RELOAD_SECONDS (30),
RELOAD_INTERVAL (2), RELOAD_TRIGGER (post | sighup | watch),
RELOAD_INSERVICE_TIMEOUT (10 s: a canary not blocked by then counts as a
timeout), RELOAD_ROTATE (1000 padding names swapped per version),
RELOAD_CLIENTS (8), RELOAD_OUTSTANDING (a quarter second of queries, at
least 1000), RELOAD_NICE (-20 as root, else 0), RELOAD_SERVER_CORE (0),
RELOAD_CLIENT_CORE (1).
"""
import argparse
import collections
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import harness  # noqa: E402  (benches/lib: processes, /proc, DNS, dnsperf output)
from harness import (LIVE, UPSTREAM_ADDR, Failed, check_answers, check_config, cpu_ticks,  # noqa: E402
                     dns_query, dnsperf_per_second, dnsperf_rcodes, dnsperf_summary, free_port,
                     log, machine, on_signal, others_ticks, spawn, steal_ticks, stop, stop_all,
                     tail, wait_ready)

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = os.environ.get("RELOAD_SERVER_CORE", "0")
CLIENT_CORE = os.environ.get("RELOAD_CLIENT_CORE", "1")
NICE = os.environ.get("RELOAD_NICE", "-20" if os.geteuid() == 0 else "0")
QPS = int(os.environ.get("RELOAD_QPS", "20000"))
SECONDS = int(os.environ.get("RELOAD_SECONDS", "30"))
INTERVAL = float(os.environ.get("RELOAD_INTERVAL", "2"))
TRIGGER = os.environ.get("RELOAD_TRIGGER", "post")
INSERVICE_TIMEOUT = float(os.environ.get("RELOAD_INSERVICE_TIMEOUT", "10"))
ROTATE = int(os.environ.get("RELOAD_ROTATE", "1000"))
CLIENTS = os.environ.get("RELOAD_CLIENTS", "8")
# Queries in flight: a quarter second's worth, so the load stays open-loop
# through any stall under 250 ms (dnsperf keeps sending at the rate). Not
# more: dnsperf -q 20000 starts ~10% behind its rate and then catches up in a
# burst that overflows the receiver's socket (seen against the floor too).
OUTSTANDING = os.environ.get("RELOAD_OUTSTANDING", str(max(1000, QPS // 4)))
LOAD_TIMEOUT = 90.0
GROUPS = 16  # version k leaves out padding group k % GROUPS
FIRST_RELOAD_S = 1.0  # into the reloading run: dnsperf is sending by then
POLL_S = 0.010  # canary poll period
RSS_EVERY_S = 0.100
CANARY = "v{}.reload-canary.test"
SYNTH_TLDS = ["com", "net", "org", "info", "io", "xyz", "top", "online"]  # as prep.py's
BUSY_PCT = 25  # others' CPU (% of a core) above which the report says the machine was busy
TARGETS = {"lost": 0, "servfail": 0, "p99_ratio": 1.5, "in_service_s": 1.0, "rss_ratio": 1.5}

harness.configure(nice=NICE, pidfile=os.environ.get("RELOAD_PIDFILE"))


# ---------------------------------------------------------------- /proc

def proc_status(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise Failed(f"no {key} for {pid}")


def reset_peak(pid):
    """Resets VmHWM to the current RSS (clear_refs 5, Linux 4.0+); False if
    the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def udp_socket_drops(port):
    """Datagrams the kernel dropped at the UDP sockets bound to
    127.0.0.1:`port` (their receive buffer was full): /proc/net/udp's drops
    column, one value per socket (by inode: the file is read bucket by
    bucket while others' sockets come and go, and can list one twice)."""
    local = f"0100007F:{port:04X}"
    drops = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            v = line.split()
            if v[1] == local:
                drops[v[9]] = int(v[-1])
    return sum(drops.values())


def udp_rcvbuf_errors():
    """The machine's UDP receive-buffer drops so far (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


# ---------------------------------------------------------------- HTTP client

def http_call(port, method, path, timeout=2.0):
    """(status, body) or (None, error text)."""
    try:
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        h.request(method, path)
        r = h.getresponse()
        body = r.read().decode(errors="replace")
        h.close()
        return r.status, body
    except OSError as e:
        return None, str(e)


def metric(text, name, **labels):
    """One sample of a Prometheus text body, None if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = rf"^{re.escape(name)}" + (rf"\{{{re.escape(want)}\}}" if want else "") + r" (\S+)$"
    m = re.search(pat, text, re.M)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------- the list's versions

def synthetic(tag):
    """A made-up name in prep.py's style (two hex labels, one of its TLDs)."""
    h = hashlib.sha1(tag.encode()).hexdigest()
    return f"{h[:12]}.{h[12:20]}.{SYNTH_TLDS[int(h[20:22], 16) % len(SYNTH_TLDS)]}"


class Versions:
    """The list file and its versions. Version 0 is union1m.txt as prep.py
    wrote it (exactly 1,000,000 names). Version k >= 1 leaves out one group
    of ROTATE padding names (group k % 16), adds ROTATE names never listed
    before, and the canaries v1..vk (cumulative: version k's canary is
    blocked exactly when version k or a later one is in service), so it
    holds 1,000,000 + k names; no two versions are the same file."""

    def __init__(self, work):
        with open(f"{work}/union1m.txt") as f:
            names = f.read().split()
        with open(f"{work}/union.txt") as f:
            real = set(f.read().split())
        pad = [n for n in names if n not in real]  # prep.py's synthetic padding
        if len(pad) < GROUPS * ROTATE:
            raise Failed(f"only {len(pad)} padding names for {GROUPS} groups of {ROTATE}")
        step = len(pad) // (GROUPS * ROTATE)
        pool = pad[::step][:GROUPS * ROTATE]  # spread over the padding
        pool_set = set(pool)
        self.names = set(names)
        self.count = len(names)
        self.base = ("\n".join(n for n in names if n not in pool_set) + "\n").encode()
        self.groups = [("\n".join(pool[g * ROTATE:(g + 1) * ROTATE]) + "\n").encode() for g in range(GROUPS)]
        self.dir = os.path.join(work, "list")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "union1m-live.txt")
        self.tmp = os.path.join(self.dir, ".union1m-live.txt.new")
        self.blocked_cache = {}

    def extras(self, k):
        out = []
        j = 0
        while len(out) < ROTATE:
            n = synthetic(f"sinkhole-reload-{k}-{j}")
            j += 1
            if n not in self.names:
                out.append(n)
        return out

    def write(self, k, dest):
        with open(dest, "wb") as f:
            f.write(self.base)
            for g in range(GROUPS):
                if k == 0 or g != k % GROUPS:
                    f.write(self.groups[g])
            if k:
                f.write(("\n".join(self.extras(k)) + "\n").encode())
                f.write("".join(CANARY.format(i) + "\n" for i in range(1, k + 1)).encode())

    def rules(self, k):
        return self.count + k

    def prepare(self, n):
        """Versions 1..n written before the measured phase, outside the
        list's (watched) directory. A tick then only hard-links version k
        beside the list and renames it over: no 24 MB write on the client's
        core while dnsperf measures, and the version replaced keeps a link,
        so the rename frees no page cache either. (Writing each next version
        right after the rename put ~50 ms of kernel time on the client core
        at every trigger, which dnsperf reported as the server's latency.)"""
        self.staged = os.path.join(os.path.dirname(self.dir), "versions")
        os.makedirs(self.staged, exist_ok=True)
        for k in range(1, n + 1):
            self.write(k, self.staged_path(k))
        # On disk before the phase: otherwise the kernel writes these
        # ~360 MB back during it (30 s after they were dirtied), and a
        # flusher on the server's core shows up as a reload's stall (one
        # 87 ms stall in a trial).
        for k in range(1, n + 1):
            fd = os.open(self.staged_path(k), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def staged_path(self, k):
        return os.path.join(self.staged, f"v{k}.txt")

    def stage(self, k):
        """Version k, ready to be renamed over the list (`self.tmp`)."""
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        os.link(self.staged_path(k), self.tmp)

    def cleanup(self):
        if getattr(self, "staged", None):
            shutil.rmtree(self.staged, ignore_errors=True)

    def blocked(self, name):
        """Whether the version-0 list blocks `name` (or a parent of it). The
        query file's names are real list names or popular ones, which no
        version adds or drops."""
        b = self.blocked_cache.get(name)
        if b is None:
            labels = name.lower().rstrip(".").split(".")
            b = any(".".join(labels[i:]) in self.names for i in range(len(labels)))
            self.blocked_cache[name] = b
        return b


# ---------------------------------------------------------------- measuring

class RssSampler(threading.Thread):
    """VmRSS of a process every 100 ms, (seconds since start, KiB)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.halt = pid, [], threading.Event()

    def run(self):
        t0 = time.monotonic()
        nxt = t0
        while not self.halt.is_set():
            try:
                self.samples.append((time.monotonic() - t0, proc_status(self.pid, "VmRSS")))
            except (OSError, Failed):
                return
            nxt += RSS_EVERY_S
            self.halt.wait(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self.halt.set()
        self.join(2)
        return self.samples


def parse_dnsperf(path, versions):
    """Summary, every latency, RCODEs, answers whose RCODE is wrong for
    their name, and the per-second QPS of a dnsperf -v -S 1 output."""
    with open(path, errors="replace") as f:
        out = f.read()
    res = dnsperf_summary(out)
    res["rcodes"] = dnsperf_rcodes(out)
    res["servfail"] = res["rcodes"].get("SERVFAIL", 0)
    lat, wrong, lost_by, seq = [], collections.Counter(), collections.Counter(), []
    for rcode, name, secs in re.findall(r"^> (\w+) (\S+) \S+(?: ([\d.]+))?$", out, re.M):
        blocked = versions.blocked(name) if versions else False
        if rcode == "T":  # timed out: lost
            lost_by["blocked" if blocked else "allowed"] += 1
            seq.append(None)
            continue
        lat.append(float(secs))
        seq.append(lat[-1])
        if rcode == "SERVFAIL" or versions is None:
            continue  # counted on its own
        if blocked and rcode != "NXDOMAIN":
            wrong[f"blocked name answered {rcode}"] += 1
        elif not blocked and rcode != "NOERROR":
            wrong[f"allowed name answered {rcode}"] += 1
    if not lat:
        raise Failed(f"no per-query latencies in {path}")
    lat.sort()
    n = len(lat)

    def pct(q):
        return lat[min(n - 1, int(n * q))] * 1e6

    res.update(p50_us=pct(0.50), p99_us=pct(0.99), p999_us=pct(0.999), max_us=lat[-1] * 1e6,
               latencies=n, wrong=sum(wrong.values()), wrong_by=dict(wrong), lost_by=dict(lost_by))
    per_s, min_qps_1s = dnsperf_per_second(out)  # dnsperf -S 1
    res["qps_per_s"] = per_s
    res["_seq"] = seq  # in dnsperf's order, for window_p99s; not reported
    res["min_qps_1s"] = min_qps_1s
    return res


# ---------------------------------------------------------------- the run

class Ctx:
    pass


def start_sinkhole(ctx):
    d = os.path.join(ctx.work, "srv", "sinkhole")
    os.makedirs(d, exist_ok=True)
    ctx.port, ctx.admin = free_port(), free_port()
    with open(os.path.join(HERE, "conf", "sinkhole.yaml")) as f:
        text = f.read()
    for k, v in dict(PORT=ctx.port, ADMIN_PORT=ctx.admin, NSD_PORT=ctx.nsd_port, LIST=ctx.versions.path).items():
        text = text.replace(f"@@{k}@@", str(v))
    conf = f"{d}/sinkhole.yaml"
    with open(conf, "w") as f:
        f.write(text)
    # `check` on the same config with a one-name list: are the keys right for
    # this binary? Not on the real list: `check` fails on rules that `serve`
    # only skips and counts (the guard's protected names: the shared lists
    # block three names under nhs.uk).
    check_config(ctx.sinkhole, d, lambda probe_list: text.replace(ctx.versions.path, probe_list), "bench")
    ctx.server_log = f"{d}/server.log"
    t0 = time.monotonic()
    p = spawn([ctx.sinkhole, "serve", "-c", conf], ctx.server_log, SERVER_CORE)
    ctx.server = p
    wait_ready(p, t0, ctx.server_log, lambda: http_call(ctx.admin, "GET", "/readyz", timeout=0.25)[0] == 200,
               LOAD_TIMEOUT)
    ctx.load_s = time.monotonic() - t0
    ctx.load_rss_kib = proc_status(p.pid, "VmRSS")
    log(f"sinkhole: ready in {ctx.load_s:.2f}s with {ctx.versions.count} names, "
        f"RSS {ctx.load_rss_kib / 1024:.0f} MiB (port {ctx.port}, admin {ctx.admin}, core {SERVER_CORE})")


def sanity(ctx):
    """Before measuring: listed names blocked, popular names forwarded, the
    first canary not blocked yet, the list's rule count as written."""
    pr = ctx.probes
    checks = [(pr["blocked"], "NXDOMAIN"), (pr["blocked_sub"], "NXDOMAIN"), (pr["synthetic"], "NXDOMAIN"),
              (pr["popular"], UPSTREAM_ADDR), (pr["popular2"], UPSTREAM_ADDR), (CANARY.format(1), UPSTREAM_ADDR)]
    check_answers(ctx.port, checks)
    _, body = http_call(ctx.admin, "GET", "/metrics")
    rules = metric(body, "sinkhole_list_rules", list="union")
    if rules is not None and rules != ctx.versions.count:
        log(f"note: sinkhole_list_rules says {rules:.0f} for a file of {ctx.versions.count} names")
    ctx.rules0 = rules
    log("sanity ok: listed names NXDOMAIN, popular names and the first canary forwarded")


def warm(ctx):
    """Every popular name once (full rate, as the e2e bench's warm-up), so
    that the measured runs answer them from the cache."""
    out = f"{ctx.work}/dnsperf-warmup.txt"
    p = spawn(["dnsperf", "-s", "127.0.0.1", "-p", str(ctx.port), "-d", f"{ctx.work}/q_cached.txt",
               "-n", "1", "-c", CLIENTS, "-q", "100", "-t", "2"], out, CLIENT_CORE)
    p.wait(120)
    LIVE.pop(p.pid, None)
    m = re.search(r"Queries completed:\s+(\d+)", open(out, errors="replace").read())
    log(f"warm-up: {m.group(1) if m else '?'} popular names asked once")


def post_reload(ctx, ev):
    t = time.monotonic()
    status, body = http_call(ctx.admin, "POST", "/reload", timeout=60)
    ev["post_status"] = status
    ev["post_ms"] = (time.monotonic() - t) * 1e3
    if status != 200:
        ev["post_body"] = body[:300]


def poll_canary(ctx, ev, t_trigger, name):
    """Asks for `name` every 10 ms from its own socket until it is answered
    NXDOMAIN: trigger to in service is the time of that answer's arrival
    (the policy was in service by then; at most one poll earlier)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = t_trigger + INSERVICE_TIMEOUT
    polls, last = 0, None
    try:
        while True:
            t_send = time.monotonic()
            if t_send > deadline:
                break
            r = dns_query(ctx.port, name, timeout=max(0.01, min(0.5, deadline - t_send)), sock=s)
            polls += 1
            now = time.monotonic()
            if r is not None and r[0] == 3:
                ev["in_service_ms"] = (now - t_trigger) * 1e3
                break
            last = "no answer" if r is None else f"rcode {r[0]}"
            time.sleep(max(0.0, t_send + POLL_S - now))
    finally:
        s.close()
    ev["polls"] = polls
    if "in_service_ms" not in ev:
        ev["in_service_ms"] = None
        ev["last_answer"] = last


def versions_needed():
    """How many ticks `reloads` makes: every INTERVAL s from FIRST_RELOAD_S
    until half a second before the end."""
    return int((SECONDS - 0.5 - FIRST_RELOAD_S) // INTERVAL) + 1


def reloads(ctx, t0, perf):
    """Every INTERVAL s from FIRST_RELOAD_S until the run's last half second:
    rename the next version over the list, trigger, poll its canary. The
    versions were written before the phase (Versions.prepare), so each tick
    is only a link, a rename and a trigger."""
    events, threads = [], []
    k = 1
    ctx.versions.stage(k)
    while True:
        tick = t0 + FIRST_RELOAD_S + (k - 1) * INTERVAL
        if tick > t0 + SECONDS - 0.5 or perf.poll() is not None:
            break
        time.sleep(max(0.0, tick - time.monotonic()))  # the schedule, not a wait for readiness
        os.replace(ctx.versions.tmp, ctx.versions.path)
        t_rename = time.monotonic()
        ev = {"version": k, "at_s": round(t_rename - t0, 3), "rules": ctx.versions.rules(k)}
        if TRIGGER == "post":
            t_trigger = time.monotonic()
            th = threading.Thread(target=post_reload, args=(ctx, ev), daemon=True)
            th.start()
            threads.append(th)
        elif TRIGGER == "sighup":
            t_trigger = time.monotonic()
            os.kill(ctx.server.pid, signal.SIGHUP)
        else:  # watch: the rename is the trigger
            t_trigger = t_rename
        th = threading.Thread(target=poll_canary, args=(ctx, ev, t_trigger, CANARY.format(k)), daemon=True)
        th.start()
        threads.append(th)
        events.append(ev)
        k += 1
        if k <= versions_needed():
            ctx.versions.stage(k)
    if os.path.exists(ctx.versions.tmp):
        os.remove(ctx.versions.tmp)
    return events, threads


def load_argv(ctx, port):
    """The measured load: the same for the floor and both phases."""
    return ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", f"{ctx.work}/q_mixed.txt", "-c", CLIENTS,
            "-q", OUTSTANDING, "-t", "2", "-l", str(SECONDS), "-Q", str(QPS), "-v", "-S", "1"]


def floor_phase(ctx):
    """The same load against the e2e bench's floor (benches/e2e/floor.c: it
    reflects each query as its answer, no DNS work) on the server core,
    before sinkhole starts: what this machine and client lose and how late
    they answer on their own, right now."""
    d = os.path.join(ctx.work, "srv", "floor")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    p = spawn([ctx.floor, str(port)], f"{d}/floor.log", SERVER_CORE)
    try:
        deadline = time.monotonic() + 10
        while dns_query(port, "ready.invalid") is None:
            if p.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"the floor did not answer: {tail(d + '/floor.log')}")
            time.sleep(0.02)
        log(f"floor: {SECONDS}s at {QPS} qps against benches/e2e/floor.c (core {SERVER_CORE})")
        out = f"{ctx.work}/dnsperf-floor.txt"
        o0, d0, e0 = others_ticks({p.pid, ctx.nsd.pid, os.getpgrp()}), udp_socket_drops(port), udp_rcvbuf_errors()
        t0 = time.monotonic()
        perf = spawn(load_argv(ctx, port), out, CLIENT_CORE)
        try:
            perf.wait(SECONDS + 30)
        except subprocess.TimeoutExpired:
            raise Failed(f"floor: dnsperf still running {SECONDS + 30}s after its start")
        LIVE.pop(perf.pid, None)
        t1 = time.monotonic()
        d1, e1 = udp_socket_drops(port), udp_rcvbuf_errors()
        o1 = others_ticks({p.pid, ctx.nsd.pid, perf.pid, os.getpgrp()})
    finally:
        stop(p)
    res = parse_dnsperf(out, None)
    res.update(server_socket_drops=d1 - d0, other_udp_drops=(e1 - e0) - (d1 - d0),
               others_pct=100 * sum(v - o0.get(k, 0) for k, v in o1.items()) / CLK_TCK / (t1 - t0))
    log(f"floor: sent {res['sent']:.0f}, lost {res['lost']:.0f}, p50 {res['p50_us']:.0f} us, "
        f"p99 {res['p99_us']:.0f} us, max {res['max_us'] / 1e3:.1f} ms, others {res['others_pct']:.0f}%")
    return res


def phase(ctx, name, with_reloads):
    if with_reloads:
        ctx.versions.prepare(versions_needed())
    out = f"{ctx.work}/dnsperf-{name}.txt"
    pid = ctx.server.pid
    _, m0 = http_call(ctx.admin, "GET", "/metrics")
    peak_reset = reset_peak(pid)
    sampler = RssSampler(pid)
    argv = load_argv(ctx, ctx.port)
    log(f"{name}: {SECONDS}s at {QPS} qps" + (f", a reload every {INTERVAL:g}s (trigger: {TRIGGER})"
                                              if with_reloads else ", no reloads"))
    o0, st0, c0 = others_ticks({pid, ctx.nsd.pid, os.getpgrp()}), steal_ticks(), cpu_ticks(pid)
    d0, e0 = udp_socket_drops(ctx.port), udp_rcvbuf_errors()
    w0 = dns_thread_waits(pid)
    t0 = time.monotonic()
    perf = spawn(argv, out, CLIENT_CORE)
    sampler.start()
    events, threads = reloads(ctx, t0, perf) if with_reloads else ([], [])
    try:
        perf.wait(SECONDS + 30)
    except subprocess.TimeoutExpired:
        raise Failed(f"{name}: dnsperf still running {SECONDS + 30}s after its start")
    LIVE.pop(perf.pid, None)
    t1 = time.monotonic()
    w1 = dns_thread_waits(pid)
    d1, e1 = udp_socket_drops(ctx.port), udp_rcvbuf_errors()
    for th in threads:  # pollers end by their own deadline
        th.join(INSERVICE_TIMEOUT + 65)
    samples = sampler.stop()
    hwm = proc_status(pid, "VmHWM")
    c1, st1 = cpu_ticks(pid), steal_ticks()
    o1 = others_ticks({pid, ctx.nsd.pid, perf.pid, os.getpgrp()})
    _, m1 = http_call(ctx.admin, "GET", "/metrics")
    if ctx.server.poll() is not None:
        raise Failed(f"sinkhole exited during {name} (code {ctx.server.returncode}): {tail(ctx.server_log)}")
    res = parse_dnsperf(out, ctx.versions)
    rss = [kib for _, kib in samples]
    res.update(
        rss_samples=samples, rss_median_mib=statistics.median(rss) / 1024 if rss else None,
        rss_max_sampled_mib=max(rss) / 1024 if rss else None,
        rss_hwm_mib=hwm / 1024 if peak_reset else None,
        server_cpu_pct=100 * (c1 - c0) / CLK_TCK / (t1 - t0),
        others_pct=100 * sum(v - o0.get(k, 0) for k, v in o1.items()) / CLK_TCK / (t1 - t0),
        steal_pct=100 * sum(st1[c] - st0.get(c, st1[c]) for c in (SERVER_CORE, CLIENT_CORE)) / CLK_TCK / (t1 - t0),
        events=events, dns_wait_ms_per_s=(w1 - w0) / 1e6 / (t1 - t0))
    res["rss_peak_mib"] = max(x for x in (res["rss_max_sampled_mib"], res["rss_hwm_mib"]) if x is not None)
    for key in ("ok", "error"):
        a, b = metric(m0, "sinkhole_reloads_total", result=key), metric(m1, "sinkhole_reloads_total", result=key)
        res[f"reloads_{key}"] = None if a is None or b is None else b - a
    # where lost queries went: dropped by the kernel at sinkhole's socket
    # (its receive buffer full while it did not read), or elsewhere (the
    # rest of the machine's UDP receive-buffer drops: dnsperf's sockets)
    res["server_socket_drops"] = d1 - d0
    res["other_udp_drops"] = (e1 - e0) - (d1 - d0)
    q = [sum(float(x) for x in re.findall(r'^sinkhole_queries_total\{[^}]*\} (\S+)$', m, re.M)) for m in (m0, m1)]
    res["server_queries"] = q[1] - q[0]  # every query sinkhole counted, the canary polls too
    res["canary_polls"] = sum(e.get("polls", 0) for e in events)
    res["rules_after"] = metric(m1, "sinkhole_list_rules", list="union")
    res["last_reload_ts"] = metric(m1, "sinkhole_list_last_reload_timestamp_seconds", list="union")
    ins = [e["in_service_ms"] for e in events if e.get("in_service_ms") is not None]
    res["in_service_median_ms"] = statistics.median(ins) if ins else None
    res["in_service_max_ms"] = max(ins) if ins else None
    res["in_service_timeouts"] = sum(1 for e in events if e.get("in_service_ms") is None)
    res["post_ms"] = [e.get("post_ms") for e in events if "post_ms" in e]
    res["post_not_200"] = sum(1 for e in events if "post_status" in e and e["post_status"] != 200)
    res.update(window_p99s(res.pop("_seq"), res["run_s"], events))
    log(f"{name}: sent {res['sent']:.0f}, lost {res['lost']:.0f}, SERVFAIL {res['servfail']}, "
        f"wrong RCODE {res['wrong']}, p50 {res['p50_us']:.0f} us, p99 {res['p99_us']:.0f} us, "
        f"max {res['max_us'] / 1e3:.1f} ms, RSS median {res['rss_median_mib']:.0f} MiB peak "
        f"{res['rss_peak_mib']:.0f} MiB, server CPU {res['server_cpu_pct']:.0f}%, others {res['others_pct']:.0f}%, "
        f"DNS threads waited {res['dns_wait_ms_per_s']:.2f} ms/s for a CPU")
    if with_reloads and res.get("p99_during_us") and res.get("p99_between_us"):
        log(f"{name}: p99 while a reload is under way {res['p99_during_us']:.0f} us "
            f"({res['queries_during']} queries), between reloads {res['p99_between_us']:.0f} us")
    if with_reloads:
        for e in events:
            log(f"  v{e['version']} at {e['at_s']:.2f}s: in service "
                + (f"after {e['in_service_ms']:.0f} ms" if e["in_service_ms"] is not None
                   else f"NOT within {INSERVICE_TIMEOUT:g}s (last answer {e.get('last_answer')})")
                + (f", POST /reload {e.get('post_status')} in {e['post_ms']:.0f} ms" if "post_ms" in e else ""))
    return res


def dns_thread_waits(pid):
    """Nanoseconds sinkhole's DNS threads (the tokio runtime's, which run
    the workers) have spent runnable but waiting for a CPU, summed (the
    second field of each thread's /proc schedstat). Unlike latency, which
    the client side of this shared machine moves as much as the server,
    this is the server's own delay: what a reload costs the workers."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("tokio-rt-worker"):
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def window_p99s(seq, run_s, events):
    """p99 of the queries sent while a reload was under way (from its
    trigger until its version answered, plus 50 ms) against the p99 of the
    queries of the same run sent between reloads. Both come from one
    dnsperf run, so the machine's noise, which moves a whole phase's p99
    by 2-4x from run to run here, falls on both sides alike. A query's send
    time is taken from its place in dnsperf's output (a fixed rate: within
    a few ms)."""
    windows = [(e["at_s"], e["at_s"] + (e["in_service_ms"] or INSERVICE_TIMEOUT * 1e3) / 1e3 + 0.05)
               for e in events]
    if not windows or not seq:
        return {"p99_during_us": None, "p99_between_us": None, "queries_during": 0}
    during, between = [], []
    for i, x in enumerate(seq):
        if x is None:
            continue
        t = i * run_s / len(seq)
        (during if any(a <= t < b for a, b in windows) else between).append(x)

    def p99(xs):
        xs.sort()
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e6 if xs else None

    return {"p99_during_us": p99(during), "p99_between_us": p99(between), "queries_during": len(during)}


# ---------------------------------------------------------------- report

def fmt(v, digits=0, unit=""):
    return "–" if v is None else f"{v:,.{digits}f}{unit}"


def verdict(ok):
    return "**met**" if ok else "**not met**"


def report(ctx, f, a, b, started):
    p99_ratio = b["p99_us"] / a["p99_us"] if a["p99_us"] else None
    rss_ratio = b["rss_peak_mib"] / a["rss_median_mib"] if a["rss_median_mib"] else None
    ev = b["events"]
    n_ok = len(ev) - b["in_service_timeouts"]
    ins = (f"median {fmt(b['in_service_median_ms'])} ms, max {fmt(b['in_service_max_ms'])} ms"
           f" ({n_ok} of {len(ev)} versions in service within {INSERVICE_TIMEOUT:g} s)")
    f = f or {}

    def fl(key, digits=0, scale=1.0):
        return fmt(f[key] / scale, digits) if f.get(key) is not None else "–"

    rows = [
        ("queries sent", fl("sent"), fmt(a["sent"]), fmt(b["sent"]), ""),
        ("lost (no answer in 2 s)", fl("lost"), fmt(a["lost"]), fmt(b["lost"]), "target 0"),
        ("of which dropped at the server's socket (receive buffer full)", fl("server_socket_drops"),
         fmt(a["server_socket_drops"]), fmt(b["server_socket_drops"]), ""),
        ("other UDP receive-buffer drops on the machine (dnsperf's)", fl("other_udp_drops"),
         fmt(a["other_udp_drops"]), fmt(b["other_udp_drops"]), ""),
        ("queries sinkhole counted (its metric; canary polls included)", "–", fmt(a["server_queries"]),
         fmt(b["server_queries"]), ""),
        ("SERVFAIL", "–", fmt(a["servfail"]), fmt(b["servfail"]), "target 0"),
        ("wrong RCODE for the name", "–", fmt(a["wrong"]), fmt(b["wrong"]), "should be 0"),
        ("p50 latency, µs", fl("p50_us"), fmt(a["p50_us"]), fmt(b["p50_us"]), f"{b['p50_us'] / a['p50_us']:.2f}×"),
        ("**p99 latency, µs**", fl("p99_us"), fmt(a["p99_us"]), fmt(b["p99_us"]),
         f"**{p99_ratio:.2f}×** (target ≤ {TARGETS['p99_ratio']}×)"),
        ("p99 in the same run: while a reload is under way / between reloads, µs", "–", "–",
         f"{fmt(b.get('p99_during_us'))} / {fmt(b.get('p99_between_us'))} "
         f"({fmt(b.get('queries_during'))} queries during)",
         f"{b['p99_during_us'] / b['p99_between_us']:.2f}×"
         if b.get("p99_during_us") and b.get("p99_between_us") else "–"),
        ("p99.9 latency, µs", fl("p999_us"), fmt(a["p999_us"]), fmt(b["p999_us"]),
         f"{b['p999_us'] / a['p999_us']:.2f}×"),
        ("max latency, ms", fl("max_us", 1, 1e3), fmt(a["max_us"] / 1e3, 1), fmt(b["max_us"] / 1e3, 1), ""),
        ("lowest answers per second (dnsperf -S 1)", fl("min_qps_1s"), fmt(a["min_qps_1s"]), fmt(b["min_qps_1s"]), ""),
        ("reloads triggered / done ok (metric)", "–", "–",
         f"{len(ev)} / {fmt(b['reloads_ok'])}" + (f", {fmt(b['reloads_error'])} error" if b["reloads_error"] else ""),
         ""),
        ("**trigger → new policy in service**", "–", "–", ins, f"target ≤ {TARGETS['in_service_s']:g} s"),
        ("RSS, MiB: median (steady), peak (reloading)", "–", fmt(a["rss_median_mib"]), fmt(b["rss_peak_mib"]),
         f"**{rss_ratio:.2f}×** (target ≤ {TARGETS['rss_ratio']}×)" if rss_ratio else "–"),
        ("RSS peak, MiB (both phases)", "–", fmt(a["rss_peak_mib"]), fmt(b["rss_peak_mib"]), ""),
        ("DNS threads' wait for a CPU (run queue), ms per s", "–", fmt(a.get("dns_wait_ms_per_s"), 2),
         fmt(b.get("dns_wait_ms_per_s"), 2), ""),
        ("server CPU, % of a core", "–", fmt(a["server_cpu_pct"]), fmt(b["server_cpu_pct"]), ""),
        ("others' CPU (outside the bench), % of a core", fl("others_pct"), fmt(a["others_pct"]),
         fmt(b["others_pct"]), ""),
    ]
    ins_ok = b["in_service_max_ms"] is not None and b["in_service_timeouts"] == 0 \
        and b["in_service_max_ms"] <= TARGETS["in_service_s"] * 1e3
    targets = [
        ("queries lost during reloads", fmt(b["lost"]), "0", b["lost"] == 0),
        ("SERVFAIL during reloads", fmt(b["servfail"]), "0", b["servfail"] == 0),
        ("p99 reloading ÷ steady", f"{p99_ratio:.2f}×", f"≤ {TARGETS['p99_ratio']}×",
         p99_ratio is not None and p99_ratio <= TARGETS["p99_ratio"]),
        ("p99 during reloads ÷ between them, same run (noise-matched)",
         f"{b['p99_during_us'] / b['p99_between_us']:.2f}×" if b.get("p99_during_us") and b.get("p99_between_us")
         else "–", f"≤ {TARGETS['p99_ratio']}×",
         bool(b.get("p99_during_us") and b.get("p99_between_us")
              and b["p99_during_us"] / b["p99_between_us"] <= TARGETS["p99_ratio"])),
        ("trigger → in service at 1M rules (max)",
         (fmt(b["in_service_max_ms"], 0, " ms") if b["in_service_max_ms"] is not None else "none")
         + (f", {b['in_service_timeouts']} timeouts" if b["in_service_timeouts"] else ""),
         f"≤ {TARGETS['in_service_s']:g} s", ins_ok),
        ("peak RSS reloading ÷ median steady", f"{rss_ratio:.2f}×" if rss_ratio else "–",
         f"≤ {TARGETS['rss_ratio']}×", rss_ratio is not None and rss_ratio <= TARGETS["rss_ratio"]),
    ]
    out = [f"## sinkhole reload benchmark, {started:%Y-%m-%d %H:%M} UTC\n",
           f"sinkhole {ctx.rev}; {machine()}. sinkhole on core {SERVER_CORE} (one worker); dnsperf, NSD "
           f"and this script on core {CLIENT_CORE}; sinkhole, NSD and dnsperf at nice {NICE}. "
           f"List: {ctx.versions.count:,} names (benches/e2e/prep.py's union1m.txt), loaded in "
           f"{ctx.load_s:.2f} s, RSS {ctx.load_rss_kib / 1024:.0f} MiB at ready. Queries: prep.py's "
           f"q_mixed.txt (80% popular names, Zipf, all cached by a warm-up pass; 20% listed names, a third "
           f"under a subdomain), {QPS:,} qps for {SECONDS} s each phase (dnsperf -c {CLIENTS} -q "
           f"{OUTSTANDING} -t 2 -v). Reloading: version k of the list written beside it and renamed over "
           f"it every {INTERVAL:g} s from {FIRST_RELOAD_S:g} s in ({len(ev)} versions, each "
           f"{ROTATE} padding names swapped and a canary added, ~1,000,0xx names), trigger `{TRIGGER}`; "
           f"in service = that version's canary answered NXDOMAIN (polled every {POLL_S * 1e3:.0f} ms).\n",
           "| | floor | steady | reloading | reloading ÷ steady, target |", "|---|---|---|---|---|"]
    out += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows]
    out += ["", "| target (the issue's) | measured | target | |", "|---|---|---|---|"]
    out += [f"| {t[0]} | {t[1]} | {t[2]} | {verdict(t[3])} |" for t in targets]
    per = ", ".join((f"v{e['version']} {e['in_service_ms']:.0f}" if e["in_service_ms"] is not None
                     else f"v{e['version']} timeout") for e in ev)
    out.append(f"\nTrigger → in service per version, ms: {per or '–'}.")
    if b["post_ms"]:
        out.append(f"POST /reload answered in (ms): {', '.join(f'{x:.0f}' for x in b['post_ms'] if x is not None)}"
                   + (f"; {b['post_not_200']} not 200" if b["post_not_200"] else "") + ".")
    if b["rules_after"] is not None and ev:
        want = ctx.versions.rules(ev[-1]["version"])
        delta = None if ctx.rules0 is None else b["rules_after"] - ctx.rules0
        out.append(f"Rules in service after the run: {b['rules_after']:,.0f} (the last version holds {want:,} "
                   f"names; {fmt(delta)} more than at start, {ev[-1]['version']} expected).")
    if b["reloads_ok"] is not None and TRIGGER != "watch" and b["reloads_ok"] + (b["reloads_error"] or 0) > len(ev):
        out.append(f"sinkhole reloaded {b['reloads_ok'] + (b['reloads_error'] or 0):.0f} times for {len(ev)} "
                   f"triggers: it also reloads by itself on the rename (a file watcher), so each version may "
                   f"have been loaded twice, and in service by whichever came first.")
    if not f:
        out.append("No floor run (RELOAD_FLOOR=0, or no gcc to build benches/e2e/floor.c).")
    busy = max(a["others_pct"], b["others_pct"])
    if busy > BUSY_PCT:
        out.append(f"**The machine was busy**: processes outside the benchmark used {a['others_pct']:.0f}% "
                   f"(steady) and {b['others_pct']:.0f}% (reloading) of a core; the latency and loss figures "
                   f"carry that noise (compare with a quiet run before reading much into them).")
    for label, r in (("steady", a), ("reloading", b)):
        if r["wrong_by"] or r["lost_by"]:
            out.append(f"{label}: wrong answers {r['wrong_by'] or '{}'}, lost {r['lost_by'] or '{}'}.")
    return "\n".join(out) + "\n", {"p99_ratio": p99_ratio, "rss_ratio": rss_ratio,
                                   "targets": {t[0]: {"measured": t[1], "target": t[2], "met": t[3]}
                                               for t in targets}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--sinkhole", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rev", default="?")
    ap.add_argument("--floor", help="benches/e2e/floor.c built: the same load against it first")
    a = ap.parse_args()
    if TRIGGER not in ("post", "sighup", "watch"):
        ap.error(f"RELOAD_TRIGGER={TRIGGER}: post, sighup or watch")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # this script's threads (file writes, canary polls, RSS samples) share the client core
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    ctx = Ctx()
    ctx.work, ctx.sinkhole, ctx.rev = a.work, a.sinkhole, a.rev
    with open(f"{a.work}/probes.json") as f:
        ctx.probes = json.load(f)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        ctx.versions = Versions(a.work)
        ctx.versions.write(0, ctx.versions.path)
        harness.start_nsd(ctx, CLIENT_CORE)
        ctx.floor = a.floor
        floor = floor_phase(ctx) if a.floor else None
        start_sinkhole(ctx)
        sanity(ctx)
        warm(ctx)
        steady = phase(ctx, "steady", False)
        reloading = phase(ctx, "reloading", True)
    finally:
        stop_all()
        if getattr(ctx, "versions", None):
            ctx.versions.cleanup()
    text, summary = report(ctx, floor, steady, reloading, started)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    with open(f"{a.out}/result.md", "w") as f:
        f.write(text)
    with open(f"{a.out}/result.json", "w") as f:
        json.dump({"started": started.isoformat(), "sinkhole": ctx.rev, "machine": machine(),
                   "settings": {"qps": QPS, "seconds": SECONDS, "interval_s": INTERVAL, "trigger": TRIGGER,
                                "in_service_timeout_s": INSERVICE_TIMEOUT, "rotate": ROTATE,
                                "clients": CLIENTS, "outstanding": OUTSTANDING, "nice": NICE,
                                "server_core": SERVER_CORE, "client_core": CLIENT_CORE},
                   "list": {"names": ctx.versions.count, "load_s": ctx.load_s,
                            "rss_at_ready_mib": ctx.load_rss_kib / 1024},
                   "floor": floor, "steady": steady, "reloading": reloading, "summary": summary}, f, indent=1)
    log(f"wrote {a.out}/result.md and result.json; raw dnsperf output and server log in {a.work}")
    return 0


if __name__ == "__main__":
    harness.run(main)
