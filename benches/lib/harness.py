"""What the bench harnesses share, word for word: benches/e2e/bench.py,
benches/soak/bench.py, benches/reload/bench.py (and benches/soak/agents.py
for the DNS wire walk). Each inserts this directory into sys.path.

- processes: spawn (a process-group leader pinned to a core at our nice
  level, its pid in LIVE and in run.sh's pid file), stop, stop_all,
  on_signal, run (a bench's __main__), free_port, tail;
- /proc readers: cpu_ticks, others_ticks, steal_ticks;
- DNS: skip_name, a_rdata, dns_query over UDP, NSD as the shared upstream
  (start_nsd, wait_nsd: benches/e2e/conf's wildcard private root);
- sinkhole: check_config (`sinkhole check` on the bench config), wait_ready;
- dnsperf output: the summary, the RCODE counts, the per-second rates.

A bench sets its settings once, with configure(): NICE, PIDFILE, the log
line's tag, whether spawn appends to a log and whether stop waits for the
whole process group to go.
"""
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import random

E2E_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "conf")
UPSTREAM_ADDR = "192.0.2.1"  # NSD's wildcard answer (E2E_CONF/root.zone)

T0 = time.monotonic()
LIVE = {}  # pid -> Popen: everything started and not yet reaped
NICE = "0"
PIDFILE = None
LOG_TAG = "bench.py "
SPAWN_MODE = "wb"
WAIT_GROUP = False


def configure(nice, pidfile=None, tag="bench.py ", append=False, wait_group=False):
    """`nice`: the nice level of what spawn starts; `pidfile`: where spawn
    appends each pid for run.sh's trap (None: nowhere); `tag`: what log()
    puts before the time; `append`: spawn appends to its log file instead
    of starting a new one; `wait_group`: stop waits for the process group
    to be gone (group_gone), not only for its leader."""
    global NICE, PIDFILE, LOG_TAG, SPAWN_MODE, WAIT_GROUP
    NICE, PIDFILE, LOG_TAG, SPAWN_MODE, WAIT_GROUP = nice, pidfile, tag, "ab" if append else "wb", wait_group


def log(msg):
    print(f"[{LOG_TAG}{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


# ---------------------------------------------------------------- processes

def pinned(core):
    """The command prefix that pins to a core at our nice level (both exec)."""
    return ["nice", "-n", NICE, "taskset", "-c", core]


def spawn(argv, logpath, core):
    """A process-group leader on `core` at our nice level (nice and taskset
    exec, so the pid is the program's), output into `logpath`; its pid goes
    to PIDFILE for run.sh's trap."""
    f = open(logpath, SPAWN_MODE)
    p = subprocess.Popen(pinned(core) + argv, stdin=subprocess.DEVNULL, stdout=f,
                         stderr=subprocess.STDOUT, start_new_session=True)
    f.close()
    LIVE[p.pid] = p
    if PIDFILE:
        with open(PIDFILE, "a") as pf:
            pf.write(f"{p.pid}\n")
    return p


def stop(p, grace=10.0):
    """SIGTERM to the group, SIGKILL after `grace`; (exit code, seconds to exit)."""
    t = time.monotonic()
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    LIVE.pop(p.pid, None)
    if WAIT_GROUP:
        group_gone(p.pid)
    return p.returncode, time.monotonic() - t


def group_gone(pgid, limit=5.0):
    """Waits until no process is left in group `pgid` (NSD's answering
    child outlives its parent by a moment, then waits as a zombie for init
    to reap it), SIGKILL to what still runs after `limit`."""
    deadline = time.monotonic() + limit
    while True:
        left = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[2]) == pgid:
                        left.append(fields[0])
                except (OSError, ValueError, IndexError):
                    continue
        if not left:
            return
        if time.monotonic() > deadline:
            if any(st != "Z" for st in left):  # a zombie only waits for init to reap it
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        time.sleep(0.05)


def stop_all():
    for p in list(LIVE.values()):
        try:
            stop(p, grace=3.0)
        except Exception as e:  # keep going: every process must get its signal
            log(f"cleanup: {p.pid}: {e}")


def on_signal(sig, _frame):
    raise SystemExit(f"interrupted by signal {sig}")


def run(main):
    """A bench's __main__: main()'s return code; a Failed (NSD, the shared
    upstream, did not start; nothing to measure) is logged, exit 1; every
    process started is stopped on the way out."""
    try:
        sys.exit(main())
    except Failed as e:
        log(f"ERROR: {e}")
        sys.exit(1)
    finally:
        stop_all()


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


def free_port():
    while True:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- /proc

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def others_ticks(ours, skip_self=False):
    """{(pid, tid): utime+stime} of every user-space thread outside the
    process groups in `ours` (and, with `skip_self`, this process): whoever
    else shares the machine."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (skip_self and int(pid) == os.getpid()):
            continue
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) in ours or fields[1] == "2" or pid == "2":  # ours; kernel threads
                    continue
                out[(pid, tid)] = int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            continue
    return out


def steal_ticks():
    """{core: steal ticks} from /proc/stat: time the hypervisor gave elsewhere."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                out[v[0][3:]] = int(v[8])
    return out


# ---------------------------------------------------------------- DNS

def skip_name(msg, pos):
    """The offset just past the (possibly compressed) name at `pos`."""
    while True:
        n = msg[pos]
        if n >= 0xC0:
            return pos + 2
        if n == 0:
            return pos + 1
        pos += n + 1


def a_rdata(msg):
    """The rdata of every A record in a reply's answer section (raw bytes);
    IndexError or struct.error when the reply cannot be walked."""
    qd, an = struct.unpack(">HH", msg[4:8])
    pos = 12
    for _ in range(qd):
        pos = skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = skip_name(msg, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(msg[pos:pos + 4])
        pos += rdlen
    return out


def dns_query(port, name, timeout=0.25, sock=None):
    """(rcode, [IPv4 answers]) from 127.0.0.1:port, or None on no answer;
    from `sock` if given (left open), else from a socket of its own."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        while True:
            r = s.recv(4096)
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
                break
    except OSError:
        return None
    finally:
        if sock is None:
            s.close()
    flags = struct.unpack(">H", r[2:4])[0]
    return flags & 0xF, [socket.inet_ntoa(a) for a in a_rdata(r)]


def wait_nsd(p, d, port, name, core):
    """Until NSD (`p`, its files in `d`) answers `name` on `port` with the
    wildcard root's address: Failed if it exits or takes over 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise Failed(f"NSD exited with code {p.returncode}: {tail(d + '/stdout.log')} {tail(d + '/nsd.log')}")
        r = dns_query(port, name)
        if r and r[1] == [UPSTREAM_ADDR]:
            log(f"nsd: serving the wildcard root on 127.0.0.1:{port} (core {core})")
            return
        time.sleep(0.05)
    raise Failed("NSD did not answer within 30s")


def start_nsd(ctx, core):
    """NSD with benches/e2e/conf's root zone and config in ctx.work/srv/nsd,
    on `core`: sets ctx.nsd_port and ctx.nsd, returns when it answers
    ctx.probes["popular"]."""
    d = os.path.join(ctx.work, "srv", "nsd")
    os.makedirs(d, exist_ok=True)
    ctx.nsd_port = free_port()
    with open(os.path.join(E2E_CONF, "root.zone")) as f:
        zone = f.read()
    with open(f"{d}/root.zone", "w") as f:
        f.write(zone)
    with open(os.path.join(E2E_CONF, "nsd.conf")) as f:
        conf = f.read().replace("@@NSD_PORT@@", str(ctx.nsd_port)).replace("@@DIR@@", d)
    with open(f"{d}/nsd.conf", "w") as f:
        f.write(conf)
    p = spawn(["nsd", "-d", "-c", f"{d}/nsd.conf"], f"{d}/stdout.log", core)
    ctx.nsd = p
    wait_nsd(p, d, ctx.nsd_port, ctx.probes["popular"], core)


def check_answers(port, checks):
    """Each (name, "NXDOMAIN" or the one address wanted) in `checks`, asked
    of 127.0.0.1:port: Failed at the first other answer."""
    for name, want in checks:
        r = dns_query(port, name, timeout=2.0)
        got = None if r is None else ("NXDOMAIN" if r[0] == 3 else (r[1][0] if r[0] == 0 and r[1] else f"rcode {r[0]}"))
        if got != want:
            raise Failed(f"sanity: {name} gave {got}, expected {want}")


# ---------------------------------------------------------------- sinkhole

def check_config(sinkhole, d, probe_text, what):
    """`sinkhole check` on probe_text(a one-name list written into `d`),
    the bench's config with its list swapped for that one: are the keys
    right for this binary? Failed (the `what` config) if not."""
    with open(f"{d}/probe-list.txt", "w") as f:
        f.write("blocked.example\n")
    with open(f"{d}/probe.yaml", "w") as f:
        f.write(probe_text(f"{d}/probe-list.txt"))
    cp = subprocess.run([sinkhole, "check", "-c", f"{d}/probe.yaml"], capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        raise Failed(f"{sinkhole} check rejects the {what} config ({d}/probe.yaml): "
                     f"{(cp.stdout + cp.stderr)[-400:]}")


def wait_ready(p, t0, logpath, ready, timeout):
    """Until ready() (sinkhole `p`, spawned at `t0`, logging to `logpath`,
    answers /readyz with 200): Failed if it exits or is not ready `timeout`
    seconds after t0."""
    while True:
        if p.poll() is not None:
            raise Failed(f"sinkhole exited with code {p.returncode} while loading: {tail(logpath)}")
        if ready():
            break
        if time.monotonic() - t0 > timeout:
            raise Failed(f"sinkhole not ready after {timeout:.0f}s: {tail(logpath)}")
        time.sleep(0.02)


# ---------------------------------------------------------------- dnsperf output

SUMMARY = [("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
           ("lost", r"Queries lost:\s+(\d+)"), ("qps", r"Queries per second:\s+([\d.]+)"),
           ("run_s", r"Run time \(s\):\s+([\d.]+)")]


def dnsperf_summary(out, who="dnsperf", keep=300):
    """{sent, completed, lost, qps, run_s} of dnsperf's output `out`;
    Failed ("`who` printed no ...", with its last `keep` characters) when
    one is missing."""
    res = {}
    for key, pat in SUMMARY:
        m = re.search(pat, out)
        if not m:
            raise Failed(f"{who} printed no '{key}': {out[-keep:]!r}")
        res[key] = float(m.group(1))
    return res


def dnsperf_rcodes(out):
    """{RCODE name: answers} from dnsperf's "Response codes:" line."""
    m = re.search(r"Response codes:\s*(.*)", out)
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+) \(", m.group(1) if m else "")}


def dnsperf_per_second(out):
    """(answers in each second, the lowest of them) from dnsperf -S 1
    ("<epoch>: <answers per second>" each second; the first and last are
    partial, left out of the lowest)."""
    per_s = [float(x) for x in re.findall(r"^\d+\.\d+: ([\d.]+)$", out, re.M)]
    inner = per_s[1:-1] if len(per_s) > 2 else per_s
    return per_s, (min(inner) if inner else None)
