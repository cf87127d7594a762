#!/usr/bin/env python3
"""The e2e benchmark proper; run.sh installs, builds and prepares, then runs this.

usage: bench.py --work DIR --sinkhole BIN --floor BIN

Starts NSD (the shared upstream) on the client core, then, round by round
(round 1 in SERVERS order, round 2 reversed, ...), each server under test on
the server core: load time, RSS, a dig sanity check, then dnsperf's blocked,
cached and mixed workloads at full rate, the mixed one at a fixed 20k qps
for latency, and last the forwarded workload at full rate: names made up for
that run, so that every query misses the cache and goes to NSD. A last pass
loads the 1M-name list (load time, RSS, blocked QPS). Prints the markdown
table of medians and writes it, with the raw per-round figures, into the
work dir.

Tunables (environment): E2E_ROUNDS (2), E2E_SECONDS (4, each full-rate run),
E2E_LAT_SECONDS (4), E2E_LAT_QPS (20000), E2E_CLIENTS (8), E2E_OUTSTANDING
(100), E2E_SERVERS (comma list, default all), E2E_SKIP_1M (unset),
E2E_FWD_MAX_QPS (300000: the forwarded file holds this many names a second
of the run).

E2E_SINKHOLE_BASE=/path/to/an/older/sinkhole adds a server "sinkhole-base"
(same config) for before/after comparisons of our own changes within one
run; add it to E2E_SERVERS. It is not a peer: ratios ignore it.

"sinkhole-log" (opt-in: add it to E2E_SERVERS) is the sinkhole under test
with its audit log on (`log: {queries: blocked, client: full}`; the sinkhole
row has `log: {queries: none}`), its stdout a file in its server dir. It runs
the blocked and mixed workloads only (and the cached warm-up before mixed);
for each run it counts the audit lines written and reads
sinkhole_log_dropped_total from /metrics. Not a peer: ratios ignore it; the
table gets its own lines for it.
"""
import argparse
import datetime
import http.client
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import harness  # noqa: E402  (benches/lib: processes, /proc, DNS, dnsperf output)
from harness import (LIVE, UPSTREAM_ADDR, Failed, cpu_ticks, dns_query, dnsperf_summary, free_port,  # noqa: E402
                     log, machine, on_signal, others_ticks, pinned, spawn, steal_ticks, stop,
                     stop_all, tail)

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = os.environ.get("E2E_SERVER_CORE", "0")
CLIENT_CORE = os.environ.get("E2E_CLIENT_CORE", "1")
# Servers, NSD and dnsperf run at this nice level, so that whatever else the
# machine runs (it is shared) yields the two cores to the benchmark.
NICE = os.environ.get("E2E_NICE", "-20" if os.geteuid() == 0 else "0")
ROUNDS = int(os.environ.get("E2E_ROUNDS", "2"))  # always run
MAX_ROUNDS = max(ROUNDS, int(os.environ.get("E2E_MAX_ROUNDS", "3")))  # run while the budget allows
SECONDS = int(os.environ.get("E2E_SECONDS", "4"))
LAT_SECONDS = int(os.environ.get("E2E_LAT_SECONDS", "4"))
LAT_QPS = int(os.environ.get("E2E_LAT_QPS", "20000"))
CLIENTS = os.environ.get("E2E_CLIENTS", "8")
OUTSTANDING = os.environ.get("E2E_OUTSTANDING", "100")
LOAD_TIMEOUT = float(os.environ.get("E2E_LOAD_TIMEOUT", "90"))
ALL_SERVERS = ["floor", "sinkhole", "unbound", "pdns-recursor", "dnsdist", "dnsmasq"]
PEERS = ["unbound", "pdns-recursor", "dnsdist", "dnsmasq"]
WORKLOADS = ["blocked", "cached", "mixed", "forwarded"]
# sinkhole-log measures what the audit log costs: only where there are blocked
# queries to log, and not in the 1M pass.
LOG_SERVER = "sinkhole-log"
LOG_WORKLOADS = ["blocked", "mixed"]
# The `log:` line of conf/sinkhole.yaml, and what each sinkhole row puts there
# (sinkhole-base: the same as sinkhole, or nothing if its binary predates it).
LOG_LINE = re.compile(r"^log: \{queries: none\}\n", re.M)
LOG_CONF = {"sinkhole": "{queries: none}", "sinkhole-base": "{queries: none}",
            LOG_SERVER: "{queries: blocked, client: full}"}
AUDIT_KEY = b'"event":"blocked"'  # one per audit line of a blocked query
AUDIT_THREAD = "audit-log"  # the writer thread's name (src/observe/audit.rs)
# The forwarded file must outlast the run: dnsperf reads it once (-n 1), so a
# server faster than this ends its run early (noted) instead of repeating names.
FWD_MAX_QPS = int(os.environ.get("E2E_FWD_MAX_QPS", "300000"))
# The floor asks NSD nothing, so its QPS is no ceiling for the forwarded
# workload, where NSD shares the client core with dnsperf; dnsperf and NSD
# using this much of it (in %) is the sign that they, not the server, set
# the QPS.
CLIENT_BUSY_PCT = 90

NSD_PGID = -1
# spawn appends to a log file; run.sh's pid file is set in main (E2E_PIDFILE)
harness.configure(nice=NICE, tag="", append=True)


# ---------------------------------------------------------------- /proc

def thread_ticks(pid, comm):
    """utime+stime of a process's threads named `comm` (None if it has none)."""
    total, found = 0, False
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] == comm:
            fields = rest.split()
            total, found = total + int(fields[11]) + int(fields[12]), True
    return total if found else None


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise Failed("no VmRSS")


# ---------------------------------------------------------------- DNS client

def dig(port, name):
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "dig", "@127.0.0.1", "-p", str(port), "+time=2",
         "+tries=1", "+noall", "+comments", "+answer", name, "A"],
        capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"status: (\w+)", out)
    status = m.group(1) if m else "no answer"
    addrs = re.findall(r"\sIN\s+A\s+(\S+)", out)
    return status, addrs


# ---------------------------------------------------------------- dnsperf

def dnsperf(port, qfile, seconds=None, runs=None, qps=None, verbose_to=None):
    argv = pinned(CLIENT_CORE) + ["dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", qfile, "-c", CLIENTS, "-q", OUTSTANDING, "-t", "2"]
    if seconds:
        argv += ["-l", str(seconds)]
    if runs:
        argv += ["-n", str(runs)]
    if qps:
        argv += ["-Q", str(qps)]
    if verbose_to:
        argv += ["-v"]
    limit = (seconds or 60) + 30
    if verbose_to:
        with open(verbose_to, "w") as f:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=limit).returncode
        with open(verbose_to, errors="replace") as f:
            out = f.read()
    else:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
        rc, out = cp.returncode, cp.stdout + cp.stderr
    res = dnsperf_summary(out, who=f"dnsperf (rc {rc})")
    m = re.search(r"NXDOMAIN (\d+)", out)  # "Response codes: NOERROR n (x%), NXDOMAIN n (y%)"
    res["nxdomain"] = int(m.group(1)) if m else 0
    if verbose_to:
        lat = sorted(float(x) for x in re.findall(r"^> \w+ \S+ \S+ ([\d.]+)$", out, re.M))
        res["latencies"] = lat
    return res


def children_cpu_s():
    """User+system seconds of the children this script has reaped: across a
    dnsperf run, dnsperf's own (the servers and NSD are reaped only at
    their stop)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def group_ticks(pgid):
    """utime+stime of every process in a process group: NSD answers from a
    child process (and forks xfrd too), not from the one we spawned."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


def measured(p, port, qfile, settle=None, **kw):
    """A dnsperf run with the server's CPU per answered query; how busy the
    two cores were with anything but the server (core 0) and dnsperf and NSD
    (core 1): the other engineers' load that makes a run unreliable; and how
    much of the client core dnsperf and NSD took: near all of it, they, not
    the server, set the QPS. `settle`, if given, is called after dnsperf and
    before the server's CPU is read: it waits for work the server still does
    for the run (sinkhole-log's writer draining its queue)."""
    ours = {p.pid, NSD_PGID}
    o0, st0, n0, d0 = others_ticks(ours, skip_self=True), steal_ticks(), group_ticks(NSD_PGID), children_cpu_s()
    t0, s0 = time.monotonic(), cpu_ticks(p.pid)
    res = dnsperf(port, qfile, **kw)
    if settle:
        settle()
    s1, t1 = cpu_ticks(p.pid), time.monotonic()
    d1, n1, st1, o1 = children_cpu_s(), group_ticks(NSD_PGID), steal_ticks(), others_ticks(ours, skip_self=True)
    if p.poll() is not None:
        raise Failed(f"exited during the run (code {p.returncode})")
    if res["completed"] <= 0:
        raise Failed(f"no query answered on {os.path.basename(qfile)}")
    res["cpu_us"] = (s1 - s0) / CLK_TCK * 1e6 / res["completed"]
    wall = (t1 - t0) * CLK_TCK
    res["others_pct"] = 100 * sum(v - o0.get(k, 0) for k, v in o1.items()) / wall  # % of one core
    res["steal_pct"] = 100 * sum(st1[c] - st0[c] for c in (SERVER_CORE, CLIENT_CORE)) / wall
    # Over dnsperf's own run time, which leaves out its start and its wait for
    # the queries it will count as lost, when the client core idles. Not the
    # core's busy time from /proc/stat: others' builds fill whatever we leave.
    res["nsd_pct"] = 100 * (n1 - n0) / CLK_TCK / res["run_s"]
    res["client_pct"] = 100 * (d1 - d0) / res["run_s"] + res["nsd_pct"]
    return res


# ---------------------------------------------------------------- configs

def render(template, dest, edit=None, **kv):
    with open(os.path.join(HERE, "conf", template)) as f:
        text = f.read()
    if edit:
        text = edit(text)
    for k, v in kv.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise Failed(f"{template}: unfilled {left}")
    with open(dest, "w") as f:
        f.write(text)
    return dest


def sinkhole_conf(dest, log, extra="", **kv):
    """conf/sinkhole.yaml with `log: <log>` in place of its `log:` line, or
    without that line if `log` is None; `extra` (top-level YAML) appended."""
    def edit(text):
        text, n = LOG_LINE.subn("" if log is None else f"log: {log}\n", text)
        if n != 1:
            raise Failed("conf/sinkhole.yaml: expected exactly one line `log: {queries: none}`")
        return text + (extra.rstrip("\n") + "\n" if extra else "")
    return render("sinkhole.yaml", dest, edit=edit, **kv)


KNOWS_LOG = {}  # binary -> whether its config accepts the `log` key


def knows_log(binary, work):
    """Whether a sinkhole binary accepts `log:` (those before the audit log
    reject unknown keys): `check` on the bench config with a one-name list."""
    if binary not in KNOWS_LOG:
        d = os.path.join(work, "srv", "log-probe")
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/list.txt", "w") as f:
            f.write("blocked.example\n")
        conf = sinkhole_conf(f"{d}/sinkhole.yaml", LOG_CONF["sinkhole"], PORT=free_port(),
                             ADMIN_PORT=free_port(), NSD_PORT=free_port(), LIST=f"{d}/list.txt")
        cp = subprocess.run([binary, "check", "-c", conf], capture_output=True, text=True, timeout=30)
        if cp.returncode == 0:
            KNOWS_LOG[binary] = True
        elif "unknown field `log`" in cp.stdout + cp.stderr:
            KNOWS_LOG[binary] = False
        else:
            raise Failed(f"{binary} check rejected the bench config: {(cp.stdout + cp.stderr)[-300:]}")
        log(f"{binary}: {'accepts' if KNOWS_LOG[binary] else 'predates'} the `log` key"
            + ("" if KNOWS_LOG[binary] else ": its config goes without it"))
    return KNOWS_LOG[binary]


def write_list_derived(name, list_path, dest):
    """The list in a peer's own syntax, once per (server, list)."""
    if os.path.exists(dest) and os.path.getmtime(dest) >= os.path.getmtime(list_path):
        return
    tmp = dest + ".tmp"
    with open(list_path) as src, open(tmp, "w") as out:
        if name == "unbound":
            for n in src:
                out.write(f'    local-zone: "{n.strip()}." always_nxdomain\n')
        elif name == "pdns-recursor":
            out.write("$ORIGIN rpz.bench.\n$TTL 60\n"
                      "@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 60\n"
                      "@ NS localhost.\n")
            for n in src:
                n = n.strip()
                out.write(f"{n} CNAME .\n*.{n} CNAME .\n")
        elif name == "dnsmasq":
            for n in src:
                out.write(f"address=/{n.strip()}/\n")
    os.replace(tmp, dest)


DERIVED = {"unbound": "unbound.zones.conf", "pdns-recursor": "rpz.zone", "dnsmasq": "dnsmasq.addresses.conf"}


def paths(work, name, variant):
    """(list file, server dir) for a server and a list variant."""
    d = os.path.join(work, "srv", f"{name}-{variant}")
    os.makedirs(d, exist_ok=True)
    return os.path.join(work, "union.txt" if variant == "577k" else "union1m.txt"), d


def prepare(work):
    """Every peer's list file for both lists, ahead of the measurements."""
    for variant in ("577k", "1m"):
        for name, fname in DERIVED.items():
            lst, d = paths(work, name, variant)
            write_list_derived(name, lst, os.path.join(d, fname))
    log(f"list files written for {', '.join(DERIVED)}")


class Server:
    """How to configure, start and probe one server for one list."""

    def __init__(self, name, ctx, variant):
        self.name, self.ctx, self.variant = name, ctx, variant
        self.list, self.dir = paths(ctx.work, name, variant)
        self.port = free_port()
        self.admin_port = free_port()
        n = 1
        while os.path.exists(os.path.join(self.dir, f"server-{n}.log")):
            n += 1
        self.log = os.path.join(self.dir, f"server-{n}.log")  # one per start
        # every forwarded name this process is asked sits under this label,
        # made up for it: none can be in its cache
        self.fwd_label = os.urandom(6).hex()
        self.audit = (0, 0)  # bytes of self.log read so far, audit lines in them
        self.argv = self._configure()

    def audit_lines(self):
        """Audit lines of blocked queries the server has written to its
        stdout (self.log) so far; reads on from where the last call stopped,
        complete lines only."""
        pos, n = self.audit
        with open(self.log, "rb") as f:
            f.seek(pos)
            while True:
                buf = f.read(1 << 24)
                end = buf.rfind(b"\n") + 1
                if end == 0:  # nothing new, or a line still being written: next time
                    break
                n += buf.count(AUDIT_KEY, 0, end)
                pos += end
                f.seek(pos)
        self.audit = (pos, n)
        return n

    def settle(self, quiet=0.05, limit=5.0):
        """Waits until the stdout file has not grown for `quiet` seconds: the
        audit writer has drained its queue (it writes every batch at once)."""
        deadline = time.monotonic() + limit
        size = os.path.getsize(self.log)
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = os.path.getsize(self.log)
            if now == size:
                return
            size = now

    def metric(self, name):
        """A sample without labels from the admin port's /metrics; None if
        the server has no such metric (an older binary)."""
        try:
            h = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=2)
            h.request("GET", "/metrics")
            body = h.getresponse().read().decode(errors="replace")
            h.close()
        except OSError:
            return None
        m = re.search(rf"^{name} (\S+)$", body, re.M)
        return float(m.group(1)) if m else None

    def _configure(self):
        c, d = self.ctx, self.dir
        kv = dict(PORT=self.port, NSD_PORT=c.nsd_port, DIR=d, LIST=self.list, ADMIN_PORT=self.admin_port)
        if self.name == "floor":
            return [c.floor, str(self.port)]
        if self.name == "sinkhole-base":
            base = os.environ.get("E2E_SINKHOLE_BASE")
            if not base:
                raise Failed("sinkhole-base needs E2E_SINKHOLE_BASE")
            lg = LOG_CONF["sinkhole-base"] if knows_log(base, c.work) else None
            return [base, "serve", "-c", sinkhole_conf(f"{d}/sinkhole.yaml", lg, **kv)]
        if self.name in ("sinkhole", LOG_SERVER):
            # E2E_SINKHOLE_EXTRA: top-level YAML for this checkout's rows
            # only (e.g. `limits: {client_qps: 10000000}`, a rate limit
            # that never triggers); sinkhole-base predates most keys.
            extra = os.environ.get("E2E_SINKHOLE_EXTRA", "")
            return [c.sinkhole, "serve", "-c",
                    sinkhole_conf(f"{d}/sinkhole.yaml", LOG_CONF[self.name], extra=extra, **kv)]
        if self.name == "unbound":
            write_list_derived("unbound", self.list, f"{d}/{DERIVED['unbound']}")
            return ["unbound", "-d", "-c", render("unbound.conf", f"{d}/unbound.conf", **kv)]
        if self.name == "pdns-recursor":
            write_list_derived("pdns-recursor", self.list, f"{d}/{DERIVED['pdns-recursor']}")
            render("recursor.conf", f"{d}/recursor.conf", **kv)
            render("rpz.lua", f"{d}/rpz.lua", **kv)
            return ["pdns_recursor", f"--config-dir={d}"]
        if self.name == "dnsdist":
            return ["dnsdist", "--supervised", "--disable-syslog", "-C",
                    render("dnsdist.lua", f"{d}/dnsdist.lua", **kv)]
        if self.name == "dnsmasq":
            write_list_derived("dnsmasq", self.list, f"{d}/{DERIVED['dnsmasq']}")
            return ["dnsmasq", "-k", "-C", render("dnsmasq.conf", f"{d}/dnsmasq.conf", **kv)]
        raise Failed(f"unknown server {self.name}")

    def ready(self):
        if self.name == "floor":
            return dns_query(self.port, "ready.invalid") is not None
        if self.name.startswith("sinkhole"):
            try:
                h = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=0.25)
                h.request("GET", "/readyz")
                ok = h.getresponse().status == 200
                h.close()
                return ok
            except OSError:
                return False
        # a peer has loaded the whole list when the list's last name is blocked
        r = dns_query(self.port, self.ctx.probes["ready1m" if self.variant == "1m" else "ready"])
        return r is not None and r[0] == 3

    def start(self):
        """Spawn on the server core; returns (Popen, load seconds)."""
        t0 = time.monotonic()
        p = spawn(self.argv, self.log, SERVER_CORE)
        deadline = t0 + LOAD_TIMEOUT
        while True:
            if p.poll() is not None:
                LIVE.pop(p.pid, None)
                raise Failed(f"exited with code {p.returncode} while loading: {tail(self.log)}")
            if self.ready():
                return p, time.monotonic() - t0
            if time.monotonic() > deadline:
                stop(p)
                raise Failed(f"not ready after {LOAD_TIMEOUT:.0f}s: {tail(self.log)}")
            time.sleep(0.02)

    def sanity(self):
        """dig: blocked names (and a subdomain) NXDOMAIN, popular names and a
        name of the forwarded zone 192.0.2.1."""
        pr = self.ctx.probes
        if self.name == "floor":
            status, _ = dig(self.port, pr["popular"])
            if status != "NOERROR":
                raise Failed(f"floor answered {status}")
            return
        checks = [(pr["blocked"], "NXDOMAIN"), (pr["blocked_sub"], "NXDOMAIN"),
                  (pr["popular"], UPSTREAM_ADDR), (pr["popular2"], UPSTREAM_ADDR),
                  (f"probe.{self.fwd_label}.{pr['forwarded_zone']}", UPSTREAM_ADDR)]
        if self.variant == "1m":
            checks.append((self.ctx.probes["synthetic"], "NXDOMAIN"))
        for name, want in checks:
            status, addrs = dig(self.port, name)
            got = status if want == "NXDOMAIN" else (addrs[0] if status == "NOERROR" and addrs else status)
            if got != want:
                raise Failed(f"sanity: {name} gave {status} {addrs}, expected {want}")


# ---------------------------------------------------------------- runs

def write_forwarded(path, label, zone, n):
    """The forwarded workload's file: n names `<i in hex>.<label>.<zone>`
    under the server's own label (its sanity probe, `probe.<label>`, is not
    one of them)."""
    with open(path, "w") as f:
        f.write("".join(f"{i:x}.{label}.{zone} A\n" for i in range(n)))
    return path


def audited(srv, p, qfile, **kw):
    """measured(), and for a sinkhole row the audit lines it wrote to its
    stdout during the run (`audit_lines`: sinkhole-log's cost; none from
    the others) and the events its audit queue dropped
    (`audit_dropped`, from sinkhole_log_dropped_total; None if the binary
    has no such metric). sinkhole-log's CPU is read once its writer has
    written the run's last line."""
    if not srv.name.startswith("sinkhole"):
        return measured(p, srv.port, qfile, **kw)
    srv.settle()
    l0, d0 = srv.audit_lines(), srv.metric("sinkhole_log_dropped_total")
    w0 = thread_ticks(p.pid, AUDIT_THREAD)
    res = measured(p, srv.port, qfile, settle=srv.settle if srv.name == LOG_SERVER else None, **kw)
    w1 = thread_ticks(p.pid, AUDIT_THREAD)
    srv.settle()
    l1, d1 = srv.audit_lines(), srv.metric("sinkhole_log_dropped_total")
    res["audit_lines"] = l1 - l0
    res["audit_dropped"] = None if d0 is None or d1 is None else d1 - d0
    # the writer thread's own CPU (part of cpu_us): formatting, writing, /stats counting
    res["writer_cpu_us"] = None if w0 is None or w1 is None else (w1 - w0) / CLK_TCK * 1e6
    return res


def run_round(ctx, name):
    """One server, one round, the ~577k list: every workload (sinkhole-log:
    blocked and mixed)."""
    srv = Server(name, ctx, "577k")
    log(f"{name}: starting on core {SERVER_CORE} (port {srv.port})")
    p, load_s = srv.start()
    try:
        r = {"load_s": load_s, "rss_mib": rss_mib(p.pid)}
        srv.sanity()
        log(f"{name}: ready in {load_s:.2f}s, RSS {r['rss_mib']:.0f} MiB, sanity ok")
        w = ctx.work
        r["blocked"] = audited(srv, p, f"{w}/q_blocked.txt", seconds=SECONDS)
        dnsperf(srv.port, f"{w}/q_cached.txt", runs=1)  # warm: every popular name once
        if name == LOG_SERVER:
            # mixed: its popular 80% was warmed by the cached pass in this process
            r["mixed"] = audited(srv, p, f"{w}/q_mixed.txt", seconds=SECONDS)
            for wl in LOG_WORKLOADS:
                x = r[wl]
                log(f"{name}: {wl}: {x['qps']:.0f} qps, {x['cpu_us']:.1f} us/q, lost {x['lost']:.0f}, "
                    f"{x['audit_lines']} audit lines ({x['audit_lines'] / x['run_s']:.0f}/s) for "
                    f"{x['nxdomain']} NXDOMAIN answers, dropped {x['audit_dropped'] or 0:.0f}, writer thread "
                    f"{(x['writer_cpu_us'] or 0) / max(1, x['audit_lines']):.2f} us/line "
                    f"(others {x['others_pct']:.0f}%, steal {x['steal_pct']:.0f}%)")
            return r
        r["cached"] = audited(srv, p, f"{w}/q_cached.txt", seconds=SECONDS)
        # mixed: its popular 80% was warmed by the cached pass in this process
        r["mixed"] = audited(srv, p, f"{w}/q_mixed.txt", seconds=SECONDS)
        lat = audited(srv, p, f"{w}/q_mixed.txt", seconds=LAT_SECONDS, qps=LAT_QPS,
                      verbose_to=f"{srv.dir}/latency.txt")
        lats = lat.pop("latencies")
        if not lats:
            raise Failed("latency run: no per-query latencies parsed")
        lat["p50_us"] = lats[len(lats) // 2] * 1e6
        lat["p99_us"] = lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1e6
        r["latency"] = lat
        # forwarded last: it only adds names to the cache (and may evict
        # others), which nothing after it in this process reads
        n = FWD_MAX_QPS * SECONDS
        qfile = write_forwarded(f"{w}/q_forwarded.txt", srv.fwd_label, ctx.probes["forwarded_zone"], n)
        r["forwarded"] = audited(srv, p, qfile, seconds=SECONDS, runs=1)
        if r["forwarded"]["sent"] >= n:
            r["forwarded"]["exhausted"] = n
            log(f"{name}: forwarded: all {n} names sent in {r['forwarded']['run_s']:.1f}s, "
                f"a shorter run than {SECONDS}s (E2E_FWD_MAX_QPS={FWD_MAX_QPS})")
        for wl in WORKLOADS:
            audit = f", {r[wl]['audit_lines']} audit lines" if "audit_lines" in r[wl] else ""
            log(f"{name}: {wl}: {r[wl]['qps']:.0f} qps, {r[wl]['cpu_us']:.1f} us/q, lost {r[wl]['lost']:.0f}{audit} "
                f"(others {r[wl]['others_pct']:.0f}%, steal {r[wl]['steal_pct']:.0f}%, "
                f"dnsperf+NSD {r[wl]['client_pct']:.0f}% of core {CLIENT_CORE}, NSD {r[wl]['nsd_pct']:.0f}%)")
        log(f"{name}: at {LAT_QPS} qps: p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, "
            f"lost {lat['lost']:.0f}")
        return r
    finally:
        stop(p)


def run_1m(ctx, name):
    """The 1M-name list: load time, RSS, sanity, blocked workload."""
    srv = Server(name, ctx, "1m")
    log(f"{name} (1M): starting")
    p, load_s = srv.start()
    try:
        r = {"load_s": load_s, "rss_mib": rss_mib(p.pid)}
        srv.sanity()
        r["blocked"] = measured(p, srv.port, f"{ctx.work}/q_blocked1m.txt", seconds=SECONDS)
        log(f"{name} (1M): ready in {load_s:.2f}s, RSS {r['rss_mib']:.0f} MiB, "
            f"blocked {r['blocked']['qps']:.0f} qps, {r['blocked']['cpu_us']:.1f} us/q")
        return r
    finally:
        stop(p)


def in_1m(servers):
    """The servers of the 1M pass."""
    return [s for s in servers if s not in ("floor", LOG_SERVER)]


def fit_seconds(left, servers):
    """Length of each run so that the rounds and the 1M pass fit in what is
    left of the budget: 3 rounds if runs of 2s or more fit, else 2 rounds of
    2-5s (more rounds beat longer runs on a noisy machine). Reckons ~10s a
    server and round for start, warm-up, the forwarded file and stop on top
    of its runs (one per workload, and the latency one; sinkhole-log: ~8s
    and two runs), and ~6s a server for the 1M pass on top of its one run.
    Only 2 rounds are certain: a 3rd runs if the measured ones say it fits."""
    global SECONDS, LAT_SECONDS
    runs = sum(len(LOG_WORKLOADS) if s == LOG_SERVER else len(WORKLOADS) + 1 for s in servers)
    over = sum(8 if s == LOG_SERVER else 10 for s in servers)
    n_1m = len(in_1m(servers))
    for rounds in (3, 2):
        per_s = rounds * runs + n_1m
        fixed = rounds * over + 6 * n_1m + 20
        s = int(min(5, (left - fixed) // per_s))
        if rounds == 2 or s >= 2:
            break
    SECONDS = max(2, s)
    if "E2E_LAT_SECONDS" not in os.environ:
        LAT_SECONDS = SECONDS
    log(f"{left:.0f}s left in the budget: runs of {SECONDS}s, planned for {rounds} rounds "
        f"(E2E_SECONDS overrides)")


def est_1m(results, servers):
    """Seconds the 1M pass should take: load about twice the ~577k load, one run."""
    total = 0.0
    for s in in_1m(servers):
        loads = [r["load_s"] for r in results[s] if "load_s" in r] or [10.0]
        total += 2 * max(loads) + SECONDS + 4
    return total


def start_nsd(ctx):
    d = os.path.join(ctx.work, "srv", "nsd")
    os.makedirs(d, exist_ok=True)
    ctx.nsd_port = free_port()
    render("root.zone", f"{d}/root.zone")
    conf = render("nsd.conf", f"{d}/nsd.conf", NSD_PORT=ctx.nsd_port, DIR=d)
    global NSD_PGID
    p = spawn(["nsd", "-d", "-c", conf], f"{d}/stdout.log", CLIENT_CORE)
    NSD_PGID = p.pid
    harness.wait_nsd(p, d, ctx.nsd_port, ctx.probes["popular"], CLIENT_CORE)
    return p


# ---------------------------------------------------------------- table

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_qps(v):
    return "–" if v is None else f"{v / 1000:.1f}k"


def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def summarise(results, servers):
    """Median per (server, column) over the rounds that succeeded; None for
    what a server does not run (sinkhole-log: cached, forwarded, latency)."""
    cols = {}
    for s in servers:
        ok = [r for r in results[s] if "error" not in r]
        row = {"rounds": len(ok), "errors": [r["error"] for r in results[s] if "error" in r]}
        row["load_s"] = med([r["load_s"] for r in ok])
        row["rss_mib"] = med([r["rss_mib"] for r in ok])
        for wl in WORKLOADS:
            runs = [r[wl] for r in ok if wl in r]
            row[f"qps_{wl}"] = med([x["qps"] for x in runs])
            row[f"cpu_{wl}"] = med([x["cpu_us"] for x in runs])
            row[f"lost_{wl}"] = med([x["lost"] for x in runs])
            if any("audit_lines" in x for x in runs):
                row[f"audit_lines_{wl}"] = med([x.get("audit_lines") for x in runs])
                row[f"audit_lines_per_s_{wl}"] = med([x["audit_lines"] / x["run_s"] for x in runs
                                                      if "audit_lines" in x and x["run_s"]])
                row[f"queries_per_line_{wl}"] = med([x["completed"] / x["audit_lines"] for x in runs
                                                     if x.get("audit_lines")])
                row[f"audit_dropped_{wl}"] = [x.get("audit_dropped") for x in runs]  # every round's
                row[f"nxdomain_{wl}"] = med([x.get("nxdomain") for x in runs])
                # the writer thread's CPU per audit line, and its share of the server's CPU
                row[f"writer_us_per_line_{wl}"] = med([x["writer_cpu_us"] / x["audit_lines"] for x in runs
                                                       if x.get("writer_cpu_us") is not None and x.get("audit_lines")])
                row[f"writer_share_{wl}"] = med([x["writer_cpu_us"] / (x["cpu_us"] * x["completed"]) for x in runs
                                                 if x.get("writer_cpu_us") is not None and x["cpu_us"]])
        lat = [r["latency"] for r in ok if "latency" in r]
        row["p50"] = med([x["p50_us"] for x in lat])
        row["p99"] = med([x["p99_us"] for x in lat])
        row["lost"] = med([x["lost"] for x in lat])
        # forwarded's losses have a column of their own: they may be upstream queries gone astray
        full = [wl for wl in WORKLOADS if wl != "forwarded"]
        row["lost_max"] = med([sum(r[wl]["lost"] for wl in full if wl in r) for r in ok])
        fwd = [r["forwarded"] for r in ok if "forwarded" in r]
        row["client_pct_forwarded"] = med([x["client_pct"] for x in fwd])
        row["nsd_pct_forwarded"] = med([x["nsd_pct"] for x in fwd])
        cols[s] = row
    return cols


def audit_summary(cols):
    """What the audit log costs, per workload sinkhole-log ran (None without
    it): its µs/q against the best peer's and against sinkhole's (log:
    none), the lines it wrote, the cost of each, the lines its queue
    dropped. Medians of the rounds; into results.json and the table."""
    lg, sk = cols.get(LOG_SERVER), cols.get("sinkhole")
    if not lg or not lg["rounds"]:
        return None
    sk = sk if sk and sk["rounds"] else {}
    out = {}
    for wl in LOG_WORKLOADS:
        key = f"cpu_{wl}"
        mine, base = lg[key], sk.get(key)
        peers = [(cols[p][key], p) for p in PEERS if p in cols and cols[p]["rounds"] and cols[p][key] is not None]
        best = min(peers) if peers else (None, None)
        qpl = lg.get(f"queries_per_line_{wl}")
        lines, nx = lg.get(f"audit_lines_{wl}"), lg.get(f"nxdomain_{wl}")
        dropped = lg.get(f"audit_dropped_{wl}", [])
        out[wl] = {
            "log_us_per_q": mine, "sinkhole_us_per_q": base, "best_peer": best[1], "best_peer_us_per_q": best[0],
            "log_over_best_peer": mine / best[0] if mine is not None and best[0] else None,
            "log_over_sinkhole": mine / base if mine is not None and base else None,
            "log_qps": lg[f"qps_{wl}"],
            "lines": lines, "lines_per_s": lg.get(f"audit_lines_per_s_{wl}"), "queries_per_line": qpl,
            "us_per_line": (mine - base) * qpl if None not in (mine, base, qpl) else None,
            "writer_us_per_line": lg.get(f"writer_us_per_line_{wl}"),
            "writer_share": lg.get(f"writer_share_{wl}"),
            "dropped_each_round": dropped,
            "accounted": (lines + (med(dropped) or 0)) / nx if lines is not None and nx else None,
            "sinkhole_lines": sk.get(f"audit_lines_{wl}"),
            "sinkhole_writer_share": sk.get(f"writer_share_{wl}"),
        }
    return out


def audit_table(summary):
    def pct(v):
        return "–" if v is None else f"{100 * v:.0f}%"
    rows = [
        ("sinkhole-log µs/q", lambda a: fmt(a["log_us_per_q"])),
        ("sinkhole µs/q (`log: {queries: none}`)", lambda a: fmt(a["sinkhole_us_per_q"])),
        ("**sinkhole-log ÷ best peer**, µs/q (target ≤ 1.0)",
         lambda a: "–" if a["log_over_best_peer"] is None else f"{a['log_over_best_peer']:.2f}× ({a['best_peer']})"),
        ("**sinkhole-log ÷ sinkhole**, µs/q (target ≤ 1.25)",
         lambda a: "–" if a["log_over_sinkhole"] is None else f"{a['log_over_sinkhole']:.2f}×"),
        ("sinkhole-log QPS", lambda a: fmt_qps(a["log_qps"])),
        ("audit lines written per second", lambda a: fmt_qps(a["lines_per_s"])),
        ("queries per audit line", lambda a: fmt(a["queries_per_line"], 2)),
        ("cost per audit line, µs", lambda a: fmt(a["us_per_line"], 2)),
        ("writer thread's CPU per audit line, µs", lambda a: fmt(a["writer_us_per_line"], 2)),
        ("writer thread's share of sinkhole-log's CPU", lambda a: pct(a["writer_share"])),
        ("lines dropped (sinkhole_log_dropped_total), each round",
         lambda a: "/".join("–" if d is None else f"{d:.0f}" for d in a["dropped_each_round"]) or "–"),
        ("lines written + dropped ÷ NXDOMAIN answers", lambda a: fmt(a["accounted"], 3)),
        ("audit lines written by sinkhole (`log: {queries: none}`)", lambda a: fmt(a["sinkhole_lines"], 0)),
        ("sinkhole's writer thread share of its CPU (/stats counting only)",
         lambda a: pct(a["sinkhole_writer_share"])),
    ]
    out = ["| sinkhole-log (`log: {queries: blocked, client: full}`) | " + " | ".join(LOG_WORKLOADS) + " |",
           "|---" * (len(LOG_WORKLOADS) + 1) + "|"]
    out += [f"| {label} | " + " | ".join(f(summary[wl]) for wl in LOG_WORKLOADS) + " |" for label, f in rows]
    return "\n".join(out)


COLUMNS = [  # key, header, formatter, higher is better
    ("load_s", "load s", lambda v: fmt(v, 2), False),
    ("rss_mib", "RSS MiB", lambda v: fmt(v, 0), False),
    ("qps_blocked", "QPS blocked", fmt_qps, True),
    ("qps_cached", "QPS cached", fmt_qps, True),
    ("qps_mixed", "QPS mixed", fmt_qps, True),
    ("qps_forwarded", "QPS forwarded", fmt_qps, True),
    ("cpu_blocked", "µs/q blocked", fmt, False),
    ("cpu_cached", "µs/q cached", fmt, False),
    ("cpu_mixed", "µs/q mixed", fmt, False),
    ("cpu_forwarded", "µs/q forwarded", fmt, False),
    ("p50", "p50 µs @20k", lambda v: fmt(v, 0), False),
    ("p99", "p99 µs @20k", lambda v: fmt(v, 0), False),
    ("lost", "lost @20k", lambda v: fmt(v, 0), False),
    ("lost_max", "lost full-rate", lambda v: fmt(v, 0), False),
    ("lost_forwarded", "lost forwarded", lambda v: fmt(v, 0), False),
]


def table(cols, servers, floor_ok):
    lines = ["| server | " + " | ".join(h for _, h, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    floor = cols.get("floor") if floor_ok else None
    for s in servers:
        row = cols[s]
        if row["rounds"] == 0:
            reason = row["errors"][0] if row["errors"] else "not run"
            lines.append(f"| {s} | FAILED: {reason[:160].replace('|', '/')} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = []
        for key, _, f, _ in COLUMNS:
            v = row[key]
            cell = f(v)
            if key in ("load_s", "rss_mib") and s == "floor":
                cell = "–"
            if key == "qps_forwarded" and s != "floor" and v is not None \
                    and row["client_pct_forwarded"] >= CLIENT_BUSY_PCT:
                cell += " ‡"
            elif key.startswith("qps_") and key != "qps_forwarded" and s != "floor" and floor \
                    and v is not None and floor[key] and v >= 0.95 * floor[key]:
                cell += " †"
            cells.append(cell)
        name = s if not row["errors"] else f"{s} ({row['rounds']} of {row['rounds'] + len(row['errors'])} rounds)"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    # sinkhole / best peer
    sk = cols.get("sinkhole")
    if sk and sk["rounds"]:
        cells = []
        for key, _, _, higher in COLUMNS:
            peers = [(cols[p][key], p) for p in PEERS if p in cols and cols[p]["rounds"] and cols[p][key] is not None]
            if sk[key] is None or not peers:
                cells.append("–")
                continue
            best, who = (max if higher else min)(peers)
            if best == 0:  # lost queries: a ratio to zero means nothing
                cells.append("= (0)" if sk[key] == 0 else f"{fmt(sk[key], 0)} vs 0 ({who})")
                continue
            cells.append(f"{sk[key] / best:.2f}× ({who})")
        lines.append("| **sinkhole ÷ best peer** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_round(results, servers):
    n = max(len(results[s]) for s in servers)
    lines = ["| server | " + " | ".join(f"round {i + 1}" for i in range(n)) + " |", "|---" * (n + 1) + "|"]
    for s in servers:
        cells = []
        for r in results[s]:
            if "error" in r:
                cells.append("failed")
                continue

            def each(f):
                return "/".join(f(r[w]) if w in r else "–" for w in WORKLOADS)
            cell = ("µs/q " + each(lambda x: f"{x['cpu_us']:.1f}") + ", QPS " + each(lambda x: fmt_qps(x["qps"]))
                    + ", others " + each(lambda x: f"{x['others_pct']:.0f}") + "%")
            if "forwarded" in r:
                cell += f", client {r['forwarded']['client_pct']:.0f}% (NSD {r['forwarded']['nsd_pct']:.0f}%)"
            if s == LOG_SERVER:
                cell += (", audit lines " + each(lambda x: str(x.get("audit_lines", "?")))
                         + ", dropped " + each(lambda x: "–" if x.get("audit_dropped") is None
                                               else f"{x['audit_dropped']:.0f}"))
            cells.append(cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nEach cell: " + "/".join(WORKLOADS) + ". *others*: CPU that processes "
                               "outside the benchmark used during the run, in % of one core (the machine is "
                               "shared; the benchmark runs at nice " + NICE + "). *client*: the CPU that "
                               "dnsperf and NSD used during the forwarded run, in % of their core "
                               + CLIENT_CORE + ", and NSD's part of it; near 100% they, not the server, set "
                               "that QPS." + (f" {LOG_SERVER}: also the audit lines it wrote and the lines "
                                              "its queue dropped, each run; – where it does not run."
                                              if LOG_SERVER in servers else ""))


def table_1m(res1m, servers):
    lines = ["| server | load s | RSS MiB | QPS blocked | µs/q blocked |", "|---|---|---|---|---|"]
    for s in servers:
        r = res1m.get(s)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {s} | FAILED: {r['error'][:160].replace('|', '/')} | | | |")
            continue
        lines.append(f"| {s} | {r['load_s']:.2f} | {r['rss_mib']:.0f} | {fmt_qps(r['blocked']['qps'])} | "
                     f"{r['blocked']['cpu_us']:.1f} |")
    sk = res1m.get("sinkhole")
    if sk and "error" not in sk:
        cells = []
        for key, higher in [("load_s", False), ("rss_mib", False), ("qps", True), ("cpu_us", False)]:
            get = (lambda r: r["blocked"][key]) if key in ("qps", "cpu_us") else (lambda r: r[key])
            peers = [(get(res1m[p]), p) for p in PEERS if p in res1m and "error" not in res1m[p]]
            if not peers:
                cells.append("–")
                continue
            best, who = (max if higher else min)(peers)
            cells.append(f"{get(sk) / best:.2f}× ({who})" if best else "–")
        lines.append("| **sinkhole ÷ best peer** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions(ctx):
    v = {}
    for pkg in ["dnsperf", "nsd", "unbound", "pdns-recursor", "dnsdist", "dnsmasq-base"]:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        v[pkg] = out.stdout.strip() or "?"
    v["sinkhole"] = ctx.rev
    return v


# ---------------------------------------------------------------- main

class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--sinkhole")
    ap.add_argument("--floor")
    ap.add_argument("--rev", default="?")
    ap.add_argument("--deadline", type=float, default=0,
                    help="epoch seconds; rounds past E2E_ROUNDS run only while they fit before it")
    ap.add_argument("--prepare", action="store_true", help="write the peers' list files and exit")
    a = ap.parse_args()
    if a.prepare:
        prepare(a.work)
        return 0
    if not (a.sinkhole and a.floor):
        ap.error("--sinkhole and --floor are required")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ctx = Ctx()
    ctx.work, ctx.sinkhole, ctx.floor, ctx.rev = a.work, a.sinkhole, a.floor, a.rev
    with open(f"{a.work}/probes.json") as f:
        ctx.probes = json.load(f)
    if "forwarded_zone" not in ctx.probes:
        ap.error(f"{a.work}/probes.json predates the forwarded workload: run prep.py into {a.work} again")
    harness.PIDFILE = os.environ.get("E2E_PIDFILE")
    servers = [s for s in os.environ.get("E2E_SERVERS", ",".join(ALL_SERVERS)).split(",") if s]
    if a.deadline and "E2E_SECONDS" not in os.environ:
        fit_seconds(a.deadline - time.time(), servers)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {s: [] for s in servers}
    res1m = {}
    try:
        start_nsd(ctx)
        rnd, round_s = 0, []
        while rnd < MAX_ROUNDS:
            if rnd >= ROUNDS:  # an extra round only if it and the 1M pass fit in the budget
                need = max(round_s) + (0 if os.environ.get("E2E_SKIP_1M") else est_1m(results, servers)) + 15
                left = a.deadline - time.time()
                if not a.deadline or need > left:
                    log(f"no round {rnd + 1}: it needs ~{need:.0f}s, {left:.0f}s left in the budget")
                    break
            order = servers if rnd % 2 == 0 else list(reversed(servers))
            log(f"round {rnd + 1}: {' '.join(order)}")
            t = time.monotonic()
            for s in order:
                try:
                    results[s].append(run_round(ctx, s))
                except (Failed, subprocess.TimeoutExpired, OSError) as e:
                    log(f"{s}: FAILED: {e}")
                    results[s].append({"error": str(e)})
            round_s.append(time.monotonic() - t)
            rnd += 1
        rounds_done = rnd
        if not os.environ.get("E2E_SKIP_1M"):
            log("1M-name pass: load time, RSS, blocked workload; one round")
            for s in in_1m(servers):
                try:
                    res1m[s] = run_1m(ctx, s)
                except (Failed, subprocess.TimeoutExpired, OSError) as e:
                    log(f"{s} (1M): FAILED: {e}")
                    res1m[s] = {"error": str(e)}
    finally:
        stop_all()

    cols = summarise(results, servers)
    floor_ok = "floor" in cols and cols["floor"]["rounds"] > 0
    counts = ctx.probes["counts"]
    v = versions(ctx)
    out = []
    out.append(f"## sinkhole e2e benchmark, {started:%Y-%m-%d %H:%M} UTC\n")
    out.append(f"Machine: {machine()}. Server under test on core {SERVER_CORE}, dnsperf and NSD on core "
               f"{CLIENT_CORE}; one worker each. {rounds_done} rounds (odd rounds in the order "
               f"{', '.join(servers)}; even rounds reversed), medians shown. Full-rate runs {SECONDS}s, "
               f"dnsperf -c {CLIENTS} -q {OUTSTANDING}; latency at a fixed {LAT_QPS} qps for {LAT_SECONDS}s "
               f"on the mixed workload. Forwarded: names no server was asked before "
               f"(`<n>.<label>.{ctx.probes['forwarded_zone']}`, a new label every run, "
               f"{FWD_MAX_QPS * SECONDS} names read once), each a cache miss answered by NSD. "
               f"Servers, NSD and dnsperf at nice {NICE}.\n")
    out.append(f"Blocklist: {counts['union']} names (union of the shared lists). Popular names not blocked: "
               f"{counts['popular']}. Upstream: NSD, wildcard private root (`* A {UPSTREAM_ADDR}`).\n")
    out.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "\n")
    out.append(table(cols, servers, floor_ok))
    out.append("\nµs/q: the server's user+system CPU (from /proc/PID/stat) over the run, divided by queries "
               "answered. † within 5% of the floor's QPS for that workload: client-bound, not a "
               "measure of the server. ‡ (forwarded) dnsperf and NSD, which answers every query there, "
               f"used {CLIENT_BUSY_PCT}% or more of their core: client-bound too. Ratios: sinkhole's "
               "figure over the best peer's (in brackets); for QPS above 1 is better, for every other "
               "column below 1 is better. The floor reflects each query (recvmmsg/sendmmsg): its QPS is "
               "the client's ceiling, its µs/q the kernel's cost; it forwards nothing, so for a forwarder "
               "the kernel's cost is about twice that (a second receive and send, with NSD)."
               + (f" {LOG_SERVER} (the audit log on) is not a peer, nor is sinkhole-base: ratios ignore "
                  "them; its own figures are below." if LOG_SERVER in servers else ""))
    audit = audit_summary(cols)
    if audit:
        out.append(f"\n#### The audit log's cost\n\n{LOG_SERVER} is sinkhole's row with its audit log on: "
                   "`log: {queries: blocked, client: full}`, one JSON line per blocked query on its stdout, "
                   "a file in the work dir; the sinkhole row has `log: {queries: none}`, like the peers, which "
                   "log nothing. Blocked and mixed workloads only; medians of the rounds. Its CPU is read once "
                   "the file has stopped growing (the writer has drained its queue). Audit lines: the "
                   "`\"event\":\"blocked\"` lines the run added to that file. Cost per line: (sinkhole-log "
                   "µs/q − sinkhole µs/q) × queries ÷ lines; both rows are measured at different moments, so on a "
                   "busy machine this can come out anywhere, even below 0. The writer thread's CPU (its "
                   "`audit-log` thread in /proc) is measured in the same run: steadier, but it leaves out what "
                   "the log costs the query path (the event handed to the queue, the writer's wake-ups). Dropped: the run's increase of "
                   "sinkhole_log_dropped_total (the queue was full), each round. Written + dropped should "
                   "match the NXDOMAIN answers dnsperf counted (every blocked query is one, nothing else is).\n")
        out.append(audit_table(audit))
    for s in servers:
        for e in cols[s]["errors"]:
            out.append(f"\n- {s} failed a round: {e}")
        for i, r in enumerate(results[s]):
            if "exhausted" in r.get("forwarded", {}):
                out.append(f"\n- {s}, round {i + 1}: forwarded sent all {r['forwarded']['exhausted']} names in "
                           f"{r['forwarded']['run_s']:.1f}s, faster than E2E_FWD_MAX_QPS={FWD_MAX_QPS} allows "
                           f"for: a shorter run than the others (no name was repeated)")
    out.append("\n### Per round (to judge the noise)\n")
    out.append(per_round(results, servers))
    if res1m:
        out.append(f"\n### 1,000,000-name list ({counts['union1m']} names: the union padded with synthetic "
                   f"names): load time, RSS and the blocked workload only, one round, to keep the whole run "
                   f"within its time budget\n")
        out.append(table_1m(res1m, in_1m(servers)))
    text = "\n".join(out) + "\n"
    print(text)
    with open(f"{a.work}/results.md", "w") as f:
        f.write(text)
    with open(f"{a.work}/results.json", "w") as f:
        json.dump({"rounds": results, "medians": cols, "audit": audit, "1m": res1m, "versions": v,
                   "started": started.isoformat()}, f, indent=1)
    log(f"wrote {a.work}/results.md and results.json")
    ok = [s for s in servers if cols[s]["rounds"] > 0]
    return 0 if "sinkhole" in ok or "sinkhole" not in servers else 1


if __name__ == "__main__":
    harness.run(main)  # a Failed here: NSD, the shared upstream, did not start; nothing to measure
