#!/usr/bin/env bash
# Runs sinkhole's fuzz targets one after another (never two at once).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   default: 60 s, all targets
#   fuzz/run.sh --totals                            time and execs per target, all runs
#   FUZZ_PARALLEL=1 fuzz/run.sh ...                 skip the one-at-a-time lock
#
# Each target fuzzes its working corpus fuzz/corpus/<target>/ (grown here,
# not committed) with the committed seeds fuzz/seeds/<target>/ as a second
# input directory. One summary line per target; each run is also appended
# to fuzz/runs.jsonl. Crashes go to fuzz/artifacts/<target>/; the exit
# status is 1 when any target crashed, 2 when one did not build.
set -euo pipefail

FUZZ="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$FUZZ")"
RUNS="$FUZZ/runs.jsonl"
ALL=(query upstream_answer list_domains list_hosts list_adblock list_wildcard list_rpz config)

if [[ "${1:-}" == "--totals" ]]; then
    [[ -f "$RUNS" ]] || { echo "no runs yet ($RUNS)"; exit 0; }
    python3 - "$RUNS" <<'EOF'
import json, sys
totals = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    t = totals.setdefault(r["target"], {"runs": 0, "seconds": 0, "execs": 0, "crashes": 0})
    t["runs"] += 1
    t["seconds"] += r["seconds"]
    t["execs"] += r["execs"]
    t["crashes"] += 1 if r["crash"] else 0
print(f"{'target':16} {'runs':>5} {'seconds':>9} {'execs':>13} {'crashes':>8}")
for name, t in sorted(totals.items()):
    print(f"{name:16} {t['runs']:5} {t['seconds']:9} {t['execs']:13} {t['crashes']:8}")
EOF
    exit 0
fi

SECONDS_PER="${1:-60}"
[[ "$SECONDS_PER" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...] | --totals" >&2; exit 64; }
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
    [[ " ${ALL[*]} " == *" $t "* ]] || { echo "unknown target: $t (one of: ${ALL[*]})" >&2; exit 64; }
done

# One fuzzer at a time on this machine, even from two shells, unless
# FUZZ_PARALLEL=1 says the caller has a core for each (then give each shell
# different targets).
exec 9>"$FUZZ/.run.lock"
if [[ "${FUZZ_PARALLEL:-0}" != 1 ]] && command -v flock >/dev/null && ! flock -n 9; then
    echo "another fuzz/run.sh is running" >&2
    exit 3
fi

mkdir -p "$FUZZ/logs"
cd "$ROOT"
status=0
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    log="$FUZZ/logs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
    started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    t0=$(date +%s)
    rc=0
    nice -n 10 cargo +nightly fuzz run "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_PER" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    wall=$(( $(date +%s) - t0 ))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    ran=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 | awk '{print $5}' || true)
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | awk '{print $5}' || true)
    size=$(find "$corpus" -type f | wc -l)
    if [[ -z "$execs" && -z "$artifact" && $rc -ne 0 ]]; then
        echo "$t: did not run (exit $rc); see $log" >&2
        tail -20 "$log" >&2
        status=2
        continue
    fi
    secs="${ran:-$wall}"
    if [[ -n "$artifact" || $rc -ne 0 ]]; then
        result="crash ${artifact:-(exit $rc, see $log)}"
        status=$(( status > 1 ? status : 1 ))
    else
        result="ok"
    fi
    printf '%-16s %6ss %12s execs  corpus %6s  %s\n' "$t" "$secs" "${execs:-0}" "$size" "$result"
    printf '{"target":"%s","started":"%s","seconds":%s,"execs":%s,"corpus":%s,"crash":%s,"log":"%s"}\n' \
        "$t" "$started" "$secs" "${execs:-0}" "$size" \
        "$( [[ -n "$artifact" ]] && printf '"%s"' "$artifact" || { [[ $rc -ne 0 ]] && printf '"exit %s"' "$rc" || printf null; } )" \
        "${log#"$ROOT"/}" >>"$RUNS"
done
exit "$status"
