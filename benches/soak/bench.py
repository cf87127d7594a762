#!/usr/bin/env python3
"""The soak proper; run.sh installs what is missing and picks the binary,
then runs this.

usage: bench.py --work DIR --sinkhole BIN --data DIR [--rev REV] [--minutes N]

Starts NSD (the e2e bench's wildcard private root) on the client core and
sinkhole on the server core with one real blocklist, checks a few answers,
then for the whole soak runs, all at once and all on the client core:

  dnsperf    the legitimate load at a fixed rate (SOAK_QPS), looping over a
             file of popular names (Zipf), blocked names and names never
             asked under the private root (forwarded);
  garbage    agents.py: malformed packets at SOAK_GARBAGE_PCT of that rate
             from other loopback addresses, and a few TCP connections a
             second with bad length prefixes;
  slowloris  agents.py: idle and trickling TCP connections to the DNS and
             admin ports, reopened whenever the server closes them;
  probe      agents.py: SOAK_PROBE_QPS legitimate queries a second, each
             timed (the latency figures) and its answer checked.

Every SOAK_SAMPLE_S seconds it samples the server: alive, same pid and
start time, VmRSS, VmHWM, threads, open fds, server-side TCP connections,
/healthz, and the counters of /metrics. At the end it stops the server with
SIGTERM, reads its log, and writes results.md and results.json into the
work dir (the markdown also to stdout). Exit status 1 when legitimate loss
is 0.1% or more, or the server died or restarted.
"""
import argparse
import datetime
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import harness  # noqa: E402  (benches/lib: processes, /proc, DNS, dnsperf output)
from harness import (LIVE, UPSTREAM_ADDR, Failed, check_answers, check_config, dnsperf_per_second,  # noqa: E402
                     dnsperf_rcodes, dnsperf_summary, free_port, log, machine, on_signal,
                     others_ticks, spawn, stop, stop_all, tail, wait_ready)

AGENTS = os.path.join(HERE, "agents.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    return int(os.environ.get(name, default))


SERVER_CORE = os.environ.get("SOAK_SERVER_CORE", "0")
CLIENT_CORE = os.environ.get("SOAK_CLIENT_CORE", "1")
NICE = os.environ.get("SOAK_NICE", "-20" if os.geteuid() == 0 else "0")
QPS = env_int("SOAK_QPS", 20000)
GARBAGE_PCT = float(os.environ.get("SOAK_GARBAGE_PCT", "5"))
GARBAGE_TCP_RATE = float(os.environ.get("SOAK_GARBAGE_TCP_RATE", "5"))  # connections a second
SLOW_DNS = env_int("SOAK_SLOWLORIS_DNS", 200)
SLOW_ADMIN = env_int("SOAK_SLOWLORIS_ADMIN", 100)
SLOW_READ = env_int("SOAK_SLOW_READ", 4)
TRICKLE_S = float(os.environ.get("SOAK_TRICKLE_S", "3"))
PROBE_QPS = env_int("SOAK_PROBE_QPS", 200)
SAMPLE_S = float(os.environ.get("SOAK_SAMPLE_S", "5"))
CACHE = env_int("SOAK_CACHE", 100000)
STATS_WINDOW = os.environ.get("SOAK_STATS_WINDOW", "1m")
CLIENTS = os.environ.get("SOAK_CLIENTS", "8")
# Queries in flight: a quarter second's worth, so that dnsperf stays open
# loop through a stall (see benches/reload/README.md, "Load").
OUTSTANDING = os.environ.get("SOAK_OUTSTANDING", str(max(1000, QPS // 4)))
LIST_FILE = os.environ.get("SOAK_LIST", "stevenblack.domains.txt")
FILE_MAX = env_int("SOAK_FILE_LINES", 2_000_000)  # dnsperf's file: at most this many lines, looped
MIX = (70, 20, 10)  # % popular (Zipf), blocked, forwarded (never asked before)
RSS_SLOPE_MAX = float(os.environ.get("SOAK_RSS_SLOPE_KIB_MIN", "128"))  # KiB/min after warm-up: "flat"
LOSS_MAX_PCT = 0.1
LOAD_TIMEOUT = 90.0
FWD_ZONE = "fwd"
SUB_PREFIXES = ["www", "cdn", "api", "static", "img", "m", "ads", "t"]
PROTECTED = ("nhs.uk", "nhs.net")  # sinkhole's guard.protected default: never blocked, so never asked as blocked

harness.configure(nice=NICE, pidfile=os.environ.get("SOAK_PIDFILE"), wait_group=True)


# ---------------------------------------------------------------- /proc

def proc_status(pid):
    """VmRSS, VmHWM (KiB) and Threads of /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def proc_stat(pid):
    """(start time in ticks since boot, utime+stime ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]), int(fields[11]) + int(fields[12])


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_server_sockets(port):
    """{state: count} of the TCP sockets whose local end is 127.0.0.1:port
    (the server's side of each connection; the listener left out), and
    what the kernel holds for them: `send_q_kib` (answers written, not yet
    taken by the client), `recv_q_kib` (queries arrived, not yet read by
    the server), `send_stuck` (sockets with over 64 KiB unsent)."""
    local = f"0100007F:{port:04X}"
    names = {"01": "established", "08": "close_wait", "06": "time_wait", "04": "fin_wait1",
             "05": "fin_wait2", "03": "syn_recv", "09": "last_ack", "0B": "closing"}
    out = {"send_q_kib": 0, "recv_q_kib": 0, "send_stuck": 0}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            v = line.split()
            if v[1] == local and v[3] != "0A":
                k = names.get(v[3], v[3])
                out[k] = out.get(k, 0) + 1
                tx, rx = (int(x, 16) for x in v[4].split(":"))
                out["send_q_kib"] += tx / 1024
                out["recv_q_kib"] += rx / 1024
                out["send_stuck"] += tx > 65536
    out["send_q_kib"] = round(out["send_q_kib"])
    out["recv_q_kib"] = round(out["recv_q_kib"])
    return out


# ---------------------------------------------------------------- HTTP client

def http_get(port, path, timeout=5.0):
    """(status, body, milliseconds) or (None, error text, milliseconds)."""
    t = time.monotonic()
    try:
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        h.request("GET", path)
        r = h.getresponse()
        body = r.read().decode(errors="replace")
        h.close()
        return r.status, body, (time.monotonic() - t) * 1e3
    except (OSError, http.client.HTTPException) as e:
        return None, str(e), (time.monotonic() - t) * 1e3


def parse_metrics(text, buckets=False):
    """{'name{labels}': value} of every sinkhole_ sample (histogram buckets
    only with `buckets`)."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("sinkhole_") or (not buckets and "_bucket{" in line):
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            continue
    return out


def msum(m, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for k, v in m.items():
        base, _, lab = k.partition("{")
        if base != name:
            continue
        if all(f'{lk}="{lv}"' in lab for lk, lv in labels.items()):
            total, found = total + v, True
    return total if found else None


def label_values(m, name, label):
    """{label value: sample} for one metric."""
    out = {}
    for k, v in m.items():
        base, _, lab = k.partition("{")
        if base == name:
            mm = re.search(rf'{label}="([^"]*)"', lab)
            if mm:
                out[mm.group(1)] = out.get(mm.group(1), 0.0) + v
    return out


# ---------------------------------------------------------------- data

LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def valid(name):
    return bool(name) and len(name) <= 253 and "." in name and all(LABEL.match(x) for x in name.split("."))


def list_format(path):
    base = os.path.basename(path)
    for f in ("domains", "hosts", "adblock", "wildcard"):
        if f".{f}." in base:
            return f
    return "auto"


def list_names(path):
    """The names a list blocks (for the queries), in any of the four
    plain formats; comments, exceptions and odd lines left out."""
    names = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line or line[0] in "!@[":
                continue
            if line.startswith("||"):
                body = line[2:].split("$", 1)[0]
                if not body.endswith("^"):
                    continue
                cand = [body[:-1]]
            else:
                parts = line.split()
                if len(parts) >= 2:
                    if parts[0] not in ("0.0.0.0", "127.0.0.1", "::", "::1"):
                        continue
                    cand = parts[1:]
                else:
                    cand = [parts[0][2:] if parts[0].startswith("*.") else parts[0]]
            for n in cand:
                n = n.lower().rstrip(".")
                if n != "localhost" and valid(n) and not any(n == p or n.endswith("." + p) for p in PROTECTED):
                    names.append(n)
    return sorted(set(names))


def prepare(ctx, data):
    """popular.txt (top-domains.csv names the list does not block, rank
    order), blocked.txt (the list's names, a third under a subdomain) and
    dnsperf's query file: MIX of popular by Zipf weight, blocked, and
    `<n>.<label>.fwd` names never repeated within the file."""
    path = os.path.join(data, "blocklists", LIST_FILE)
    if not os.path.exists(path):
        raise Failed(f"no list {path} (SOAK_LIST)")
    ctx.list_path, ctx.list_format = path, list_format(path)
    listed = list_names(path)
    lset = set(listed)

    def blocked_by(name):
        labels = name.split(".")
        return any(".".join(labels[i:]) in lset for i in range(len(labels)))

    popular, seen = [], set()
    with open(os.path.join(data, "top-domains.csv"), encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            n = parts[1].strip().lower().rstrip(".")
            if valid(n) and n not in seen and not blocked_by(n) and \
                    not any(n == p or n.endswith("." + p) for p in PROTECTED) and not n.endswith("." + FWD_ZONE):
                seen.add(n)
                popular.append(n)
    rng = random.Random(1)
    blocked = list(listed)
    rng.shuffle(blocked)
    for i in range(0, len(blocked), 3):
        blocked[i] = f"{SUB_PREFIXES[(i // 3) % len(SUB_PREFIXES)]}.{blocked[i]}"
    with open(f"{ctx.work}/popular.txt", "w") as f:
        f.write("\n".join(popular) + "\n")
    with open(f"{ctx.work}/blocked.txt", "w") as f:
        f.write("\n".join(blocked) + "\n")
    n = min(FILE_MAX, QPS * ctx.seconds)
    ctx.fwd_label = os.urandom(5).hex()  # dnsperf's forwarded names: <i>.<label>.fwd
    ctx.probe_label = os.urandom(5).hex()  # the prober's: p<i>.<label>.fwd
    kinds = rng.choices(range(3), weights=MIX, k=n)
    pops = iter(rng.choices(popular, weights=[1.0 / (r + 1) for r in range(len(popular))], k=n))
    blk = iter(rng.choices(blocked, k=n))
    fwd = 0
    with open(f"{ctx.work}/q_soak.txt", "w") as f:
        buf = []
        for k in kinds:
            if k == 0:
                buf.append(f"{next(pops)} A\n")
            elif k == 1:
                buf.append(f"{next(blk)} A\n")
            else:
                buf.append(f"{fwd:x}.{ctx.fwd_label}.{FWD_ZONE} A\n")
                fwd += 1
            if len(buf) >= 100000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))
    ctx.counts = {"listed": len(listed), "popular": len(popular), "file_lines": n, "file_forwarded": fwd,
                  "file_pass_s": n / QPS}
    ctx.probes = {"blocked": blocked[1], "blocked_sub": blocked[0], "popular": popular[0],
                  "popular2": popular[len(popular) // 2]}
    log(f"data: {len(listed)} names in {LIST_FILE} ({ctx.list_format}), {len(popular)} popular names it does "
        f"not block; query file {n} lines ({n / QPS:.0f} s a pass at {QPS} qps, {fwd} never-asked names)")


# ---------------------------------------------------------------- servers

class Ctx:
    pass


def start_sinkhole(ctx):
    d = os.path.join(ctx.work, "srv", "sinkhole")
    os.makedirs(d, exist_ok=True)
    ctx.port, ctx.admin = free_port(), free_port()
    ctx.client_qps = 4 * (QPS + PROBE_QPS)
    with open(os.path.join(HERE, "conf", "sinkhole.yaml")) as f:
        text = f.read()
    for k, v in dict(PORT=ctx.port, ADMIN_PORT=ctx.admin, NSD_PORT=ctx.nsd_port, LIST=ctx.list_path,
                     FORMAT=ctx.list_format, CACHE=CACHE, CLIENT_QPS=ctx.client_qps,
                     STATS_WINDOW=STATS_WINDOW).items():
        text = text.replace(f"@@{k}@@", str(v))
    conf = f"{d}/sinkhole.yaml"
    with open(conf, "w") as f:
        f.write(text)
    ctx.conf_text = text
    # `check` on the same config with a one-name list: are the keys right
    # for this binary? (Not on the real list: `check` refuses rules that
    # `serve` only skips and counts, such as names the guard protects.)
    check_config(ctx.sinkhole, d, lambda probe_list: text.replace(ctx.list_path, probe_list).replace(
        f"format: {ctx.list_format}", "format: domains"), "soak")
    ctx.server_log = f"{d}/server.log"
    t0 = time.monotonic()
    p = spawn([ctx.sinkhole, "serve", "-c", conf], ctx.server_log, SERVER_CORE)
    ctx.server = p
    wait_ready(p, t0, ctx.server_log, lambda: http_get(ctx.admin, "/readyz", timeout=0.25)[0] == 200, LOAD_TIMEOUT)
    ctx.load_s = time.monotonic() - t0
    ctx.pid = p.pid
    ctx.starttime, _ = proc_stat(p.pid)
    ctx.ready_rss_kib = proc_status(p.pid)["VmRSS"]
    log(f"sinkhole: pid {p.pid}, ready in {ctx.load_s:.2f}s, RSS {ctx.ready_rss_kib / 1024:.1f} MiB "
        f"(port {ctx.port}, admin {ctx.admin}, core {SERVER_CORE})")


def sanity(ctx):
    pr = ctx.probes
    checks = [(pr["blocked"], "NXDOMAIN"), (pr["blocked_sub"], "NXDOMAIN"), (pr["popular"], UPSTREAM_ADDR),
              (pr["popular2"], UPSTREAM_ADDR), (f"probe.{ctx.fwd_label}.{FWD_ZONE}", UPSTREAM_ADDR)]
    check_answers(ctx.port, checks)
    log("sanity ok: listed names NXDOMAIN, popular and never-asked names 192.0.2.1")


# ---------------------------------------------------------------- sampling

class Sampler(threading.Thread):
    """Every SAMPLE_S seconds from the soak's start: the server's state
    (see sample()). Stops sampling /proc once the process is gone, but goes
    on recording that it is gone."""

    def __init__(self, ctx, t0):
        super().__init__(daemon=True)
        self.ctx, self.t0, self.samples, self.halt = ctx, t0, [], threading.Event()
        self.ours = {ctx.pid, ctx.nsd.pid, os.getpgrp()}
        self.prev_others, self.prev_t = None, None  # others' CPU: from the first sample on

    def sample(self):
        c = self.ctx
        now = time.monotonic()
        s = {"t_s": round(now - self.t0, 2)}
        alive = c.server.poll() is None
        s["alive"] = alive
        if alive:
            try:
                st = proc_status(c.pid)
                start, cpu = proc_stat(c.pid)
                s.update(pid=c.pid, same_start=(start == c.starttime), rss_kib=st["VmRSS"], hwm_kib=st["VmHWM"],
                         threads=st["Threads"], fds=fd_count(c.pid), cpu_ticks=cpu)
            except (OSError, KeyError, ValueError) as e:
                s["alive"] = False
                s["proc_error"] = str(e)
        else:
            s["exit_code"] = c.server.returncode
        s["tcp_dns"] = tcp_server_sockets(c.port)
        s["tcp_admin"] = tcp_server_sockets(c.admin)
        status, _, ms = http_get(c.admin, "/healthz")
        s["healthz"], s["healthz_ms"] = status, round(ms, 2)
        status, body, ms = http_get(c.admin, "/metrics")
        s["metrics_ms"] = round(ms, 2)
        s["metrics"] = parse_metrics(body) if status == 200 else {}
        if status != 200:
            s["metrics_error"] = f"{status}: {body[:200]}"
        o = others_ticks(self.ours | set(LIVE))
        if self.prev_others is not None and now > self.prev_t:  # % of one core since the last sample
            s["others_pct"] = round(100 * sum(v - self.prev_others.get(k, 0) for k, v in o.items())
                                    / CLK_TCK / (now - self.prev_t), 1)
        self.prev_others, self.prev_t = o, now
        self.samples.append(s)
        return s

    def run(self):
        nxt = self.t0
        while not self.halt.is_set():
            try:
                s = self.sample()
                if len(self.samples) % 12 == 1:
                    log(f"t={s['t_s']:.0f}s: " + (f"RSS {s['rss_kib'] / 1024:.1f} MiB, fds {s['fds']}, "
                                                   f"threads {s['threads']}, TCP dns {s['tcp_dns']}, "
                                                   f"admin {s['tcp_admin']}" if s.get("rss_kib") else "server GONE"))
            except Exception as e:  # a sampling error must not end the soak
                log(f"sample failed: {e!r}")
            nxt += SAMPLE_S
            self.halt.wait(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self.halt.set()
        self.join(SAMPLE_S + 15)


# ---------------------------------------------------------------- the soak

def parse_dnsperf(path):
    with open(path, errors="replace") as f:
        out = f.read()
    res = dnsperf_summary(out, keep=400)
    m = re.search(r"Queries interrupted:\s+(\d+)", out)
    res["interrupted"] = int(m.group(1)) if m else 0
    res["rcodes"] = dnsperf_rcodes(out)
    m = re.search(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", out)
    if m:
        res["avg_latency_us"], res["min_latency_us"], res["max_latency_us"] = (float(x) * 1e6 for x in m.groups())
    m = re.search(r"Latency StdDev \(s\):\s+([\d.]+)", out)
    res["stddev_latency_us"] = float(m.group(1)) * 1e6 if m else None
    res["qps_per_s"], res["min_qps_1s"] = dnsperf_per_second(out)
    res["timeouts_logged"] = len(re.findall(r"^\[Timeout\]", out, re.M))
    return res


def agent(ctx, name, args):
    out = f"{ctx.work}/{name}.json"
    if os.path.exists(out):
        os.remove(out)
    p = spawn(["python3", AGENTS, name] + args + ["--out", out], f"{ctx.work}/{name}.log", CLIENT_CORE)
    return p, out


def soak(ctx):
    s = ctx.seconds
    garbage_rate = max(1, int(round(QPS * GARBAGE_PCT / 100)))
    ctx.garbage_rate = garbage_rate
    log(f"soak: {s}s at {QPS} qps legitimate (dnsperf), {garbage_rate} garbage datagrams/s + "
        f"{GARBAGE_TCP_RATE:g} bad TCP connections/s, slowloris {SLOW_DNS} DNS + {SLOW_READ} slow-read + "
        f"{SLOW_ADMIN} admin connections, probe {PROBE_QPS} qps; a sample every {SAMPLE_S:g}s")
    t0 = time.monotonic()
    sampler = Sampler(ctx, t0)
    sampler.start()
    procs = {}
    procs["garbage"] = agent(ctx, "garbage", ["--port", str(ctx.port), "--rate", str(garbage_rate),
                                              "--tcp-rate", str(GARBAGE_TCP_RATE), "--seconds", str(s)])
    procs["slowloris"] = agent(ctx, "slowloris", [
        "--port", str(ctx.port), "--admin-port", str(ctx.admin), "--dns", str(SLOW_DNS), "--admin",
        str(SLOW_ADMIN), "--slow-read", str(SLOW_READ), "--trickle", str(TRICKLE_S),
        "--blocked-name", ctx.probes["blocked"], "--seconds", str(s)])
    procs["probe"] = agent(ctx, "probe", ["--port", str(ctx.port), "--qps", str(PROBE_QPS), "--seconds", str(s),
                                          "--names", ctx.work, "--label", ctx.probe_label,
                                          "--mix", ",".join(map(str, MIX)),
                                          "--window", str(60 if s >= 300 else 10)])
    perf_out = f"{ctx.work}/dnsperf.txt"
    perf = spawn(["dnsperf", "-s", "127.0.0.1", "-p", str(ctx.port), "-d", f"{ctx.work}/q_soak.txt",
                  "-c", CLIENTS, "-q", OUTSTANDING, "-t", "2", "-l", str(s), "-Q", str(QPS), "-S", "1"],
                 perf_out, CLIENT_CORE)
    try:
        perf.wait(s + 60)
    except subprocess.TimeoutExpired:
        log(f"dnsperf still running {s + 60}s after its start: stopped")
        stop(perf)
    LIVE.pop(perf.pid, None)
    t_perf = time.monotonic() - t0
    agents = {}
    for name, (p, out) in procs.items():
        try:
            p.wait(max(1.0, t0 + s + 30 - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name}: still running past its time: SIGTERM (it writes its summary on the way out)")
            stop(p, grace=10.0)
        LIVE.pop(p.pid, None)
        try:
            with open(out) as f:
                agents[name] = json.load(f)
        except (OSError, ValueError) as e:
            log(f"{name}: no summary ({e}); its log: {tail(ctx.work + '/' + name + '.log')}")
            agents[name] = None
    # one sample more after the load, once the slow connections had their time
    time.sleep(min(SAMPLE_S, 2.0))
    sampler.stop()
    final = sampler.sample()
    _, body, _ = http_get(ctx.admin, "/metrics")
    ctx.final_buckets = parse_metrics(body, buckets=True)
    perf_res = parse_dnsperf(perf_out)
    return {"t_dnsperf_s": t_perf, "dnsperf": perf_res, "agents": agents, "samples": sampler.samples,
            "final": final}


# ---------------------------------------------------------------- report

def slope_kib_per_min(points):
    """Least-squares slope of (seconds, KiB) points, in KiB per minute."""
    if len(points) < 3:
        return None
    xs = [p[0] / 60 for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


def fmt(v, digits=0, unit=""):
    return "–" if v is None else f"{v:,.{digits}f}{unit}"


def delta(a, b):
    return None if a is None or b is None else b - a


def log_summary(path):
    """Counts of the server's log lines by level and the most frequent
    WARN/ERROR messages (JSON lines; anything else counted as `other`)."""
    levels, msgs, other = {}, {}, 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    j = json.loads(line)
                except ValueError:
                    other += 1
                    continue
                lvl = str(j.get("level", "?")).upper()
                levels[lvl] = levels.get(lvl, 0) + 1
                if lvl in ("WARN", "ERROR"):
                    fields = j.get("fields", j)
                    key = f"{lvl} {fields.get('event', '')} {fields.get('message', '')}".strip()
                    msgs[key] = msgs.get(key, 0) + 1
    except OSError:
        pass
    top = sorted(msgs.items(), key=lambda kv: -kv[1])[:10]
    return {"levels": levels, "other_lines": other, "top_warn_error": top}


CACHE_SETTLE_S = 60  # after the cache first reaches its cap: its evictions' memory is being reused by then


def warmup_end(ctx, samples):
    """The start of the RSS trend window: SOAK_WARMUP seconds (default
    120 s, or 30% of a shorter run), or CACHE_SETTLE_S after the cache first
    held 99% of cache.size if that is later and still leaves the last
    third of the run; (seconds, cache full at (s) or None, note)."""
    w = float(os.environ.get("SOAK_WARMUP", min(120.0, 0.3 * ctx.seconds)))
    full_at = None
    for s in samples:
        e = msum(s.get("metrics", {}), "sinkhole_cache_entries")
        if e is not None and e >= 0.99 * CACHE:
            full_at = s["t_s"]
            break
    if full_at is None:
        return w, None, "the cache never reached its cap: the slope includes its filling (run longer)"
    settled = full_at + CACHE_SETTLE_S
    if settled > w:
        if settled <= ctx.seconds * 2 / 3:
            return settled, full_at, (f"the window starts {CACHE_SETTLE_S} s after the cache reached its cap, "
                                      f"later than the fixed warm-up ({w:.0f} s)")
        return w, full_at, (f"the cache reached its cap less than {CACHE_SETTLE_S} s before the last third of "
                            f"the run: the slope includes its settling (run longer)")
    return w, full_at, ""


def report(ctx, res, started, stop_info, logs):
    samples = [s for s in res["samples"] if s.get("rss_kib")]
    allsamp = res["samples"]
    d, agents = res["dnsperf"], res["agents"]
    g, sl, pr = agents.get("garbage"), agents.get("slowloris"), agents.get("probe")
    lost_pct = 100 * d["lost"] / d["sent"] if d["sent"] else 100.0
    # the server gone at a sample, or another process (another start time) behind its pid
    gone_at = next((s["t_s"] for s in allsamp if not s.get("alive") or s.get("same_start") is False), None)
    died = gone_at is not None
    restarts = 1 if died else 0
    wu, cache_full_at, wu_note = warmup_end(ctx, samples)
    after = [(s["t_s"], s["rss_kib"]) for s in samples if s["t_s"] >= wu and s["t_s"] <= ctx.seconds + 1]
    slope = slope_kib_per_min(after) if len(after) >= 6 else None
    # the window's halves: a slope that falls from the first to the second
    # is RSS settling; the same slope in both is steady growth
    half = len(after) // 2
    halves = (slope_kib_per_min(after[:half + 1]), slope_kib_per_min(after[half:])) if len(after) >= 8 else None
    rss_wu = after[0][1] if after else None
    rss_end = samples[-1]["rss_kib"] if samples else None
    rss_max = max(s["rss_kib"] for s in samples) if samples else None
    flat = None if slope is None else slope <= RSS_SLOPE_MAX
    fds = [s["fds"] for s in samples]
    thr = [s["threads"] for s in samples]
    m0 = allsamp[0].get("metrics", {}) if allsamp else {}
    m1 = res["final"].get("metrics", {}) or (allsamp[-1].get("metrics", {}) if allsamp else {})
    out_q = {k: delta(label_values(m0, "sinkhole_queries_total", "outcome").get(k, 0.0), v)
             for k, v in label_values(m1, "sinkhole_queries_total", "outcome").items()}
    lookups = {k: delta(label_values(m0, "sinkhole_cache_lookups_total", "result").get(k, 0.0), v)
               for k, v in label_values(m1, "sinkhole_cache_lookups_total", "result").items()}
    up_req = {k: delta(label_values(m0, "sinkhole_upstream_requests_total", "result").get(k, 0.0), v)
              for k, v in label_values(m1, "sinkhole_upstream_requests_total", "result").items()}

    def mdelta(name, **lab):
        return delta(msum(m0, name, **lab) or 0.0, msum(m1, name, **lab))

    up_min = min((msum(s.get("metrics", {}), "sinkhole_upstream_up") for s in allsamp
                  if msum(s.get("metrics", {}), "sinkhole_upstream_up") is not None), default=None)
    health_bad = sum(1 for s in allsamp if s.get("healthz") != 200)
    health_ms = sorted(s["healthz_ms"] for s in allsamp if s.get("healthz") == 200)
    metrics_ms = sorted(s["metrics_ms"] for s in allsamp if s.get("metrics"))
    cpu = [(s["t_s"], s["cpu_ticks"]) for s in samples if s["t_s"] <= ctx.seconds + 1]
    cpu_pct = 100 * (cpu[-1][1] - cpu[0][1]) / CLK_TCK / (cpu[-1][0] - cpu[0][0]) if len(cpu) > 1 else None
    others = [s["others_pct"] for s in allsamp[1:] if s.get("others_pct") is not None]
    tcp_est = [s["tcp_dns"].get("established", 0) for s in allsamp]
    tcp_cw = [s["tcp_dns"].get("close_wait", 0) for s in allsamp]
    adm_est = [s["tcp_admin"].get("established", 0) for s in allsamp]
    adm_cw = [s["tcp_admin"].get("close_wait", 0) for s in allsamp]

    verdicts = [
        ("legitimate queries lost (dnsperf)", f"{fmt(d['lost'])} of {fmt(d['sent'])} ({lost_pct:.4f}%)",
         f"< {LOSS_MAX_PCT}%", lost_pct < LOSS_MAX_PCT),
        ("process died or restarted", "no" if not died else f"yes, at t={gone_at:.0f} s", "no", not died),
        ("RSS trend after warm-up", fmt(slope, 1, " KiB/min") if slope is not None else "too few samples",
         f"≤ {RSS_SLOPE_MAX:g} KiB/min (flat)", flat),
    ]
    L = []
    L.append(f"## sinkhole soak, {started:%Y-%m-%d %H:%M} UTC\n")
    L.append(f"sinkhole {ctx.rev}; {machine()}. {ctx.seconds} s ({ctx.seconds / 60:g} min). sinkhole on core "
             f"{SERVER_CORE} (one worker); dnsperf, NSD, the agents and this script on core {CLIENT_CORE}; "
             f"sinkhole, NSD, dnsperf and the agents at nice {NICE}. List: `{LIST_FILE}` "
             f"({ctx.counts['listed']:,} names, format {ctx.list_format}), loaded in {ctx.load_s:.2f} s. "
             f"cache.size {CACHE:,}; limits.client_qps {ctx.client_qps:,} (dnsperf's 127.0.0.1 never limited); "
             f"TCP limits and access at their defaults; audit log off; stats.window {STATS_WINDOW}.\n")
    L.append(f"Load: dnsperf `-Q {QPS} -c {CLIENTS} -q {OUTSTANDING} -t 2 -S 1`, looping over "
             f"{ctx.counts['file_lines']:,} queries ({ctx.counts['file_pass_s']:.0f} s a pass): {MIX[0]}% popular "
             f"names (Zipf over {ctx.counts['popular']:,}), {MIX[1]}% listed names (a third under a subdomain), "
             f"{MIX[2]}% names never asked before under the private root (`<n>.<label>.fwd`, "
             f"{ctx.counts['file_forwarded']:,} in the file). Garbage: {ctx.garbage_rate:,} malformed datagrams/s "
             f"({GARBAGE_PCT:g}% of the rate) from 127.1.x.y, {GARBAGE_TCP_RATE:g} TCP connections/s with bad "
             f"length prefixes from 127.2.x.y. Slowloris: {SLOW_DNS} DNS connections (silent, trickling one "
             f"byte every {TRICKLE_S:g} s from the length prefix, or from the body), {SLOW_READ} that send "
             f"queries and never read, {SLOW_ADMIN} admin connections (silent, trickling headers, idle "
             f"keep-alive), each reopened when closed. Probe: {PROBE_QPS} legitimate queries/s in the same mix, "
             f"each timed.\n")
    L.append("| target | measured | target | |")
    L.append("|---|---|---|---|")
    for name, got, want, ok in verdicts:
        L.append(f"| {name} | {got} | {want} | {'**pass**' if ok else ('**fail**' if ok is False else '–')} |")
    L.append("")
    rc = ", ".join(f"{k} {v:,}" for k, v in d["rcodes"].items())
    rows = [
        ("legitimate queries sent / answered / lost (dnsperf)",
         f"{fmt(d['sent'])} / {fmt(d['completed'])} / {fmt(d['lost'])} ({lost_pct:.4f}%)"),
        ("dnsperf answers per second: mean / lowest 1 s", f"{fmt(d['qps'])} / {fmt(d['min_qps_1s'])}"),
        ("dnsperf response codes", rc or "–"),
        ("dnsperf latency: mean / max, µs", f"{fmt(d.get('avg_latency_us'))} / {fmt(d.get('max_latency_us'))}"),
    ]
    if pr:
        rows += [
            ("probe: sent / answered / lost / wrong answer",
             f"{fmt(pr['sent'])} / {fmt(pr['answered'])} / {fmt(pr['lost'])} / {fmt(pr['wrong'])}"),
            ("**probe latency p50 / p90 / p99 / p99.9 / max, µs**",
             f"{fmt(pr['p50_us'])} / {fmt(pr['p90_us'])} / **{fmt(pr['p99_us'])}** / {fmt(pr['p999_us'])} / "
             f"{fmt(pr['max_us'])}"),
            ("probe p50 / p99 by kind, µs", "; ".join(
                f"{k} {fmt(v['p50_us'])} / {fmt(v['p99_us'])}" for k, v in sorted(pr.get("by_kind", {}).items()))
             or "–"),
        ]
    rows += [
        ("RSS, MiB: at ready / at warm-up end / max / at end",
         f"{fmt(ctx.ready_rss_kib / 1024, 1)} / {fmt(rss_wu and rss_wu / 1024, 1)} / {fmt(rss_max and rss_max / 1024, 1)}"
         f" / {fmt(rss_end and rss_end / 1024, 1)}"),
        ("**RSS slope after warm-up (least squares)**",
         f"**{fmt(slope, 1)} KiB/min** over {len(after)} samples from t={wu:.0f} s"
         + (f" (end − warm-up end: {fmt((rss_end - rss_wu) / 1024, 1)} MiB)" if rss_wu and rss_end else "")
         + (f"; first half {fmt(halves[0], 1)}, second half {fmt(halves[1], 1)} KiB/min" if halves else "")),
        ("VmHWM at the end, MiB", fmt(samples[-1]["hwm_kib"] / 1024, 1) if samples else "–"),
        ("cache entries: at warm-up end / at end (cap)",
         f"{fmt(cache_at(samples, wu))} / {fmt(msum(m1, 'sinkhole_cache_entries'))} ({CACHE:,})"
         + (f"; full from t={cache_full_at:.0f} s" if cache_full_at is not None else "; never full")),
        ("open fds: min / max", f"{min(fds) if fds else '–'} / {max(fds) if fds else '–'}"),
        ("threads: min / max", f"{min(thr) if thr else '–'} / {max(thr) if thr else '–'}"),
        ("server-side TCP on the DNS port: established max / close-wait max",
         f"{max(tcp_est, default=0)} / {max(tcp_cw, default=0)}"),
        ("… kernel queues of those sockets, max: answers unsent (KiB; sockets over 64 KiB) / queries unread (KiB)",
         f"{fmt(max((s['tcp_dns']['send_q_kib'] for s in allsamp), default=None))} "
         f"({max((s['tcp_dns']['send_stuck'] for s in allsamp), default=0)}) / "
         f"{fmt(max((s['tcp_dns']['recv_q_kib'] for s in allsamp), default=None))}"),
        ("server-side TCP on the admin port: established max / close-wait max",
         f"{max(adm_est, default=0)} / {max(adm_cw, default=0)}"),
        ("process: pid / alive with the same start time at every sample",
         f"{ctx.pid} / " + ("yes" if not died else f"**NO: gone at t={gone_at:.0f} s**")),
        ("SIGTERM at the end: exit code / seconds to exit", f"{stop_info[0]} / {stop_info[1]:.2f}"),
        ("/healthz: not 200 / median / max ms", f"{health_bad} / {fmt(pct(health_ms, 0.5), 1)} / "
                                                f"{fmt(health_ms[-1] if health_ms else None, 1)}"),
        ("/metrics scrape: median / max ms", f"{fmt(pct(metrics_ms, 0.5), 1)} / "
                                              f"{fmt(metrics_ms[-1] if metrics_ms else None, 1)}"),
        ("server CPU, % of its core (mean)", fmt(cpu_pct)),
        ("others' CPU outside the soak, % of a core: mean / max", f"{fmt(statistics.fmean(others) if others else None)}"
                                                                   f" / {fmt(max(others) if others else None)}"),
    ]
    L.append("| | |")
    L.append("|---|---|")
    L += [f"| {a} | {b} |" for a, b in rows]
    if wu_note:
        L.append(f"\nWarm-up: {wu_note}.")

    L.append("\n### sinkhole's counters over the soak (`/metrics`, end − start)\n")
    L.append("| counter | increase |")
    L.append("|---|---|")
    for k in ("blocked", "allowed", "cached", "refused", "error"):
        L.append(f"| sinkhole_queries_total{{outcome=\"{k}\"}} | {fmt(out_q.get(k))} |")
    for k, v in sorted(lookups.items()):
        L.append(f"| sinkhole_cache_lookups_total{{result=\"{k}\"}} | {fmt(v)} |")
    for k, v in sorted(up_req.items()):
        L.append(f"| sinkhole_upstream_requests_total{{result=\"{k}\"}} | {fmt(v)} |")
    for name in ("sinkhole_udp_drops_total", "sinkhole_ratelimited_total", "sinkhole_log_dropped_total",
                 "sinkhole_upstream_mismatched_total", "sinkhole_reloads_total", "sinkhole_policy_builds_total"):
        L.append(f"| {name} | {fmt(mdelta(name))} |")
    L.append(f"| sinkhole_upstream_up, lowest sample | {fmt(up_min)} |")
    sq = server_p99(ctx)
    if sq:
        L.append(f"| sinkhole_query_duration_seconds: p50 / p99 bucket (all outcomes, whole run) | "
                 f"≤ {sq[0]} / ≤ {sq[1]} |")

    if g:
        L.append(f"\n### Garbage (sent over {g['seconds']:.0f} s: {g['udp_sent']:,} datagrams, "
                 f"{g['udp_sent'] / max(1, g['seconds']):.0f}/s; {g['tcp_sent']:,} TCP connections)\n")
        L.append("| kind | sent | answered | answers' RCODEs |")
        L.append("|---|---|---|---|")
        for k, st in g["udp"].items():
            L.append(f"| {k} | {st['sent']:,} | {st['replies']:,} | "
                     f"{', '.join(f'{a} {b:,}' for a, b in sorted(st['rcodes'].items())) or '–'} |")
        L.append("\n| TCP kind | connections | connect errors | bytes answered | closed by server | reset | "
                 "still open after 12 s or at the end (closed by us) |")
        L.append("|---|---|---|---|---|---|---|")
        for k, st in g["tcp"].items():
            L.append(f"| {k} | {st['sent']:,} | {st['connect_errors']:,} | {st['reply_bytes']:,} | "
                     f"{st['closed_by_server']:,} | {st['reset_by_server']:,} | {st['held_to_end']:,} |")
    if sl:
        L.append(f"\n### Slowloris (a byte every {sl['trickle_s']:g} s; reopened 0.2–0.5 s after a close)\n")
        L.append("| mode | connections | opened | connect errors | closed by server | reset by server | "
                 "lifetime min / median / max, s | open at end (oldest, s) |")
        L.append("|---|---|---|---|---|---|---|---|")
        for mode, st in sl["modes"].items():
            extra = f" ({st['queries_pushed']:,} queries pushed unread)" if "queries_pushed" in st else ""
            L.append(f"| {mode}{extra} | {st['connections']} | {st['opened']:,} | {st['connect_errors']:,} | "
                     f"{st['closed_by_server']:,} | {st['reset_by_server']:,} | {fmt(st['lifetime_min_s'], 1)} / "
                     f"{fmt(st['lifetime_median_s'], 1)} / {fmt(st['lifetime_max_s'], 1)} | {st['open_at_end']} "
                     f"({fmt(st['oldest_open_at_end_s'], 0)}) |")

    L.append("\n### Over time\n")
    L.append("| t, s | RSS MiB | fds | threads | cache entries | TCP est. dns / admin | DNS TCP unsent KiB "
             "(sockets) | answered/s (dnsperf) | probe p99 µs | probe lost | others' CPU % |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    step = 60 if ctx.seconds >= 300 else 10
    per_s = d["qps_per_s"]
    series = {int(w["t_s"]): w for w in (pr["series"] if pr else [])}
    pw = pr["window_s"] if pr else step
    for s in samples:
        if int(s["t_s"]) % step >= SAMPLE_S and s is not samples[-1] and s is not samples[0]:
            continue
        t = int(s["t_s"])
        a = per_s[max(0, t - step):t] if per_s else []
        w = series.get(int((t - 1) // pw * pw)) if t > 0 else None
        L.append(f"| {t} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {s['threads']} | "
                 f"{fmt(msum(s.get('metrics', {}), 'sinkhole_cache_entries'))} | "
                 f"{s['tcp_dns'].get('established', 0)} / {s['tcp_admin'].get('established', 0)} | "
                 f"{fmt(s['tcp_dns']['send_q_kib'])} ({s['tcp_dns']['send_stuck']}) | "
                 f"{fmt(statistics.fmean(a) if a else None)} | {fmt(w and w['p99_us'])} | "
                 f"{fmt(w and w['lost'])} | {fmt(s.get('others_pct'))} |")

    lv = logs["levels"]
    L.append(f"\n### The server's log\n\n{sum(lv.values()):,} JSON lines: "
             + (", ".join(f"{k} {v:,}" for k, v in sorted(lv.items())) or "none")
             + (f"; {logs['other_lines']:,} other lines" if logs["other_lines"] else "") + ".")
    for msg, n in logs["top_warn_error"]:
        L.append(f"- {n:,} × `{msg[:200]}`")
    L.append(f"\nRSS trend: the least-squares slope of VmRSS against time over the samples from the end of "
             f"warm-up to the end of the load; \"flat\" means at most {RSS_SLOPE_MAX:g} KiB/min "
             f"(SOAK_RSS_SLOPE_KIB_MIN), ~7.5 MiB an hour: below that, ten minutes of 5 s samples cannot tell a "
             f"leak from the allocator's steps. Latency percentiles are the probe's (each of its queries timed "
             f"in Python on the client core, so they include that client's own scheduling); dnsperf gives only "
             f"its mean and max.")
    text = "\n".join(L) + "\n"
    summary = {"lost_pct": lost_pct, "restarts": restarts, "died": died, "rss_slope_kib_min": slope,
               "rss_slope_halves_kib_min": halves,
               "rss_flat": flat, "warmup_end_s": wu, "cache_full_at_s": cache_full_at,
               "rss_kib": {"ready": ctx.ready_rss_kib, "warmup_end": rss_wu, "max": rss_max, "end": rss_end},
               "fds": [min(fds), max(fds)] if fds else None, "server_cpu_pct": cpu_pct,
               "queries_by_outcome": out_q, "cache_lookups": lookups, "upstream_requests": up_req,
               "verdicts": {v[0]: {"measured": v[1], "target": v[2], "pass": v[3]} for v in verdicts}}
    return text, summary, (lost_pct < LOSS_MAX_PCT and restarts == 0)


def pct(xs, q):
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else None


def cache_at(samples, t):
    for s in samples:
        if s["t_s"] >= t:
            return msum(s.get("metrics", {}), "sinkhole_cache_entries")
    return None


def server_p99(ctx):
    """sinkhole_query_duration_seconds over the whole run (every outcome
    summed): the bucket bounds that hold its p50 and p99."""
    b = {}
    for k, v in getattr(ctx, "final_buckets", {}).items():
        if k.startswith("sinkhole_query_duration_seconds_bucket{"):
            m = re.search(r'le="([^"]+)"', k)
            if m:
                b[m.group(1)] = b.get(m.group(1), 0.0) + v
    if not b or "+Inf" not in b or not b["+Inf"]:
        return None
    total = b["+Inf"]
    bounds = sorted(((float(k), v) for k, v in b.items() if k != "+Inf"))
    res = []
    for q in (0.5, 0.99):
        hit = next((le for le, v in bounds if v >= q * total), None)
        res.append("+Inf" if hit is None else (f"{hit * 1e6:g} µs" if hit < 1e-3 else f"{hit * 1e3:g} ms"))
    return res


def versions():
    out = {}
    for pkg in ("dnsperf", "nsd"):
        cp = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        out[pkg] = cp.stdout.strip() or "?"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--sinkhole", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rev", default="?")
    ap.add_argument("--minutes", type=float, default=10)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ctx = Ctx()
    ctx.work, ctx.sinkhole, ctx.rev = a.work, a.sinkhole, a.rev
    ctx.seconds = max(30, int(round(a.minutes * 60)))
    # bounded in time whatever happens: the soak, its start and its report
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(ctx.seconds + 600)
    # this script's sampling shares the client core with the load
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        prepare(ctx, a.data)
        harness.start_nsd(ctx, CLIENT_CORE)
        start_sinkhole(ctx)
        sanity(ctx)
        res = soak(ctx)
        alive_before_stop = ctx.server.poll() is None
        stop_info = stop(ctx.server, grace=30.0) if alive_before_stop else (ctx.server.returncode, 0.0)
        log(f"sinkhole stopped: exit code {stop_info[0]} after {stop_info[1]:.2f}s")
    finally:
        stop_all()
    logs = log_summary(ctx.server_log)
    text, summary, ok = report(ctx, res, started, stop_info, logs)
    print(text)
    with open(f"{a.work}/results.md", "w") as f:
        f.write(text)
    with open(f"{a.work}/results.json", "w") as f:
        json.dump({"started": started.isoformat(), "sinkhole": ctx.rev, "machine": machine(),
                   "versions": versions(),
                   "settings": {"seconds": ctx.seconds, "qps": QPS, "garbage_pct": GARBAGE_PCT,
                                "garbage_rate": ctx.garbage_rate, "garbage_tcp_rate": GARBAGE_TCP_RATE,
                                "slowloris_dns": SLOW_DNS, "slowloris_admin": SLOW_ADMIN, "slow_read": SLOW_READ,
                                "trickle_s": TRICKLE_S, "probe_qps": PROBE_QPS, "sample_s": SAMPLE_S,
                                "cache": CACHE, "stats_window": STATS_WINDOW, "client_qps": ctx.client_qps, "clients": CLIENTS,
                                "outstanding": OUTSTANDING, "list": LIST_FILE, "mix_pct": MIX, "nice": NICE,
                                "server_core": SERVER_CORE, "client_core": CLIENT_CORE,
                                "rss_slope_max_kib_min": RSS_SLOPE_MAX, "loss_max_pct": LOSS_MAX_PCT},
                   "data": ctx.counts, "load_s": ctx.load_s, "pid": ctx.pid, "config": ctx.conf_text,
                   "summary": summary, "dnsperf": res["dnsperf"], "agents": res["agents"],
                   "server_log": logs, "stop": {"exit_code": stop_info[0], "seconds": stop_info[1]},
                   "samples": res["samples"]}, f, indent=1)
    log(f"wrote {a.work}/results.md and results.json")
    return 0 if ok else 1


if __name__ == "__main__":
    harness.run(main)
