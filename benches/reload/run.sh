#!/usr/bin/env bash
# Reload benchmark: sinkhole at a fixed query rate over loopback, first
# without reloads, then while its ~1,000,000-name list is rewritten and
# reloaded every 2 s. See README.md beside this file.
#
#   benches/reload/run.sh                      # builds, runs (~2 min plus the build), prints the table
#   SINKHOLE_BIN=target/release/sinkhole benches/reload/run.sh   # no build: measure this binary
#   RELOAD_TRIGGER=sighup benches/reload/run.sh                  # or watch
#
# Environment: RELOAD_WORK (work dir; default a new /tmp/sinkhole-reload.XXXXXX),
# RELOAD_DATA (default $E2E_DATA, else $(git rev-parse --show-toplevel)/../shared/data),
# RELOAD_OUT (result.md and result.json; default target/bench-reload), SINKHOLE_BIN
# (and RELOAD_REV, its label in the report), RELOAD_FLOOR=0 (no floor run),
# and bench.py's tunables (RELOAD_QPS, RELOAD_SECONDS, RELOAD_TRIGGER, ...).
# Needs dnsperf, nsd, python3, taskset and 2 cores (benches/e2e/run.sh
# installs the first two; or apt-get install dnsperf nsd).
set -euo pipefail

T_START=$(date +%s)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf '[run.sh %3ds] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null)" || die "$HERE is not inside a git checkout"
DATA="${RELOAD_DATA:-${E2E_DATA:-$ROOT/../shared/data}}"
if ! [ -d "$DATA/blocklists" ] || ! [ -f "$DATA/top-domains.csv" ]; then
    say "SKIP: shared data not found (expected $DATA/blocklists/*.txt and $DATA/top-domains.csv;" \
        "set RELOAD_DATA): nothing measured"
    exit 0
fi
DATA="$(cd "$DATA" && pwd)"
for b in dnsperf nsd python3 taskset nice; do
    command -v "$b" >/dev/null || die "$b not found (apt-get install dnsperf nsd python3 util-linux, or run benches/e2e/run.sh once)"
done
[ "$(nproc)" -ge 2 ] || die "need at least 2 cores (server on core 0, client on core 1); have $(nproc)"

WORK="${RELOAD_WORK:-$(mktemp -d /tmp/sinkhole-reload.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
OUT="${RELOAD_OUT:-$ROOT/target/bench-reload}"
export RELOAD_PIDFILE="$WORK/pids"
: > "$RELOAD_PIDFILE"
BUILD_PID=""
BENCH_PID=""

# Every process started here is a process-group leader whose pid is in
# $RELOAD_PIDFILE (bench.py appends them), or $BUILD_PID, or bench.py itself
# ($BENCH_PID, run in the background so that a signal reaches this trap at
# once instead of after it); on any exit, end them.
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    if [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
        kill -TERM -- "-$BUILD_PID" 2>/dev/null || true
    fi
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true     # it stops what it started
        for i in $(seq 1 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ -s "$RELOAD_PIDFILE" ]; then
        while read -r pid; do
            # only a live group leader we started: /proc/PID/stat field 5 is its pgrp
            if [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $5}' "/proc/$pid/stat" 2>/dev/null)" = "$pid" ]; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
        done < "$RELOAD_PIDFILE"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

say "work dir $WORK, shared data $DATA"

# 1. The binary: SINKHOLE_BIN, or a release build in the background while the data is prepared.
if [ -n "${SINKHOLE_BIN:-}" ]; then
    SINKHOLE="$(cd "$(dirname "$SINKHOLE_BIN")" && pwd)/$(basename "$SINKHOLE_BIN")"
    [ -x "$SINKHOLE" ] || die "SINKHOLE_BIN=$SINKHOLE_BIN is not an executable"
else
    command -v cargo >/dev/null || die "cargo not found (or set SINKHOLE_BIN)"
    say "building sinkhole (cargo build --release) in the background; log: $WORK/build.log"
    setsid -w cargo build --release --manifest-path "$ROOT/Cargo.toml" > "$WORK/build.log" 2>&1 &
    BUILD_PID=$!
fi

# 2. The e2e bench's data (same padded 1M list, same query mix), unless the work dir has it.
if [ -s "$WORK/union1m.txt" ] && [ -s "$WORK/q_mixed.txt" ] && grep -qs '"ready1m"' "$WORK/probes.json"; then
    say "reusing the lists and query files in $WORK"
else
    say "preparing lists and query files (benches/e2e/prep.py)"
    python3 "$ROOT/benches/e2e/prep.py" "$DATA" "$WORK" >&2
fi

# 3. Wait for the build.
if [ -n "$BUILD_PID" ]; then
    say "waiting for the build"
    if ! wait "$BUILD_PID"; then
        BUILD_PID=""
        tail -20 "$WORK/build.log" >&2
        die "cargo build --release failed (see $WORK/build.log); to measure an existing binary, set SINKHOLE_BIN"
    fi
    BUILD_PID=""
    SINKHOLE="$ROOT/target/release/sinkhole"
    REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)"
else
    REV="${RELOAD_REV:-$SINKHOLE ($(date -u -r "$SINKHOLE" +%FT%TZ))}"
fi
[ -x "$SINKHOLE" ] || die "no binary at $SINKHOLE"
say "sinkhole $REV"

# 4. The e2e bench's floor responder, for the same load against no DNS work at all first.
FLOOR=()
if [ "${RELOAD_FLOOR:-1}" != 0 ]; then
    if command -v gcc >/dev/null && gcc -O2 -Wall -o "$WORK/floor" "$ROOT/benches/e2e/floor.c" 2> "$WORK/floor-build.log"; then
        FLOOR=(--floor "$WORK/floor")
    else
        say "no floor run: cannot build benches/e2e/floor.c (gcc; see $WORK/floor-build.log)"
    fi
fi

# 5. Measure (bench.py bounds every step: load 90 s, each run RELOAD_SECONDS + 30 s).
python3 "$HERE/bench.py" --work "$WORK" --sinkhole "$SINKHOLE" --out "$OUT" --rev "$REV" "${FLOOR[@]}" &
BENCH_PID=$!
rc=0
wait "$BENCH_PID" || rc=$?
BENCH_PID=""
[ "$rc" = 0 ] || die "bench.py failed (exit $rc)"
say "done in $(( $(date +%s) - T_START ))s; table in $OUT/result.md, raw figures in $OUT/result.json"
