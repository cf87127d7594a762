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
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"   # say, die, cleanup, the build, ...

ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null)" || die "$HERE is not inside a git checkout"
DATA="${RELOAD_DATA:-${E2E_DATA:-$ROOT/../shared/data}}"
data_or_skip RELOAD_DATA
for b in dnsperf nsd python3 taskset nice; do
    command -v "$b" >/dev/null || die "$b not found (apt-get install dnsperf nsd python3 util-linux, or run benches/e2e/run.sh once)"
done
[ "$(nproc)" -ge 2 ] || die "need at least 2 cores (server on core 0, client on core 1); have $(nproc)"

work_dir "${RELOAD_WORK:-}" reload
OUT="${RELOAD_OUT:-$ROOT/target/bench-reload}"
export RELOAD_PIDFILE="$PIDFILE"   # bench.py appends each process it starts
trap_cleanup

say "work dir $WORK, shared data $DATA"

# 1. The binary: SINKHOLE_BIN, or a release build in the background while the data is prepared.
binary_or_build

# 2. The e2e bench's data (same padded 1M list, same query mix), unless the work dir has it.
if [ -s "$WORK/union1m.txt" ] && [ -s "$WORK/q_mixed.txt" ] && grep -qs '"ready1m"' "$WORK/probes.json"; then
    say "reusing the lists and query files in $WORK"
else
    say "preparing lists and query files (benches/e2e/prep.py)"
    python3 "$ROOT/benches/e2e/prep.py" "$DATA" "$WORK" >&2
fi

# 3. Wait for the build.
if [ -n "$BUILD_PID" ]; then
    wait_build "cargo build --release failed (see $WORK/build.log); to measure an existing binary, set SINKHOLE_BIN"
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
rc=0
run_bench python3 "$HERE/bench.py" --work "$WORK" --sinkhole "$SINKHOLE" --out "$OUT" --rev "$REV" "${FLOOR[@]}" ||
    rc=$?
[ "$rc" = 0 ] || die "bench.py failed (exit $rc)"
say "done in $(( $(date +%s) - T_START ))s; table in $OUT/result.md, raw figures in $OUT/result.json"
