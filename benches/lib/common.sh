# shellcheck shell=bash
# What the bench drivers share: benches/e2e/run.sh, benches/soak/run.sh and
# benches/reload/run.sh source this file (after setting T_START, HERE and,
# before calling anything below, ROOT and WORK).
#
#   say, die                  progress and errors on stderr, with the seconds since T_START
#   data_or_skip VAR          $DATA has the shared data, else SKIP (set VAR) and exit 0
#   work_dir DIR NAME         WORK: DIR, or a new /tmp/sinkhole-NAME.XXXXXX; PIDFILE: $WORK/pids, empty
#   trap_cleanup              on any exit, end every process group recorded (cleanup)
#   apt_install PACKAGE...    apt-get install those missing (root; no service starts); MISSING: those
#   stop_services SERVICE...  stop and disable what the packages set to start
#   start_build               cargo build --release in the background (BUILD_PID), log $WORK/build.log
#   binary_or_build           SINKHOLE from SINKHOLE_BIN, or start_build
#   wait_build MESSAGE        wait for start_build (die MESSAGE if it failed); SINKHOLE, REV
#   run_bench COMMAND...      COMMAND in the background (BENCH_PID, for the traps); its exit status

BUILD_PID=""
BENCH_PID=""
POLICY_RC_ADDED=""
PIDFILE=""
MISSING=()

say() { printf '[run.sh %3ds] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

data_or_skip() {
    if ! [ -d "$DATA/blocklists" ] || ! [ -f "$DATA/top-domains.csv" ]; then
        say "SKIP: shared data not found (expected $DATA/blocklists/*.txt and $DATA/top-domains.csv;" \
            "set $1): nothing measured"
        exit 0
    fi
    DATA="$(cd "$DATA" && pwd)"
}

work_dir() {
    WORK="${1:-$(mktemp -d "/tmp/sinkhole-$2.XXXXXX")}"
    mkdir -p "$WORK"
    WORK="$(cd "$WORK" && pwd)"
    PIDFILE="$WORK/pids"
    : > "$PIDFILE"
}

# Every process a run.sh starts is a process-group leader whose pid is in
# $PIDFILE (bench.py appends each), or $BUILD_PID, or bench.py itself
# ($BENCH_PID, run in the background so that a signal reaches the trap at
# once instead of after it); on any exit, end them.
cleanup() {
    local rc=$? pid _
    trap - EXIT INT TERM
    if [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
        kill -TERM -- "-$BUILD_PID" 2>/dev/null || true
    fi
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true     # it stops what it started
        for _ in $(seq 1 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ -s "$PIDFILE" ]; then
        while read -r pid; do
            # only a live group leader we started: /proc/PID/stat field 5 is its pgrp
            if [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $5}' "/proc/$pid/stat" 2>/dev/null)" = "$pid" ]; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
        done < "$PIDFILE"
    fi
    if [ -n "$POLICY_RC_ADDED" ]; then rm -f /usr/sbin/policy-rc.d; fi
    exit "$rc"
}

trap_cleanup() {
    trap cleanup EXIT
    trap 'say "interrupted"; exit 130' INT TERM
}

apt_install() {
    local p
    MISSING=()
    for p in "$@"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$p")
    done
    [ ${#MISSING[@]} -gt 0 ] || return 0
    [ "$(id -u)" = 0 ] || die "need root to install: ${MISSING[*]}"
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # no service starts while we install
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_ADDED=1
    fi
    say "installing ${MISSING[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq > "$WORK/apt.log" 2>&1 || die "apt-get update failed: see $WORK/apt.log"
    apt-get install -y --no-install-recommends "${MISSING[@]}" >> "$WORK/apt.log" 2>&1 ||
        die "apt-get install failed: see $WORK/apt.log"
    if [ -n "$POLICY_RC_ADDED" ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_ADDED=""; fi
}

stop_services() {
    local s
    for s in "$@"; do
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$s" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$s" ]; then
            "/etc/init.d/$s" stop >/dev/null 2>&1 || true
        fi
    done
}

start_build() {
    say "building sinkhole (cargo build --release) in the background; log: $WORK/build.log"
    setsid -w cargo build --release --manifest-path "$ROOT/Cargo.toml" > "$WORK/build.log" 2>&1 &
    BUILD_PID=$!
}

binary_or_build() {
    if [ -n "${SINKHOLE_BIN:-}" ]; then
        SINKHOLE="$(cd "$(dirname "$SINKHOLE_BIN")" && pwd)/$(basename "$SINKHOLE_BIN")"
        [ -x "$SINKHOLE" ] || die "SINKHOLE_BIN=$SINKHOLE_BIN is not an executable"
    else
        command -v cargo >/dev/null || die "cargo not found (or set SINKHOLE_BIN)"
        start_build
    fi
}

wait_build() {
    say "waiting for the build"
    if ! wait "$BUILD_PID"; then
        BUILD_PID=""
        tail -20 "$WORK/build.log" >&2
        die "$1"
    fi
    BUILD_PID=""
    SINKHOLE="$ROOT/target/release/sinkhole"
    # shellcheck disable=SC2034  # REV is the caller's
    REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)"
}

run_bench() {
    local rc=0
    "$@" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    return "$rc"
}
