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
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"   # say, die, cleanup, apt_install, the build, ...
PACKAGES=(dnsperf nsd unbound pdns-recursor dnsdist dnsmasq dnsutils gcc libc6-dev python3)
SERVICES=(nsd unbound unbound-resolvconf pdns-recursor dnsdist dnsmasq)

ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null)" || die "$HERE is not inside a git checkout"
DATA="${E2E_DATA:-$ROOT/../shared/data}"
[ -d "$DATA/blocklists" ] && [ -f "$DATA/top-domains.csv" ] ||
    die "shared data not found: expected $DATA/blocklists/*.txt and $DATA/top-domains.csv (set E2E_DATA)"
DATA="$(cd "$DATA" && pwd)"
work_dir "${E2E_WORK:-}" e2e
export E2E_PIDFILE="$PIDFILE"   # bench.py appends each process it starts
trap_cleanup

say "work dir $WORK, shared data $DATA"

# 1. Build sinkhole in the background while packages install and data is prepared.
command -v cargo >/dev/null || die "cargo not found: install Rust (edition 2024, 1.95+) first"
start_build

# 2. Debian packages; keep the services they would start from starting.
apt_install "${PACKAGES[@]}"
if [ "$(id -u)" = 0 ]; then  # stop and disable whatever the packages set to start
    stop_services "${SERVICES[@]}"
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
wait_build "cargo build --release failed: see $WORK/build.log"
[ -x "$SINKHOLE" ] || die "no binary at $SINKHOLE"
say "built sinkhole $REV"

# 5. Measure.
python3 "$HERE/bench.py" --work "$WORK" --sinkhole "$SINKHOLE" --floor "$WORK/floor" --rev "$REV" \
    --deadline "$(( T_START + ${E2E_BUDGET:-570} ))"
say "done in $(( $(date +%s) - T_START ))s; table in $WORK/results.md, raw figures in $WORK/results.json"
