#!/usr/bin/env python3
"""The soak's adversaries and its latency prober, each run as its own process
by bench.py (pinned to the client core), each bounded by --seconds and
writing one JSON summary (--out) when it ends, by its time limit or by
SIGTERM.

usage:
  agents.py garbage   --port P --rate PPS --tcp-rate CPS --seconds S --out F [--seed N]
  agents.py slowloris --port P --admin-port A --dns N --admin M --slow-read K
                      --trickle S --seconds S --out F
  agents.py probe     --port P --qps Q --seconds S --names DIR --label L --out F

garbage    malformed DNS over UDP from loopback sources other than
           127.0.0.1 (127.1.x.y, one address per kind and slot), at --rate
           datagrams a second, of the kinds in UDP_KINDS; plus --tcp-rate
           TCP connections a second carrying bad length prefixes
           (TCP_KINDS). It never waits for an answer: replies are read
           when they come and counted per kind and RCODE.
slowloris  --dns connections to the DNS port and --admin to the admin port
           that send a partial message or request one byte every --trickle
           seconds (or nothing), and --slow-read DNS connections that send
           queries without ever reading the answers. A connection the
           server closes is counted, with its lifetime, and opened again.
probe      legitimate queries at a fixed --qps over UDP from 127.0.0.1, in
           the mix of dnsperf's file (popular names, blocked names, names
           never asked under the private root), each timed: the soak's
           latency figures, and a check that each answer is the right one.
"""
import argparse
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from harness import a_rdata, skip_name  # noqa: E402  (benches/lib: the DNS wire walk)

STOP = False


def on_term(_sig, _frame):
    global STOP
    STOP = True


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def pct(xs, q):
    """The q-quantile of a sorted list (nearest rank), None when empty."""
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else None


# ---------------------------------------------------------------- DNS wire

def encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(qid, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def query(qid, name, qtype=1, qclass=1, flags=0x0100, ar=0):
    return header(qid, flags, 1, 0, 0, ar) + encode_name(name) + struct.pack(">HH", qtype, qclass)


def opt_rr(udp_size=1232, ext_rcode=0, version=0, do=False, rdata=b"", rdlen=None):
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0)
    return b"\0" + struct.pack(">HHIH", 41, udp_size, ttl, len(rdata) if rdlen is None else rdlen) + rdata


UPSTREAM_A = b"\xc0\x00\x02\x01"  # 192.0.2.1: NSD's wildcard answer


def a_records(reply):
    """The rdata of every A record in a reply's answer section (raw bytes);
    [] when the reply cannot be walked."""
    try:
        return a_rdata(reply)
    except (IndexError, struct.error):
        return []


def rcode_of(reply):
    """The RCODE of a reply, with the upper bits from its OPT record if it
    has one (BADVERS is 16); None for a reply shorter than a header."""
    if len(reply) < 12:
        return None
    rcode = reply[3] & 0x0F
    try:
        qd, an, ns, ar = struct.unpack(">HHHH", reply[4:12])
        pos = 12
        for _ in range(qd):
            pos = skip_name(reply, pos) + 4
        for i in range(an + ns + ar):
            pos = skip_name(reply, pos)
            rtype, _cls, ttl, rdlen = struct.unpack(">HHIH", reply[pos:pos + 10])
            if rtype == 41 and i >= an + ns:
                return rcode | ((ttl >> 24) << 4)
            pos += 10 + rdlen
    except (IndexError, struct.error):
        pass
    return rcode


RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 9: "NOTAUTH",
          16: "BADVERS"}


def rcode_name(r):
    return "short" if r is None else RCODES.get(r, f"RCODE{r}")


# ---------------------------------------------------------------- garbage

def rand_label(rng, n=None):
    n = n or rng.randint(3, 12)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def g_short_header(rng):
    """0 to 11 bytes: not even a header."""
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 11)))


def g_no_question(rng):
    """A header announcing 1-5 questions, and nothing after it."""
    return header(rng.getrandbits(16), 0x0100, rng.randint(1, 5))


def g_bad_label_length(rng):
    """A label length past the end of the packet (or of a sane name)."""
    n = rng.randint(20, 63)
    body = rand_label(rng, rng.randint(1, n - 1)).encode()
    return header(rng.getrandbits(16)) + bytes([n]) + body


def g_reserved_label(rng):
    """Label type bits 01 or 10 (extended / reserved label types)."""
    kind = rng.choice([0x40, 0x80, 0x41, 0xBF])
    return header(rng.getrandbits(16)) + bytes([kind]) + os.urandom(rng.randint(0, 20)) + b"\0\0\1\0\1"


def g_compression_loop(rng):
    """Compression pointers in a question name: to itself, two pointing at
    each other, one pointing forward past the end, a long chain."""
    v = rng.randrange(4)
    h = header(rng.getrandbits(16))
    if v == 0:  # offset 12 is the name itself
        name = b"\xc0\x0c"
    elif v == 1:  # label at 12, then a pointer back to 12
        name = b"\x03abc\xc0\x0c"
    elif v == 2:  # pointer past the end of the packet
        name = b"\xc0" + bytes([rng.randint(40, 255)])
    else:  # a chain of pointers, each to the one before, the first to the last
        name = b"".join(b"\xc0" + bytes([12 + 2 * (i - 1) if i else 12 + 2 * 39]) for i in range(40))
    return h + name + b"\0\1\0\1"


def g_huge_counts(rng):
    """One real question, and counts that promise thousands of records."""
    q = query(rng.getrandbits(16), f"{rand_label(rng)}.example")
    counts = [rng.choice([1, 65535]), 65535, 65535, 65535]
    return q[:4] + struct.pack(">HHHH", *counts) + q[12:]


def g_qr_set(rng):
    """A response (QR set) sent to the server as if a query: must get no
    answer (answering answers lets two servers loop)."""
    flags = 0x8180 | rng.choice([0, 3, 5])
    return query(rng.getrandbits(16), f"{rand_label(rng)}.example", flags=flags)


def g_random_bytes(rng):
    return os.urandom(rng.randint(12, 1500))


def g_oversized_edns(rng):
    """OPT records that are wrong: a payload of 65535 with 1-4 KB of
    options, an option whose length runs past the record, two OPTs, an
    OPT with version 1 (BADVERS), an RDLENGTH past the packet."""
    v = rng.randrange(5)
    base = query(rng.getrandbits(16), f"{rand_label(rng)}.{rand_label(rng)}.fwd", ar=1)
    if v == 0:
        opts = b"".join(struct.pack(">HH", 65001 + i % 500, 60) + os.urandom(60) for i in range(rng.randint(16, 64)))
        return base + opt_rr(65535, rdata=opts)
    if v == 1:
        return base + opt_rr(4096, rdata=struct.pack(">HH", 10, 500) + os.urandom(8))
    if v == 2:
        return base[:10] + b"\0\2" + base[12:] + opt_rr() + opt_rr()
    if v == 3:
        return base + opt_rr(1232, version=1)
    return base + opt_rr(4096, rdata=b"\0\x0a\0\x08", rdlen=60000)


def g_bad_opcode(rng):
    """IQUERY, STATUS, NOTIFY, UPDATE and unassigned opcodes."""
    opcode = rng.choice([1, 2, 3, 4, 5, 6, 9, 15])
    return query(rng.getrandbits(16), f"{rand_label(rng)}.example", flags=(opcode << 11) | 0x0100)


def g_odd_query(rng):
    """Well formed but odd: CHAOS version.bind, class ANY or HESIOD, AXFR
    and IXFR over UDP, qtype 0, a question count of 2."""
    v = rng.randrange(6)
    qid = rng.getrandbits(16)
    if v == 0:
        return query(qid, rng.choice(["version.bind", "id.server", "hostname.bind"]), qtype=16, qclass=3)
    if v == 1:
        return query(qid, f"{rand_label(rng)}.example", qclass=rng.choice([4, 255, 254, 1234]))
    if v == 2:
        return query(qid, f"{rand_label(rng)}.example", qtype=rng.choice([251, 252]))
    if v == 3:
        return query(qid, f"{rand_label(rng)}.example", qtype=0)
    if v == 4:
        q1 = encode_name(f"{rand_label(rng)}.example") + b"\0\1\0\1"
        return header(qid, qd=2) + q1 + q1
    return query(qid, f"{rand_label(rng)}.example", qtype=rng.choice([255, 65535, 65280]))


def g_long_name(rng):
    """A name over 255 bytes (five 63-byte labels), or a 64-byte label."""
    if rng.randrange(2):
        name = b"".join(b"\x3f" + rand_label(rng, 63).encode() for _ in range(5)) + b"\0"
    else:
        name = b"\x40" + rand_label(rng, 64).encode() + b"\x03com\0"
    return header(rng.getrandbits(16)) + name + b"\0\1\0\1"


def g_trailing_junk(rng):
    """A real query followed by 1-3000 bytes of junk."""
    return query(rng.getrandbits(16), f"{rand_label(rng)}.example") + os.urandom(rng.randint(1, 3000))


UDP_KINDS = {
    "short_header": g_short_header,
    "no_question": g_no_question,
    "bad_label_length": g_bad_label_length,
    "reserved_label_type": g_reserved_label,
    "compression_loop": g_compression_loop,
    "huge_counts": g_huge_counts,
    "qr_set": g_qr_set,
    "random_bytes": g_random_bytes,
    "bad_edns": g_oversized_edns,
    "bad_opcode": g_bad_opcode,
    "odd_query": g_odd_query,
    "long_name": g_long_name,
    "trailing_junk": g_trailing_junk,
}


def t_zero_length(rng):
    return b"\0\0"


def t_short_message(rng):
    n = rng.randint(1, 11)
    return struct.pack(">H", n) + os.urandom(n)


def t_length_then_stall(rng):
    """Announces 65,535 bytes, sends 100: the server waits for the rest
    (until its idle timeout)."""
    return b"\xff\xff" + os.urandom(100)


def t_desync(rng):
    """A length of 20 followed by 200 bytes: what follows the first 20 is
    read as the next length and message."""
    return b"\0\x14" + os.urandom(200)


def t_qr_after_query(rng):
    """A good query, then a response (QR set) in the next frame."""
    a = query(rng.getrandbits(16), f"{rand_label(rng)}.fwd")
    b = query(rng.getrandbits(16), f"{rand_label(rng)}.example", flags=0x8180)
    return struct.pack(">H", len(a)) + a + struct.pack(">H", len(b)) + b


def t_random(rng):
    return os.urandom(rng.randint(2, 600))


TCP_KINDS = {
    "tcp_zero_length": t_zero_length,
    "tcp_short_message": t_short_message,
    "tcp_length_then_stall": t_length_then_stall,
    "tcp_desync": t_desync,
    "tcp_qr_after_query": t_qr_after_query,
    "tcp_random": t_random,
}
TCP_HOLD_S = 12.0  # how long a garbage TCP connection is watched before we close it


def run_garbage(a):
    rng = random.Random(a.seed)
    kinds = list(UDP_KINDS)
    slots = 16  # source addresses per kind: 127.1.<kind>.<slot+1>
    socks = {}
    sel = selectors.DefaultSelector()
    for ki, k in enumerate(kinds):
        for s in range(slots):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((f"127.1.{ki}.{s + 1}", 0))
            u.setblocking(False)
            socks[(k, s)] = u
            sel.register(u, selectors.EVENT_READ, ("udp", k))
    dest = ("127.0.0.1", a.port)
    stats = {k: {"sent": 0, "send_errors": 0, "replies": 0, "rcodes": {}} for k in kinds}
    tstats = {k: {"sent": 0, "connect_errors": 0, "reply_bytes": 0, "closed_by_server": 0, "reset_by_server": 0,
                  "held_to_end": 0} for k in TCP_KINDS}
    tcp_open = {}  # socket -> (kind, deadline)
    t0 = time.monotonic()
    end = t0 + a.seconds
    sent_udp, sent_tcp, tick = 0, 0, 0.01
    i_kind = 0
    while not STOP:
        now = time.monotonic()
        if now >= end:
            break
        # UDP: as many as the schedule owes (a fixed rate, whatever the delays)
        due = int((now - t0) * a.rate) - sent_udp
        for _ in range(max(0, min(due, a.rate))):  # never more than a second's worth at once
            k = kinds[i_kind % len(kinds)]
            i_kind += 1
            pkt = UDP_KINDS[k](rng)
            try:
                socks[(k, rng.randrange(slots))].sendto(pkt, dest)
                stats[k]["sent"] += 1
            except OSError:
                stats[k]["send_errors"] += 1
            sent_udp += 1
        # TCP: a few connections a second
        due_t = int((now - t0) * a.tcp_rate) - sent_tcp
        for _ in range(max(0, min(due_t, 10))):
            k = list(TCP_KINDS)[sent_tcp % len(TCP_KINDS)]
            sent_tcp += 1
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind((f"127.2.{sent_tcp // 250 % 250}.{sent_tcp % 250 + 1}", 0))
                t.settimeout(1.0)
                t.connect(dest)
                t.sendall(TCP_KINDS[k](rng))
                t.setblocking(False)
                tstats[k]["sent"] += 1
            except OSError:
                tstats[k]["connect_errors"] += 1
                t.close()
                continue
            tcp_open[t] = (k, now + TCP_HOLD_S)
            sel.register(t, selectors.EVENT_READ, ("tcp", k))
        # replies: read and count, never waited for
        for key, _ in sel.select(timeout=tick):
            proto, k = key.data
            if proto == "udp":
                while True:
                    try:
                        r = key.fileobj.recv(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # an ICMP error on a datagram socket
                        break
                    st = stats[k]
                    st["replies"] += 1
                    rc = rcode_name(rcode_of(r))
                    st["rcodes"][rc] = st["rcodes"].get(rc, 0) + 1
            else:
                t = key.fileobj
                try:
                    r = t.recv(65535)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    tstats[k]["reset_by_server"] += 1
                    r = None
                if r:
                    tstats[k]["reply_bytes"] += len(r)
                    continue
                if r == b"":
                    tstats[k]["closed_by_server"] += 1
                sel.unregister(t)
                tcp_open.pop(t, None)
                t.close()
        for t, (k, deadline) in list(tcp_open.items()):
            if now > deadline:
                tstats[k]["held_to_end"] += 1
                sel.unregister(t)
                del tcp_open[t]
                t.close()
    for t, (k, _) in tcp_open.items():
        tstats[k]["held_to_end"] += 1
        t.close()
    elapsed = time.monotonic() - t0
    write_json(a.out, {
        "seconds": elapsed, "rate_asked": a.rate, "tcp_rate_asked": a.tcp_rate,
        "udp_sent": sum(s["sent"] for s in stats.values()),
        "udp_replies": sum(s["replies"] for s in stats.values()),
        "tcp_sent": sum(s["sent"] for s in tstats.values()),
        "udp": stats, "tcp": tstats})
    return 0


# ---------------------------------------------------------------- slowloris

TCP_STATES = {1: "ESTABLISHED", 7: "CLOSE", 8: "CLOSE_WAIT"}


def tcp_state(sock):
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return 7


class Conn:
    """One slow connection. `mode` says what it sends:

      dns-silent        nothing
      dns-trickle       a query's bytes, length prefix first, one every T s
      dns-body-trickle  the length prefix and header at once, then the rest
                        one byte every T s
      dns-slow-read     queries back to back until the socket will take no
                        more, and never reads the answers
      admin-silent      nothing
      admin-trickle     a request line and one header at once, then one
                        byte of a never-ending header every T s
      admin-keepalive   one full GET /healthz, its answer read, then idle
    """

    def __init__(self, mode, port, rng, trickle):
        self.mode, self.port, self.rng, self.trickle = mode, port, rng, trickle
        self.sock = None
        self.payload = b""
        self.pos = 0
        self.opened = None
        self.next_send = None
        self.reconnect_at = 0.0
        self.pushed = 0

    def open(self, now, stats):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.mode == "dns-slow-read":  # small buffers: they fill sooner
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError as e:
            s.close()
            stats["connect_errors"] += 1
            stats["last_connect_error"] = str(e)
            self.reconnect_at = now + 1.0
            return False
        s.setblocking(False)
        self.sock, self.opened, self.pos, self.pushed = s, now, 0, 0
        stats["opened"] += 1
        m = self.mode
        q = query(self.rng.getrandbits(16), f"slow{self.rng.getrandbits(32):x}.fwd")
        if m in ("dns-trickle", "dns-body-trickle"):
            self.payload = struct.pack(">H", len(q)) + q
            if m == "dns-body-trickle":
                self.send_now(14)  # prefix and header
            self.next_send = now + self.trickle * self.rng.random()
        elif m == "admin-trickle":
            self.payload = b"GET /metrics HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 10000
            self.send_now(len(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n"))
            self.next_send = now + self.trickle * self.rng.random()
        elif m == "admin-keepalive":
            self.payload = b"GET /healthz HTTP/1.1\r\nHost: soak\r\nConnection: keep-alive\r\n\r\n"
            self.send_now(len(self.payload))
        elif m == "dns-slow-read":
            self.payload = b""
            self.pump(stats)
        return True

    def send_now(self, n):
        chunk = self.payload[self.pos:self.pos + n]
        if not chunk:
            return True
        try:
            sent = self.sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        self.pos += sent
        return True

    def pump(self, stats):
        """dns-slow-read: blocked names (answered by the server itself,
        nothing upstream), framed back to back until send() would block.
        A frame the socket took only part of is finished first next time,
        so the stream stays well framed."""
        n = 0
        while True:
            if not self.payload:
                if self.pushed + n >= SLOW_READ_CAP:
                    break
                q = query(self.rng.getrandbits(16), BLOCKED_SLOW)
                self.payload = struct.pack(">H", len(q)) + q
                n += 1
            try:
                sent = self.sock.send(self.payload)
            except OSError:  # would block (or closed: the state check sees it)
                break
            self.payload = self.payload[sent:]
            if self.payload:
                break
        self.pushed += n
        stats["queries_pushed"] = stats.get("queries_pushed", 0) + n


BLOCKED_SLOW = "blocked.invalid"  # replaced by --blocked-name
# Queries a slow reader pushes at most (on average per connection): ~4 MB,
# enough to fill the server's send buffer with unread answers (the kernel
# grows it up to net.ipv4.tcp_wmem's 4 MiB) without also filling its
# receive buffer (up to tcp_rmem's 32 MiB here) with kernel memory for nothing.
SLOW_READ_CAP = 100_000


def run_slowloris(a):
    global BLOCKED_SLOW
    if a.blocked_name:
        BLOCKED_SLOW = a.blocked_name
    rng = random.Random(a.seed)
    conns = []
    per = {}
    for i in range(a.dns):
        conns.append(Conn(["dns-silent", "dns-trickle", "dns-body-trickle"][i % 3], a.port, rng, a.trickle))
    for _ in range(a.slow_read):
        conns.append(Conn("dns-slow-read", a.port, rng, a.trickle))
    for i in range(a.admin):
        conns.append(Conn(["admin-silent", "admin-trickle", "admin-keepalive"][i % 3], a.admin_port, rng,
                          a.trickle))
    for c in conns:
        per.setdefault(c.mode, {"connections": 0, "opened": 0, "connect_errors": 0, "closed_by_server": 0,
                                "reset_by_server": 0, "unexpected_bytes": 0, "lifetimes": []})["connections"] += 1
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    end = t0 + a.seconds
    check_every, next_check = 1.0, t0 + 1.0

    def closed(c, now, reset):
        st = per[c.mode]
        st["reset_by_server" if reset else "closed_by_server"] += 1
        st["lifetimes"].append(round(now - c.opened, 3))
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.sock = None
        c.reconnect_at = now + 0.2 + 0.3 * rng.random()

    # open gradually over the first two seconds, not as one burst
    for i, c in enumerate(conns):
        c.reconnect_at = t0 + 2.0 * i / max(1, len(conns))
    while not STOP:
        now = time.monotonic()
        if now >= end:
            break
        for c in conns:
            if c.sock is None and now >= c.reconnect_at:
                if c.open(now, per[c.mode]) and c.mode != "dns-slow-read":
                    sel.register(c.sock, selectors.EVENT_READ, c)
            elif c.sock is not None and c.next_send is not None and now >= c.next_send \
                    and c.mode in ("dns-trickle", "dns-body-trickle", "admin-trickle"):
                if not c.send_now(1):
                    closed(c, now, True)
                    continue
                c.next_send += c.trickle
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            if c.sock is None:
                continue
            try:
                r = c.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                closed(c, time.monotonic(), True)
                continue
            if r == b"":
                closed(c, time.monotonic(), False)
            elif c.mode != "admin-keepalive":
                per[c.mode]["unexpected_bytes"] += len(r)
        if now >= next_check:  # slow readers never read: ask the kernel whether the peer closed
            next_check = now + check_every
            for c in conns:
                if c.mode == "dns-slow-read" and c.sock is not None:
                    st = tcp_state(c.sock)
                    if st in (7, 8):
                        closed(c, now, st == 7)
                    else:
                        c.pump(per[c.mode])  # keep both directions full
    now = time.monotonic()
    out = {"seconds": now - t0, "trickle_s": a.trickle, "modes": {}}
    for mode, st in per.items():
        life = sorted(st.pop("lifetimes"))
        open_ages = sorted(now - c.opened for c in conns if c.mode == mode and c.sock is not None)
        st.update(closed_total=st["closed_by_server"] + st["reset_by_server"],
                  lifetime_min_s=life[0] if life else None, lifetime_median_s=pct(life, 0.5),
                  lifetime_max_s=life[-1] if life else None, open_at_end=len(open_ages),
                  oldest_open_at_end_s=round(open_ages[-1], 1) if open_ages else None)
        out["modes"][mode] = st
    for c in conns:
        if c.sock is not None:
            c.sock.close()
    write_json(a.out, out)
    return 0


# ---------------------------------------------------------------- probe

def load_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def run_probe(a):
    rng = random.Random(a.seed)
    popular = load_lines(os.path.join(a.names, "popular.txt"))
    blocked = load_lines(os.path.join(a.names, "blocked.txt"))
    weights = [1.0 / (r + 1) for r in range(len(popular))]  # Zipf, as dnsperf's file
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    mix = [float(x) for x in a.mix.split(",")]  # popular, blocked, forwarded shares
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    dest = ("127.0.0.1", a.port)
    pending = {}  # id -> (send ns, kind, window)
    window_s = a.window
    windows = {}  # window index -> {"lat": [...], "lost": n, "sent": n}
    lat_all = []
    by_kind = {}  # popular / blocked / forwarded -> latencies
    counts = {"sent": 0, "answered": 0, "lost": 0, "wrong": 0, "late": 0}
    wrong_by = {}
    rcodes = {}
    t0 = time.monotonic()
    t0_ns = time.monotonic_ns()
    end = t0 + a.seconds
    period_ns = int(1e9 / a.qps)
    next_ns = t0_ns
    fwd_n = 0
    timeout_ns = int(a.timeout * 1e9)
    while not STOP:
        now_ns = time.monotonic_ns()
        if now_ns >= t0_ns + int(a.seconds * 1e9):
            break
        while next_ns <= now_ns:  # send what is due (missed slots are skipped, not bunched)
            if now_ns - next_ns > 50 * period_ns:
                next_ns = now_ns
            r = rng.random() * sum(mix)
            if r < mix[0]:
                kind = "popular"
                x = rng.random() * cum[-1]
                lo, hi = 0, len(cum) - 1
                while lo < hi:
                    mid = (lo + hi) // 2
                    if cum[mid] < x:
                        lo = mid + 1
                    else:
                        hi = mid
                name = popular[lo]
            elif r < mix[0] + mix[1]:
                kind, name = "blocked", rng.choice(blocked)
            else:
                kind, name = "forwarded", f"p{fwd_n:x}.{a.label}.fwd"
                fwd_n += 1
            qid = rng.getrandbits(16)
            while qid in pending:
                qid = rng.getrandbits(16)
            try:
                s.sendto(query(qid, name), dest)
            except OSError:
                pass
            w = (next_ns - t0_ns) // int(window_s * 1e9)
            pending[qid] = (time.monotonic_ns(), kind, w)
            windows.setdefault(w, {"lat": [], "lost": 0, "sent": 0})["sent"] += 1
            counts["sent"] += 1
            next_ns += period_ns
        wait = max(0, next_ns - time.monotonic_ns()) / 1e9
        for _ in sel.select(timeout=min(wait, 0.05)):
            while True:
                try:
                    reply = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                t_ns = time.monotonic_ns()
                if len(reply) < 12:
                    continue
                qid = struct.unpack(">H", reply[:2])[0]
                p = pending.pop(qid, None)
                if p is None:
                    counts["late"] += 1  # answered after we gave it up (or a stray)
                    continue
                sent_ns, kind, w = p
                us = (t_ns - sent_ns) / 1e3
                lat_all.append(us)
                by_kind.setdefault(kind, []).append(us)
                windows[w]["lat"].append(us)
                counts["answered"] += 1
                rc = rcode_of(reply)
                rcodes[rcode_name(rc)] = rcodes.get(rcode_name(rc), 0) + 1
                ok = (rc == 3) if kind == "blocked" else (rc == 0 and UPSTREAM_A in a_records(reply))
                if not ok:
                    counts["wrong"] += 1
                    key = f"{kind} answered {rcode_name(rc)}"
                    wrong_by[key] = wrong_by.get(key, 0) + 1
        # give up on queries older than the timeout: lost
        now_ns = time.monotonic_ns()
        for qid in [q for q, p in pending.items() if now_ns - p[0] > timeout_ns]:
            _, _, w = pending.pop(qid)
            windows[w]["lost"] += 1
            counts["lost"] += 1
    # the last ones get their timeout, unless we were told to stop
    deadline = time.monotonic() + (0 if STOP else a.timeout)
    while pending and time.monotonic() < deadline:
        for _ in sel.select(timeout=0.05):
            while True:
                try:
                    reply = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                p = pending.pop(struct.unpack(">H", reply[:2])[0], None) if len(reply) >= 12 else None
                if p:
                    us = (time.monotonic_ns() - p[0]) / 1e3
                    lat_all.append(us)
                    windows[p[2]]["lat"].append(us)
                    counts["answered"] += 1
    for _, _, w in pending.values():
        windows[w]["lost"] += 1
        counts["lost"] += 1
    lat_all.sort()
    series = []
    for w in sorted(windows):
        lat = sorted(windows[w]["lat"])
        series.append({"t_s": w * window_s, "sent": windows[w]["sent"], "answered": len(lat),
                       "lost": windows[w]["lost"], "p50_us": pct(lat, 0.5), "p99_us": pct(lat, 0.99),
                       "max_us": lat[-1] if lat else None})
    write_json(a.out, {
        "seconds": time.monotonic() - t0, "qps": a.qps, "mix": mix, **counts, "rcodes": rcodes,
        "wrong_by": wrong_by, "p50_us": pct(lat_all, 0.5), "p90_us": pct(lat_all, 0.9),
        "p99_us": pct(lat_all, 0.99), "p999_us": pct(lat_all, 0.999),
        "max_us": lat_all[-1] if lat_all else None,
        "by_kind": {k: {"answered": len(v), "p50_us": pct(sorted(v), 0.5), "p99_us": pct(sorted(v), 0.99)}
                    for k, v in by_kind.items()},
        "window_s": window_s, "series": series})
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("garbage")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--rate", type=int, required=True)
    g.add_argument("--tcp-rate", type=float, default=5.0)
    g.add_argument("--seconds", type=float, required=True)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", required=True)
    s = sub.add_parser("slowloris")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--admin-port", type=int, required=True)
    s.add_argument("--dns", type=int, default=200)
    s.add_argument("--admin", type=int, default=100)
    s.add_argument("--slow-read", type=int, default=4)
    s.add_argument("--trickle", type=float, default=3.0)
    s.add_argument("--blocked-name", default="")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--seed", type=int, default=2)
    s.add_argument("--out", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--qps", type=float, default=200)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--names", required=True, help="dir with popular.txt and blocked.txt")
    p.add_argument("--label", required=True, help="label under which the forwarded names are made up")
    p.add_argument("--mix", default="70,20,10", help="popular,blocked,forwarded shares")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--window", type=float, default=60.0, help="seconds per latency window")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return {"garbage": run_garbage, "slowloris": run_slowloris, "probe": run_probe}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
