#!/usr/bin/env bash
# Soak benchmark: sinkhole for N minutes (default 10) at a high fixed query
# rate over loopback, with 5% malformed packets and a slowloris client on
# the side; records loss, RSS over time, p99 latency and whether the
# process ever died. See README.md beside this file.
#
#   benches/soak/run.sh                         # builds, then 10 minutes; prints results.md
#   benches/soak/run.sh --minutes 2             # a short trial
#   SINKHOLE_BIN=target/release/sinkhole benches/soak/run.sh   # no build: this binary
#
# Environment: SOAK_MINUTES (10; --minutes wins), SOAK_QPS (20000),
# SOAK_WORK (work dir; default a new /tmp/sinkhole-soak.XXXXXX), SOAK_DATA
# (default $E2E_DATA, else $(git rev-parse --show-toplevel)/../shared/data),
# SINKHOLE_BIN (and SOAK_REV, its label in the report), and bench.py's
# tunables (SOAK_GARBAGE_PCT, SOAK_SLOWLORIS_DNS, SOAK_PROBE_QPS, ...).
# Exit status: 0 when legitimate loss < 0.1% and the server never died or
# restarted; 1 otherwise (or on an error); 0 with "SKIP" without shared data.
set -euo pipefail

T_START=$(date +%s)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGES=(dnsperf nsd python3 util-linux)
say() { printf '[run.sh %3ds] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

MINUTES="${SOAK_MINUTES:-10}"
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) [ $# -ge 2 ] || die "--minutes needs a number"; MINUTES="$2"; shift 2 ;;
        --minutes=*) MINUTES="${1#--minutes=}"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (only --minutes N)" ;;
    esac
done
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--minutes $MINUTES: not a number"

ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null)" || die "$HERE is not inside a git checkout"
DATA="${SOAK_DATA:-${E2E_DATA:-$ROOT/../shared/data}}"
if ! [ -d "$DATA/blocklists" ] || ! [ -f "$DATA/top-domains.csv" ]; then
    say "SKIP: shared data not found (expected $DATA/blocklists/*.txt and $DATA/top-domains.csv;" \
        "set SOAK_DATA): nothing measured"
    exit 0
fi
DATA="$(cd "$DATA" && pwd)"
[ "$(nproc)" -ge 2 ] || die "need at least 2 cores (server on core 0, load on core 1); have $(nproc)"

WORK="${SOAK_WORK:-$(mktemp -d /tmp/sinkhole-soak.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
export SOAK_PIDFILE="$WORK/pids"
: > "$SOAK_PIDFILE"
BUILD_PID=""
BENCH_PID=""
POLICY_RC_ADDED=""

# Every process started here is a process-group leader whose pid is in
# $SOAK_PIDFILE (bench.py appends each: NSD, sinkhole, dnsperf, the agents),
# or $BUILD_PID, or bench.py itself ($BENCH_PID, run in the background so
# that a signal reaches this trap at once); on any exit, end them.
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
    if [ -s "$SOAK_PIDFILE" ]; then
        while read -r pid; do
            # only a live group leader we started: /proc/PID/stat field 5 is its pgrp
            if [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $5}' "/proc/$pid/stat" 2>/dev/null)" = "$pid" ]; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
        done < "$SOAK_PIDFILE"
    fi
    if [ -n "$POLICY_RC_ADDED" ]; then rm -f /usr/sbin/policy-rc.d; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

say "work dir $WORK, shared data $DATA, $MINUTES minutes"

# 1. The binary: SINKHOLE_BIN, or a release build in the background while packages install.
if [ -n "${SINKHOLE_BIN:-}" ]; then
    SINKHOLE="$(cd "$(dirname "$SINKHOLE_BIN")" && pwd)/$(basename "$SINKHOLE_BIN")"
    [ -x "$SINKHOLE" ] || die "SINKHOLE_BIN=$SINKHOLE_BIN is not an executable"
else
    command -v cargo >/dev/null || die "cargo not found (or set SINKHOLE_BIN)"
    say "building sinkhole (cargo build --release) in the background; log: $WORK/build.log"
    setsid -w cargo build --release --manifest-path "$ROOT/Cargo.toml" > "$WORK/build.log" 2>&1 &
    BUILD_PID=$!
fi

# 2. Debian packages; keep the services they would start from starting.
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # no service starts while we install
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_ADDED=1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq > "$WORK/apt.log" 2>&1 || die "apt-get update failed: see $WORK/apt.log"
    apt-get install -y --no-install-recommends "${missing[@]}" >> "$WORK/apt.log" 2>&1 ||
        die "apt-get install failed: see $WORK/apt.log"
    if [ -n "$POLICY_RC_ADDED" ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_ADDED=""; fi
    if [ -d /run/systemd/system ]; then     # NSD's packaged service: not ours to run
        systemctl disable --now nsd >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/nsd ]; then
        /etc/init.d/nsd stop >/dev/null 2>&1 || true
    fi
fi
for b in dnsperf nsd python3 taskset nice; do
    command -v "$b" >/dev/null || die "$b not found after install"
done

# 3. Wait for the build.
if [ -n "$BUILD_PID" ]; then
    say "waiting for the build"
    if ! wait "$BUILD_PID"; then
        BUILD_PID=""
        tail -20 "$WORK/build.log" >&2
        die "cargo build --release failed (see $WORK/build.log); to soak an existing binary, set SINKHOLE_BIN"
    fi
    BUILD_PID=""
    SINKHOLE="$ROOT/target/release/sinkhole"
    REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)"
else
    REV="${SOAK_REV:-$SINKHOLE ($(date -u -r "$SINKHOLE" +%FT%TZ))}"
fi
[ -x "$SINKHOLE" ] || die "no binary at $SINKHOLE"
say "sinkhole $REV"

# 4. The soak (bench.py bounds itself: the soak plus 10 minutes at most).
rc=0
python3 "$HERE/bench.py" --work "$WORK" --sinkhole "$SINKHOLE" --data "$DATA" --rev "$REV" --minutes "$MINUTES" &
BENCH_PID=$!
wait "$BENCH_PID" || rc=$?
BENCH_PID=""
if [ "$rc" != 0 ]; then
    if [ -s "$WORK/results.md" ]; then
        say "FAILED a target (see above): results in $WORK/results.md, every sample in $WORK/results.json"
    else
        say "bench.py failed (exit $rc) before writing results; logs in $WORK"
    fi
    exit "$rc"
fi
say "done in $(( $(date +%s) - T_START ))s; results in $WORK/results.md, every sample in $WORK/results.json"
