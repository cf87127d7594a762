#!/usr/bin/env bash
# End-to-end benchmark: sinkhole against Unbound, PowerDNS Recursor, dnsdist
# and dnsmasq on one machine over loopback, same blocklist, same upstream
# (NSD serving a wildcard private root). See README.md beside this file.
#
#   benches/e2e/run.sh            # installs what it needs (apt, as root), builds, runs
#
# Environment: E2E_WORK (work dir; default a new /tmp/sinkhole-e2e.XXXXXX),
# E2E_DATA (default $(git rev-parse --show-toplevel)/../shared/data),
# E2E_BUDGET (seconds the whole run may take, default 570: a third round runs
# only if it fits), and bench.py's tunables (E2E_ROUNDS, E2E_SECONDS, ...).
set -euo pipefail

T_START=$(date +%s)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGES=(dnsperf nsd unbound pdns-recursor dnsdist dnsmasq dnsutils gcc libc6-dev python3)
SERVICES=(nsd unbound unbound-resolvconf pdns-recursor dnsdist dnsmasq)

say() { printf '[run.sh %3ds] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null)" || die "$HERE is not inside a git checkout"
DATA="${E2E_DATA:-$ROOT/../shared/data}"
[ -d "$DATA/blocklists" ] && [ -f "$DATA/top-domains.csv" ] ||
    die "shared data not found: expected $DATA/blocklists/*.txt and $DATA/top-domains.csv (set E2E_DATA)"
DATA="$(cd "$DATA" && pwd)"
WORK="${E2E_WORK:-$(mktemp -d /tmp/sinkhole-e2e.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
export E2E_PIDFILE="$WORK/pids"
: > "$E2E_PIDFILE"
BUILD_PID=""
POLICY_RC_ADDED=""

# Every process this script starts is a process-group leader whose pid is in
# $E2E_PIDFILE (bench.py appends them) or $BUILD_PID; on any exit, end them.
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
        kill -TERM -- "-$BUILD_PID" 2>/dev/null || true
    fi
    if [ -s "$E2E_PIDFILE" ]; then
        while read -r pid; do
            # only a live group leader we started: /proc/PID/stat field 5 is its pgrp
            if [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $5}' "/proc/$pid/stat" 2>/dev/null)" = "$pid" ]; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
        done < "$E2E_PIDFILE"
    fi
    if [ -n "$POLICY_RC_ADDED" ]; then rm -f /usr/sbin/policy-rc.d; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

say "work dir $WORK, shared data $DATA"

# 1. Build sinkhole in the background while packages install and data is prepared.
command -v cargo >/dev/null || die "cargo not found: install Rust (edition 2024, 1.95+) first"
say "building sinkhole (cargo build --release) in the background; log: $WORK/build.log"
setsid -w cargo build --release --manifest-path "$ROOT/Cargo.toml" > "$WORK/build.log" 2>&1 &
BUILD_PID=$!

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
fi
if [ "$(id -u)" = 0 ]; then  # stop and disable whatever the packages set to start
    for s in "${SERVICES[@]}"; do
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$s" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$s" ]; then
            "/etc/init.d/$s" stop >/dev/null 2>&1 || true
        fi
    done
fi
for b in dnsperf nsd unbound pdns_recursor dnsdist dnsmasq dig taskset gcc python3; do
    command -v "$b" >/dev/null || die "$b not found after install"
done
[ "$(nproc)" -ge 2 ] || die "need at least 2 cores (server on core 0, client on core 1); have $(nproc)"

# 3. Data and every peer's list file, while the build runs.
say "preparing lists and query files"
python3 "$HERE/prep.py" "$DATA" "$WORK" >&2
python3 "$HERE/bench.py" --work "$WORK" --prepare >&2
gcc -O2 -Wall -o "$WORK/floor" "$HERE/floor.c"

# 4. Wait for the build.
say "waiting for the build"
if ! wait "$BUILD_PID"; then
    BUILD_PID=""
    tail -20 "$WORK/build.log" >&2
    die "cargo build --release failed: see $WORK/build.log"
fi
BUILD_PID=""
SINKHOLE="$ROOT/target/release/sinkhole"
[ -x "$SINKHOLE" ] || die "no binary at $SINKHOLE"
REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)"
say "built sinkhole $REV"

# 5. Measure.
python3 "$HERE/bench.py" --work "$WORK" --sinkhole "$SINKHOLE" --floor "$WORK/floor" --rev "$REV" \
    --deadline "$(( T_START + ${E2E_BUDGET:-570} ))"
say "done in $(( $(date +%s) - T_START ))s; table in $WORK/results.md, raw figures in $WORK/results.json"
