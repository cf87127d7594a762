#!/usr/bin/env bash
# Instructions per query of the whole sinkhole server, per workload, under
# valgrind's callgrind: exact and repeatable on a noisy machine, where the
# CPU-time figures of run.sh move with the neighbours' load.
#
#   benches/e2e/profile.sh            # after run.sh has installed the packages
#
# It starts NSD (the same wildcard root as run.sh) and sinkhole under
# callgrind with the same ~577k-name list, turns instrumentation on only once
# the list is loaded, and dumps the counters after each workload:
#   blocked  N names from q_blocked.txt (a third under a subdomain)
#   cached   N popular names, each already answered once (warm-up not counted)
#   mixed    N queries of q_mixed.txt after one warm-up pass over them
#   forwarded N names never asked before (`<i>.<label>.fwd`, a label made
#            up for this run): every query a cache miss, forwarded to NSD
# Instructions per query = the dump's total ÷ the queries dnsperf saw answered.
# User space only: the kernel's share of a query (the socket calls) is not
# counted, which is what run.sh's CPU µs/query adds.
#
# The config is conf/sinkhole.yaml, so the audit log is off (`log: {queries:
# none}`) as in run.sh's sinkhole row; PROFILE_LOG='{queries: blocked,
# client: full}' puts that in its place (sinkhole-log's setting: the writer
# thread's instructions count too, callgrind follows every thread). A binary
# older than the `log` key (SINKHOLE_BIN) gets the config without that line.
#
# Environment: E2E_WORK (work dir; default a new /tmp/sinkhole-profile.XXXXXX),
# E2E_DATA (default ../shared/data), PROFILE_QUERIES (default 5000),
# SINKHOLE_BIN (profile this binary instead of building the checkout),
# PROFILE_LOG (the `log:` setting, default `{queries: none}`),
# PROFILE_MONITOR=FILE (adds FILE as a list in a category with `action:
# monitor`: what a trial list costs the queries it does not block).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel)"
DATA="$(cd "${E2E_DATA:-$ROOT/../shared/data}" && pwd)"
WORK="${E2E_WORK:-$(mktemp -d /tmp/sinkhole-profile.XXXXXX)}"
N="${PROFILE_QUERIES:-5000}"
mkdir -p "$WORK"
say() { printf '[profile.sh] %s\n' "$*" >&2; }

for b in valgrind callgrind_control callgrind_annotate dnsperf nsd python3; do
    command -v "$b" >/dev/null || { say "$b not found (run benches/e2e/run.sh once, or apt install valgrind dnsperf nsd)"; exit 1; }
done

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# prep.py's files, unless the work dir has them from a prep.py that knew the forwarded zone
grep -qs '"forwarded_zone"' "$WORK/probes.json" || python3 "$HERE/prep.py" "$DATA" "$WORK" >&2
if [ -n "${SINKHOLE_BIN:-}" ]; then
    BIN="$SINKHOLE_BIN"     # another build, for before/after counts
else
    (cd "$ROOT" && cargo build --release -q)
    BIN="$ROOT/target/release/sinkhole"
fi

# NSD on core 1, as in run.sh.
NSD_PORT=$(free_port)
mkdir -p "$WORK/nsd"
sed -e "s|@@NSD_PORT@@|$NSD_PORT|g; s|@@DIR@@|$WORK/nsd|g" "$HERE/conf/nsd.conf" > "$WORK/nsd/nsd.conf"
cp "$HERE/conf/root.zone" "$WORK/nsd/root.zone"
taskset -c 1 nsd -d -c "$WORK/nsd/nsd.conf" > "$WORK/nsd/stdout.log" 2>&1 &
PIDS+=($!)

PORT=$(free_port)
ADMIN=$(free_port)
LOG="${PROFILE_LOG:-{queries: none\}}"
CONF="$WORK/sinkhole-profile.yaml"
grep -qx 'log: {queries: none}' "$HERE/conf/sinkhole.yaml" || { say "conf/sinkhole.yaml has no line 'log: {queries: none}'"; exit 1; }
sed -e "s|@@PORT@@|$PORT|; s|@@ADMIN_PORT@@|$ADMIN|; s|@@NSD_PORT@@|$NSD_PORT|; s|@@LIST@@|$WORK/union.txt|" \
    -e "s|^log: {queries: none}\$|log: $LOG|" \
    "$HERE/conf/sinkhole.yaml" > "$CONF"
if [ -n "${PROFILE_MONITOR:-}" ]; then
    [ -f "$PROFILE_MONITOR" ] || { say "PROFILE_MONITOR=$PROFILE_MONITOR is not a file"; exit 1; }
    sed -i -e '/^categories:$/a\  trial:\n    action: monitor' \
        -e "/^lists:\$/a\\  - name: trial\n    category: trial\n    path: $PROFILE_MONITOR" "$CONF"
fi
if [ -n "${PROFILE_EXTRA:-}" ]; then
    printf '%s\n' "$PROFILE_EXTRA" >> "$CONF"
fi
# `check` only to catch keys the binary does not know, on a one-name list:
# the shared lists block three names under nhs.uk, which a binary with
# guard.protected (issue 16) rejects as a whole, while `serve` skips them.
echo "zoom.us" > "$WORK/check-list.txt"
sed -e "s|^\(    path: \).*|\1$WORK/check-list.txt|" "$CONF" > "$WORK/check.yaml"
if ! "$BIN" check -c "$WORK/check.yaml" > "$WORK/check.log" 2>&1; then
    if grep -q 'unknown field `log`' "$WORK/check.log" && [ -z "${PROFILE_LOG:-}" ]; then
        say "$BIN predates the \`log\` key: profiling it without that line"
        sed -i '/^log: /d' "$CONF"
    else
        say "$BIN rejects $CONF: $(tail -3 "$WORK/check.log")"; exit 1
    fi
fi
say "config: $(grep '^log: ' "$CONF" || echo 'no log: line')"

# One core, so one worker, as in run.sh.
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$BIN" serve -c "$CONF" > "$WORK/sinkhole-profile.log" 2>&1 &
VG=$!
PIDS+=($VG)
say "loading the list under valgrind (takes a while)"
for _ in $(seq 1 600); do
    if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$ADMIN/readyz',timeout=2).status==200 else 1)" 2>/dev/null; then
        break
    fi
    kill -0 "$VG" 2>/dev/null || { say "sinkhole exited: $(tail -5 "$WORK/sinkhole-profile.log")"; exit 1; }
    sleep 1
done

head -n "$N" "$WORK/q_blocked.txt" > "$WORK/p_blocked.txt"
head -n "$N" "$WORK/q_cached.txt" > "$WORK/p_cached.txt"
head -n "$N" "$WORK/q_mixed.txt" > "$WORK/p_mixed.txt"
ZONE=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["forwarded_zone"])' "$WORK/probes.json")
LABEL=$(python3 -c 'import os; print(os.urandom(6).hex())')
awk -v n="$N" -v label="$LABEL" -v zone="$ZONE" \
    'BEGIN { for (i = 0; i < n; i++) printf "%x.%s.%s A\n", i, label, zone }' > "$WORK/p_forwarded.txt"

# dnsperf at a rate valgrind keeps up with; prints the queries answered.
perf() {
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$1" -n 1 -Q 1500 -t 10 2>&1 |
        tee -a "$WORK/dnsperf.log" | awk '/Queries completed:/ {print $3}'
}

callgrind_control -i on "$VG" > /dev/null
declare -A DONE
perf "$WORK/p_cached.txt" > /dev/null          # warm the cache
perf "$WORK/p_mixed.txt" > /dev/null
callgrind_control -z "$VG" > /dev/null
DONE[blocked]=$(perf "$WORK/p_blocked.txt")
callgrind_control -d blocked "$VG" > /dev/null
DONE[cached]=$(perf "$WORK/p_cached.txt")
callgrind_control -d cached "$VG" > /dev/null
DONE[mixed]=$(perf "$WORK/p_mixed.txt")
callgrind_control -d mixed "$VG" > /dev/null
DONE[forwarded]=$(perf "$WORK/p_forwarded.txt")
callgrind_control -d forwarded "$VG" > /dev/null

OUT="$WORK/profile.md"
{
    echo "sinkhole ${SINKHOLE_BIN:-$(git -C "$ROOT" rev-parse --short HEAD)}, $(date -u +%FT%TZ), ~577k-name list, $N queries per workload, $(grep '^log: ' "$CONF" || echo 'no log: line')"
    echo
    echo "| workload | answered | instructions | per query |"
    echo "|---|---|---|---|"
    for w in blocked cached mixed forwarded; do
        f=$(grep -l "^desc: Trigger:.*$w\$" "$WORK"/callgrind.out.$VG.* | head -1)
        total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
        echo "| $w | ${DONE[$w]} | $total | $(( total / DONE[$w] )) |"
    done
    for w in blocked cached forwarded; do
        f=$(grep -l "^desc: Trigger:.*$w\$" "$WORK"/callgrind.out.$VG.* | head -1)
        echo
        echo "Top functions, $w (exclusive instructions):"
        echo '```'
        callgrind_annotate "$f" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,18p' | cut -c1-150
        echo '```'
    done
} > "$OUT"
cat "$OUT"
