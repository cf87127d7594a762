#!/usr/bin/env python3
"""(Re)creates fuzz/seeds/<target>/ from the repository's own test data and
a few hand-made DNS messages. Run from anywhere: `python3 fuzz/seed.py`
(or `fuzz/seed.sh`). Every seed directory is emptied and rewritten, so the
output depends only on the repository's files.

- query: client queries (see fuzz/src/query.rs for the names the harness
  has rules and cache entries for). The ID's low byte picks the transport
  (bit 0: TCP) and the client (bits 1-2: 0/1 127.0.0.1, 2 ::1, 3 a client
  outside access.allow).
- upstream_answer: two choice bytes (fuzz/src/upstream.rs `Choice`), then
  an upstream reply to that question under ID 0xBEEF.
- list_*: list files: the doc examples of src/lists/*.rs, blocklists/,
  RPZ zones in tests/, and hand-made edge cases.
- config: sinkhole.yaml, benches/*/conf/sinkhole.yaml, README's and the
  tests' YAML, and a few broken ones.
"""

import hashlib
import os
import re
import shutil
import subprocess
import struct

FUZZ = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")
MAX_SEED = 8192  # bytes; seeds stay small

A, NS, CNAME, SOA, MX, TXT, AAAA, SRV, OPT, HTTPS, ANY = 1, 2, 5, 6, 15, 16, 28, 33, 41, 65, 255
QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010


def tracked(pattern):
    """Files of the repository's index matching `pattern` (a glob), so the
    seeds never depend on files nobody committed."""
    out = subprocess.run(["git", "-C", REPO, "ls-files", "--", pattern],
                         capture_output=True, text=True, check=True).stdout
    return sorted(l for l in out.splitlines() if l)


def read(path):
    with open(os.path.join(REPO, path), "rb") as f:
        return f.read()


def name(text):
    out = b""
    for label in text.split("."):
        if label:
            label = label.encode()
            out += bytes([len(label)]) + label
    return out + b"\0"


def header(id_, flags, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def question(qname, qtype, qclass=1):
    return name(qname) + struct.pack(">HH", qtype, qclass)


def opt(payload=1232, dnssec=False, version=0, ext_rcode=0, options=b""):
    flags = 0x8000 if dnssec else 0
    return b"\0" + struct.pack(">HHBBHH", OPT, payload, ext_rcode, version, flags, len(options)) + options


def ede(code, text):
    body = struct.pack(">H", code) + text
    return struct.pack(">HH", 15, len(body)) + body


def rr(owner, rtype, ttl, rdata, rclass=1):
    """`owner` is wire bytes (a name or a pointer)."""
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


PTR_Q = b"\xc0\x0c"  # the question's name


def query(qname, qtype, id_=0x1200, flags=RD, edns=None, qclass=1):
    """edns: None, or (payload, dnssec)."""
    ar = 1 if edns else 0
    m = header(id_, flags, 1, 0, 0, ar) + question(qname, qtype, qclass)
    if edns:
        m += opt(edns[0], edns[1])
    return m


def query_seeds():
    s = {}
    udp, tcp, v6, refused = 0x1200, 0x1201, 0x1204, 0x1206
    e = (1232, False)
    do = (1232, True)
    # Names the harness blocks, caches or forwards; every other one with
    # EDNS, every third over TCP.
    for i, (n, t) in enumerate([
        ("cached.example", A), ("cached.example", AAAA), ("nx.cached.example", A),
        ("cname.cached.example", A), ("stale.example", A), ("www.example.com", A),
        ("ads.example", A), ("x.tracker.example", AAAA), ("zoom.us", HTTPS),
        ("video.example", A), ("video.example", AAAA), ("video.example", MX),
        ("a.nodata.example", A), ("refused.example", A), ("monitored.example", A),
        ("ok.ads.example", A), ("nx.test", A), ("sub.nx.test", A), ("nodata.test", A),
        ("ok.nx.test", A), ("drop.test", A), ("tcp.test", A), ("local.test", A),
        ("local.test", AAAA), ("local.test", TXT), ("local.test", ANY),
        ("alias.test", A), ("alias.test", AAAA), ("alias-blocked.test", A),
        ("alias-local.test", A), ("alias-cached.test", A), ("alias.test", CNAME),
    ]):
        id_ = tcp if i % 3 == 2 else udp
        s[f"{n}-{t}"] = query(n, t, id_, edns=e if i % 2 else None)
    s["big-txt-udp"] = query("big.cached.example", TXT, udp)
    s["big-txt-tcp"] = query("big.cached.example", TXT, tcp, edns=e)
    s["tcp-only-over-tcp"] = query("tcp.test", A, tcp)
    s["cached-do"] = query("cached.example", A, udp, edns=do)
    s["cached-ede"] = query("ede.cached.example", A, udp, edns=e)
    s["cached-ad"] = query("cached.example", A, udp, flags=RD | AD)
    s["cached-cd-do"] = query("cached.example", A, udp, flags=RD | CD, edns=do)
    s["cached-upper"] = query("CaChEd.ExAmPlE", A, v6)
    s["any-tcp"] = query("www.example.com", ANY, tcp)
    s["small-payload"] = query("video.example", A, udp, edns=(100, False))
    s["chaos-class"] = query("version.bind", TXT, udp, qclass=3)
    s["rd0-forward"] = query("www.example.com", A, udp, flags=0)
    s["rd0-chase"] = query("alias.test", A, udp, flags=0)
    s["refused-client"] = query("www.example.com", A, refused, edns=e)
    s["refused-client-garbage"] = header(refused, 0, 2) + b"\x01"
    s["root"] = query(".", NS, udp)
    s["long-name"] = query(".".join(["b" * 60] * 4), A, udp)
    s["binary-label"] = header(udp, RD) + b"\x03a.\xff\x07example\x00" + struct.pack(">HH", A, 1)
    # What sinkhole answers with an error, or not at all.
    s["notimp-opcode4"] = query("www.example.com", A, udp, flags=RD | (4 << 11), edns=e)
    s["badvers"] = header(udp, RD, 1, 0, 0, 1) + question("www.example.com", A) + opt(version=1)
    s["tc-set"] = query("www.example.com", A, udp, flags=RD | TC)
    s["qd0"] = header(udp, RD, 0, 0, 0, 1) + opt()
    s["qd2"] = header(udp, RD, 2) + question("a.example", A) + question("b.example", A)
    s["an1"] = header(udp, RD, 1, 1) + question("a.example", A) + rr(PTR_Q, A, 60, b"\1\2\3\4")
    s["compressed-question"] = header(udp, RD) + b"\xc0\x0c" + struct.pack(">HH", A, 1)
    s["two-opts"] = header(udp, RD, 1, 0, 0, 2) + question("a.example", A) + opt() + opt()
    s["opt-not-root"] = header(udp, RD, 1, 0, 0, 1) + question("a.example", A) + b"\x01x\x00" + opt()[1:]
    s["opt-with-ede"] = header(udp, RD, 1, 0, 0, 1) + question("a.example", A) + opt(options=ede(0, b"hi"))
    s["truncated"] = query("www.example.com", A, udp)[:20]
    s["short-header"] = b"\x12\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00"
    s["a-response"] = query("www.example.com", A, udp, flags=QR | RD)
    s["tcp-framed"] = struct.pack(">H", 33) + query("www.example.com", A, udp)
    return s


def up(a_name, a_type, patch, edns, do=False, cd=False, ad=False, tcp=False, over_tcp=False,
       payload=1, upper=False):
    a = a_name | a_type << 3 | patch << 6 | edns << 7
    b = do | cd << 1 | ad << 2 | tcp << 3 | over_tcp << 4 | payload << 5 | upper << 7
    return bytes([a, b])


UP_NAMES = ["www.example.com", "example.com", "a.b.c.d.example.org", "xn--bcher-kva.example",
            "cached.example", "Mixed.Case.Example.NET", "_dmarc.example.com", "x.y"]
UP_TYPES = [A, AAAA, MX, TXT, CNAME, HTTPS, SOA, ANY]


def reply(ni, ti, flags, an=(), ns=(), ar=(), rcode=0, qname=None, extra_ar=b"", extra_count=0):
    q = question(qname or UP_NAMES[ni], UP_TYPES[ti])
    m = header(0xBEEF, QR | RA | RD | flags | rcode, 1, len(an), len(ns), len(ar) + extra_count)
    return m + q + b"".join(an) + b"".join(ns) + b"".join(ar) + extra_ar


def soa_rdata(mname, rname, minimum):
    return mname + rname + struct.pack(">IIIII", 2024010101, 3600, 600, 86400, minimum)


def upstream_seeds():
    s = {}
    # www.example.com A: two addresses, with our OPT.
    s["a-two"] = up(0, 0, 1, 1) + reply(0, 0, AD, an=[rr(PTR_Q, A, 300, b"\xc0\x00\x02\x01"),
                                                      rr(PTR_Q, A, 60, b"\xc0\x00\x02\x02")],
                                        ar=[opt(1232)])
    s["a-two-tcp-client"] = up(0, 0, 0, 0, tcp=True) + s["a-two"][2:]
    # example.com NXDOMAIN with the SOA (names compressed against the question).
    soa = rr(PTR_Q, SOA, 3600, soa_rdata(b"\x02ns\xc0\x0c", b"\x0ahostmaster\xc0\x0c", 300))
    s["nxdomain-soa"] = up(1, 0, 1, 1) + reply(1, 0, 0, ns=[soa], rcode=3)
    s["nodata-soa"] = up(1, 1, 0, 0) + reply(1, 1, 0, ns=[soa])
    s["nxdomain-no-soa"] = up(1, 0, 0, 0) + reply(1, 0, 0, rcode=3)
    # A CNAME chain: www.example.com -> a.example.net -> b.example.net A.
    a_net = 12 + len(question(UP_NAMES[0], A)) + 12  # where the first CNAME's target starts
    chain = [rr(PTR_Q, CNAME, 300, b"\x01a\x07example\x03net\x00"),
             rr(bytes([0xC0, a_net]), CNAME, 200, b"\x01b" + bytes([0xC0, a_net + 2])),
             rr(bytes([0xC0, a_net + 27]), A, 100, b"\xc0\x00\x02\x07")]
    s["cname-chain"] = up(0, 0, 1, 1, do=True) + reply(0, 0, 0, an=chain)
    # SERVFAIL with EDE 6 (DNSSEC Bogus) and text; NOERROR with EDE 3.
    s["servfail-ede"] = up(0, 0, 1, 1, do=True) + reply(0, 0, 0, ar=[opt(1232, True, options=ede(6, b"bogus signature"))], rcode=2)
    s["noerror-ede"] = up(0, 0, 0, 1) + reply(0, 0, 0, an=[rr(PTR_Q, A, 30, b"\x7f\0\0\1")],
                                             ar=[opt(4096, options=ede(3, b"stale") + struct.pack(">HH", 10, 8) + b"cookie!!")])
    s["badcookie-ext-rcode"] = up(0, 0, 0, 1) + reply(0, 0, 0, ar=[opt(1232, ext_rcode=1)], rcode=7)
    # OPT first in the additional section, a record after it.
    s["opt-first"] = up(0, 0, 0, 1) + reply(0, 0, 0, an=[rr(PTR_Q, A, 300, b"\1\2\3\4")],
                                           ar=[opt(1232), rr(PTR_Q, A, 300, b"\1\2\3\5")])
    # MX with a compressed exchange; TXT; AAAA; HTTPS; SOA; ANY.
    s["mx"] = up(1, 2, 0, 0) + reply(1, 2, 0, an=[rr(PTR_Q, MX, 3600, b"\x00\x0a\x04mail\xc0\x0c")],
                                     ar=[rr(b"\x04mail\xc0\x0c", A, 3600, b"\xc0\x00\x02\x19")])
    s["txt"] = up(6, 3, 0, 0) + reply(6, 3, 0, an=[rr(PTR_Q, TXT, 600, b"\x0fv=DMARC1; p=none\x03abc")])
    s["aaaa"] = up(3, 1, 0, 1, payload=2) + reply(3, 1, 0, an=[rr(PTR_Q, AAAA, 86400, bytes(range(16)))])
    s["https"] = up(0, 5, 0, 1) + reply(0, 5, 0, an=[rr(PTR_Q, HTTPS, 300, b"\x00\x01\x00\x00\x01\x00\x03\x02h2")])
    s["soa"] = up(1, 6, 0, 0) + reply(1, 6, 0, an=[soa])
    s["any"] = up(7, 7, 0, 1, do=True) + reply(7, 7, 0, an=[
        rr(PTR_Q, A, 60, b"\1\1\1\1"), rr(PTR_Q, NS, 60, b"\x02ns\xc0\x0c"),
        rr(PTR_Q, SRV, 60, b"\x00\x01\x00\x02\x00\x35\x03srv\xc0\x0c"),
        rr(PTR_Q, 46, 60, b"\x00\x01\x08\x02\x00\x00\x0e\x10" + bytes(12) + b"\xc0\x0c" + b"sig")])
    # Truncated: over UDP it goes to TCP; over TCP it is taken, not cached.
    s["tc-udp"] = up(0, 0, 0, 0) + reply(0, 0, TC)
    s["tc-tcp"] = up(0, 0, 0, 0, over_tcp=True) + reply(0, 0, TC, an=[rr(PTR_Q, A, 300, b"\1\2\3\4")])
    # TTLs: the top bit set (zero), past a day (capped), zero.
    s["ttl-top-bit"] = up(0, 0, 0, 0) + reply(0, 0, 0, an=[rr(PTR_Q, A, 0x80000001, b"\1\2\3\4")])
    s["ttl-huge"] = up(0, 0, 0, 0) + reply(0, 0, 0, an=[rr(PTR_Q, A, 0x7fffffff, b"\1\2\3\4")])
    s["ttl-zero"] = up(0, 0, 0, 0) + reply(0, 0, 0, an=[rr(PTR_Q, A, 0, b"\1\2\3\4")])
    # The question in another case (matches), and another question (does not).
    s["upper-question"] = up(5, 0, 0, 0, upper=True) + reply(5, 0, 0, an=[rr(PTR_Q, A, 60, b"\1\2\3\4")],
                                                            qname="MIXED.CASE.EXAMPLE.NET")
    s["other-question"] = up(0, 0, 0, 0) + reply(0, 0, 0, qname="www.example.org")
    s["other-id"] = up(0, 0, 0, 0) + b"\x12\x34" + reply(0, 0, 0)[2:]
    # Many records: over a UDP client's limit.
    many = [rr(PTR_Q, TXT, 300, b"\x63" + bytes([97 + i % 26]) * 99) for i in range(20)]
    s["big-txt"] = up(0, 3, 0, 1, payload=0) + reply(0, 3, 0, an=many)
    # Malformed: a compression loop, a record past the end, a forward pointer.
    s["loop"] = up(0, 4, 0, 0) + reply(0, 4, 0, an=[rr(PTR_Q, CNAME, 60, bytes([0xC0, 12 + 21 + 12]))])
    s["short-rdata"] = up(0, 0, 0, 0) + reply(0, 0, 0, an=[rr(PTR_Q, A, 60, b"\1\2\3\4")])[:-2]
    s["forward-pointer"] = up(0, 0, 0, 0) + reply(0, 0, 0, an=[rr(b"\xc0\xff", A, 60, b"\1\2\3\4")])
    return s


# Hand-made list edge cases, one per format (plus the doc examples).
LIST_EXTRA = {
    "domains": [
        "\ufeffads.example\r\nTracker.Example.\r\n*.cdn.example\r\n# c\n! c\nbücher.example\n"
        "a..b\n10.0.0.1\nx.example # inline\nhost1 host2\n_dmarc.example\n" + "a" * 64 + ".example\n",
        "xn--bcher-kva.example\n" + ".".join(["abcdefghi"] * 26) + "\n*.\n*\n\u0430\u0431.рф\n",
    ],
    "hosts": [
        "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 ads.example tracker.example # two\n"
        "0.0.0.0\n1.2.3.4 real.example\n:: ipv6.example\nfe80::1%lo0 zone.example\n255.255.255.255 broadcasthost\n"
        "ads.example\n127.0.0.2 Bücher.example\n",
    ],
    "adblock": [
        "[Adblock Plus 2.0]\n! Title: t\n||ads.example^\n@@||good.ads.example^\n||x.example^$important\n"
        "||y.example^$third-party\n##.banner\nexample.com##div\n|http://a.example/\n/regex/\n"
        "||*.wild.example^\nplain.example\n||UPPER.Example^\n||a.example/path^\n",
    ],
    "wildcard": [
        "# Title\n*.ads.example\ntracker.example\n\n*.Mixed.CASE.example.\n*ads.example\nads.*\n"
        "a.*.example\n*.*.example\n*\n*.\n*.a.example *.b.example\n",
    ],
    "rpz": [
        "$TTL 300\n@ IN SOA ns.example. admin.example. ( 1 2\n 3 4 5 )\nads.example CNAME .\n"
        "*.ads.example CNAME .\nx.example 300 IN A 192.0.2.1\n  AAAA 2001:db8::1\n"
        "  TXT \"a\\\"b\" \"c\\065\"\ncn.example CNAME target.example.\nrel.example CNAME rel-target\n"
        "$ORIGIN zone.\nin.zone. CNAME rpz-passthru.\nout.other. CNAME .\n@ CNAME .\n*.zone. CNAME .\n"
        "mx.example MX 10 mail.example.\nbad.example A 999.1.1.1\n32.1.0.0.10.rpz-ip CNAME .\n"
        "open.example A ( 192.0.2.3\n$INCLUDE other\n$GENERATE 1-2 a$ A 1.2.3.4\n"
        "esc\\.dot.example CNAME \\065\\.b.\nch.example CH A 1.2.3.4\nself.example CNAME self.example.\n",
    ],
}


def doc_examples(path):
    """The ```text blocks of a file's //! module doc."""
    doc = "\n".join(l[4:] if l.startswith("//! ") else l[3:]
                    for l in read(path).decode().splitlines() if l.startswith("//!"))
    return re.findall(r"```text\n(.*?)```", doc, re.S)


def raw_strings(path):
    return re.findall(r'r#"(.*?)"#', read(path).decode(), re.S)


def list_seeds(fmt):
    s = {}
    for i, t in enumerate(doc_examples(f"src/lists/{fmt}.rs")):
        # The doc examples mark lines with `← note`: keep them, they are
        # what the parser sees in a copied line too.
        s[f"doc-{i}"] = t.encode()
    for i, t in enumerate(LIST_EXTRA[fmt]):
        s[f"edge-{i}"] = t.encode()
    if fmt in ("domains", "wildcard"):
        for p in tracked("blocklists/*.txt"):
            s[os.path.basename(p)] = read(p)
    if fmt == "rpz":
        for p in tracked("tests/*.rs"):
            for i, t in enumerate(raw_strings(p)):
                if "$ORIGIN" in t:
                    s[f"{os.path.basename(p)[:-3]}-{i}"] = t.encode()
    # Bytes a download may hold: a line not UTF-8, a NUL, an HTML page.
    first = next(iter(s.values()))
    s["not-utf8-line"] = first + b"\nbad\xff\xfe.example\nok.example\n"
    s["nul"] = b"a.example\n\x00\n"
    s["html"] = b"\n\n<!DOCTYPE html><html><body>404</body></html>\n"
    s["bom-crlf"] = b"\xef\xbb\xbf" + first.replace(b"\n", b"\r\n")
    return s


CONFIG_EXTRA = {
    "empty": "",
    "tab": "listen:\n\tdns: []\n",
    "unknown-key": "listen:\n  dnss: []\n",
    "bad-duration": "upstream:\n  servers: [\"127.0.0.1:53\"]\n  timeout: 2 parsecs\n",
    "missing-list": "categories:\n  x: {action: nxdomain}\nlists:\n  - {name: l, category: x, path: nope.txt}\n",
    "undefined-category": "lists:\n  - {name: l, category: nope, path: a.txt}\n",
    "access": "access:\n  allow: [\"10.1.2.3/8\", \"::/129\"]\n  refused: drop\n",
    "limits": "limits:\n  client_qps: 0\n",
    "bom": "\ufefflisten:\n  dns: [\"127.0.0.1:5353\"]\n",
    "anchors": "a: &x [1, 2]\nb: *x\n",
    "token": "listen:\n  admin: \"127.0.0.1:9154\"\n  admin_token_file: admin.token\n",
}


def config_seeds():
    s = {"sinkhole.yaml": read("sinkhole.yaml")}
    for p in tracked("benches/*/conf/sinkhole.yaml"):
        bench = p.split("/")[-3]
        s[f"bench-{bench}.yaml"] = read(p).replace(b"@@LIST@@", b"lists/list.txt")
    readme = read("README.md").decode()
    for i, t in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S)):
        s[f"readme-{i}.yaml"] = t.encode()
    for p in tracked("tests/*.rs"):
        for i, t in enumerate(raw_strings(p)):
            if re.search(r"^(listen|upstream|lists|categories|block|cache):", t, re.M):
                s[f"{os.path.basename(p)[:-3]}-{i}.yaml"] = t.encode()
    for k, t in CONFIG_EXTRA.items():
        s[f"{k}.yaml"] = t.encode()
    return s


def write(target, seeds):
    d = os.path.join(SEEDS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for k, v in seeds.items():
        if len(v) > MAX_SEED:
            v = v[:MAX_SEED]
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", k)
        with open(os.path.join(d, safe), "wb") as f:
            f.write(v)
    digest = hashlib.sha256(b"".join(sorted(seeds.values()))).hexdigest()[:12]
    print(f"{target:16} {len(seeds):3} seeds  {sum(map(len, seeds.values())):6} bytes  {digest}")


def main():
    write("query", query_seeds())
    write("upstream_answer", upstream_seeds())
    for fmt in ("domains", "hosts", "adblock", "wildcard", "rpz"):
        write(f"list_{fmt}", list_seeds(fmt))
    write("config", config_seeds())


if __name__ == "__main__":
    main()
