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
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"   # say, die, cleanup, apt_install, the build, ...
PACKAGES=(dnsperf nsd python3 util-linux)

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
data_or_skip SOAK_DATA
[ "$(nproc)" -ge 2 ] || die "need at least 2 cores (server on core 0, load on core 1); have $(nproc)"

work_dir "${SOAK_WORK:-}" soak
export SOAK_PIDFILE="$PIDFILE"
# bench.py appends to $SOAK_PIDFILE each process it starts: NSD, sinkhole,
# dnsperf, the agents.
trap_cleanup

say "work dir $WORK, shared data $DATA, $MINUTES minutes"

# 1. The binary: SINKHOLE_BIN, or a release build in the background while packages install.
binary_or_build

# 2. Debian packages; keep the services they would start from starting.
apt_install "${PACKAGES[@]}"
if [ ${#MISSING[@]} -gt 0 ]; then
    stop_services nsd   # NSD's packaged service: not ours to run
fi
for b in dnsperf nsd python3 taskset nice; do
    command -v "$b" >/dev/null || die "$b not found after install"
done

# 3. Wait for the build.
if [ -n "$BUILD_PID" ]; then
    wait_build "cargo build --release failed (see $WORK/build.log); to soak an existing binary, set SINKHOLE_BIN"
else
    REV="${SOAK_REV:-$SINKHOLE ($(date -u -r "$SINKHOLE" +%FT%TZ))}"
fi
[ -x "$SINKHOLE" ] || die "no binary at $SINKHOLE"
say "sinkhole $REV"

# 4. The soak (bench.py bounds itself: the soak plus 10 minutes at most).
rc=0
run_bench python3 "$HERE/bench.py" --work "$WORK" --sinkhole "$SINKHOLE" --data "$DATA" --rev "$REV" \
    --minutes "$MINUTES" || rc=$?
if [ "$rc" != 0 ]; then
    if [ -s "$WORK/results.md" ]; then
        say "FAILED a target (see above): results in $WORK/results.md, every sample in $WORK/results.json"
    else
        say "bench.py failed (exit $rc) before writing results; logs in $WORK"
    fi
    exit "$rc"
fi
say "done in $(( $(date +%s) - T_START ))s; results in $WORK/results.md, every sample in $WORK/results.json"
