#!/usr/bin/env python3
"""Data for the e2e benchmark: the blocklist union, its 1M-name variant, the
popular names no list blocks, the dnsperf query files, and the zone under
which bench.py makes up the forwarded workload's never-asked names.

Everything is deterministic (fixed seeds, sorted inputs), so two runs on two
machines query the same names in the same order.

usage: prep.py DATA_DIR OUT_DIR
writes into OUT_DIR:
  union.txt            normalised, deduplicated names of every list (sorted)
  union1m.txt          union.txt padded to 1,000,000 names with synthetic ones
  popular.txt          top-domains.csv names (rank order) that no list blocks
  q_blocked.txt        every union name once, shuffled, a third under a subdomain
  q_cached.txt         every popular name once, rank order
  q_mixed.txt          200k queries: 80% popular by Zipf weight, 20% blocked
  q_blocked1m.txt      as q_blocked.txt, for union1m.txt
  probes.json          names for readiness and sanity checks, the forwarded zone
"""
import csv
import glob
import hashlib
import json
import os
import random
import re
import sys

TARGET_1M = 1_000_000
MIXED_QUERIES = 200_000
SUB_PREFIXES = ["www", "cdn", "api", "static", "img", "m", "ads", "t"]
SYNTH_TLDS = ["com", "net", "org", "info", "io", "xyz", "top", "online"]
# The forwarded workload's names live under this made-up TLD (not one of the
# special-use names, such as .invalid, that Unbound and others answer locally);
# main() checks that no list blocks it or anything under it.
FORWARDED_ZONE = "fwd"

LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
SINK_ADDRS = {"0.0.0.0", "127.0.0.1", "::", "::1"}


def valid(name):
    if not name or len(name) > 253 or "." not in name:
        return False
    return all(LABEL.match(label) for label in name.split("."))


def names_in_line(line):
    """The names one list line blocks, in any of the four formats."""
    line = line.strip()
    if not line or line[0] in "#!":
        return []
    line = line.split("#", 1)[0].strip()
    if not line:
        return []
    if line.startswith("@@"):  # adblock exception: not a block rule
        return []
    if line.startswith("||"):
        body = line[2:]
        if "$" in body:
            body = body.split("$", 1)[0]
        if not body.endswith("^"):
            return []
        return [body[:-1]]
    parts = line.split()
    if len(parts) >= 2:  # hosts
        if parts[0] not in SINK_ADDRS:
            return []
        return parts[1:]
    name = parts[0]
    if name.startswith("*."):
        name = name[2:]
    return [name]


def load_union(data_dir):
    files = sorted(glob.glob(os.path.join(data_dir, "blocklists", "*.txt")))
    if not files:
        sys.exit(f"prep: no lists in {data_dir}/blocklists")
    names = set()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                for n in names_in_line(line):
                    n = n.lower().rstrip(".")
                    if n != "localhost" and valid(n):
                        names.add(n)
    return sorted(names)


def synthetic(i):
    h = hashlib.sha1(f"sinkhole-e2e-{i}".encode()).hexdigest()
    return f"{h[:12]}.{h[12:20]}.{SYNTH_TLDS[int(h[20:22], 16) % len(SYNTH_TLDS)]}"


def pad_to_1m(union):
    have = set(union)
    out = list(union)
    i = 0
    while len(out) < TARGET_1M:
        n = synthetic(i)
        i += 1
        if n not in have:
            have.add(n)
            out.append(n)
    return sorted(out)


def blocked_by(union_set, name):
    labels = name.split(".")
    return any(".".join(labels[i:]) in union_set for i in range(len(labels)))


def load_popular(data_dir, union_set):
    out, seen = [], set()
    with open(os.path.join(data_dir, "top-domains.csv"), encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip().isdigit():
                continue
            n = row[1].strip().lower().rstrip(".")
            if valid(n) and n not in seen and not blocked_by(union_set, n):
                seen.add(n)
                out.append(n)
    return out


def blocked_queries(names, seed):
    rng = random.Random(seed)
    q = list(names)
    rng.shuffle(q)
    for i in range(0, len(q), 3):  # a third under a subdomain
        q[i] = f"{SUB_PREFIXES[(i // 3) % len(SUB_PREFIXES)]}.{q[i]}"
    return q


def mixed_queries(popular, blocked, seed):
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) for r in range(len(popular))]  # Zipf, s = 1
    n_pop = MIXED_QUERIES * 8 // 10
    q = rng.choices(popular, weights=weights, k=n_pop)
    q += rng.sample(blocked, MIXED_QUERIES - n_pop)
    rng.shuffle(q)
    return q


def write_lines(path, lines, suffix=""):
    with open(path, "w") as f:
        for line in lines:
            f.write(line + suffix + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data_dir, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    union = load_union(data_dir)
    union_set = set(union)
    union1m = pad_to_1m(union)
    popular = load_popular(data_dir, union_set)
    under = [n for n in union1m if n == FORWARDED_ZONE or n.endswith("." + FORWARDED_ZONE)]
    if under:
        sys.exit(f"prep: the lists block {under[0]} (and {len(under) - 1} more) under the forwarded "
                 f"workload's zone .{FORWARDED_ZONE}: pick another FORWARDED_ZONE")
    q_blocked = blocked_queries(union, 1)
    write_lines(f"{out}/union.txt", union)
    write_lines(f"{out}/union1m.txt", union1m)
    write_lines(f"{out}/popular.txt", popular)
    write_lines(f"{out}/q_blocked.txt", q_blocked, " A")
    write_lines(f"{out}/q_cached.txt", popular, " A")
    write_lines(f"{out}/q_mixed.txt", mixed_queries(popular, q_blocked, 2), " A")
    write_lines(f"{out}/q_blocked1m.txt", blocked_queries(union1m, 3), " A")
    probes = {
        # the last name of each list: a server that answers it NXDOMAIN has
        # loaded the whole list (ready); the others are the sanity checks
        "ready": union[-1],
        "ready1m": union1m[-1],
        "blocked": union[len(union) // 2],
        "blocked_sub": "www." + union[len(union) // 3],
        "popular": popular[0],
        "popular2": popular[len(popular) // 2],
        "synthetic": synthetic(0),
        "forwarded_zone": FORWARDED_ZONE,
        "counts": {"union": len(union), "union1m": len(union1m), "popular": len(popular)},
    }
    with open(f"{out}/probes.json", "w") as f:
        json.dump(probes, f, indent=1)
    print(f"prep: {len(union)} blocked names, {len(union1m)} in the 1M variant, "
          f"{len(popular)} popular names not blocked")


if __name__ == "__main__":
    main()
