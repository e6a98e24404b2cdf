#!/usr/bin/env bash
# A/B of two quorum-perf binaries (not a test): a quorum of 3 mallocs and a quorum of 3 nulls,
# 4 KiB randread and randwrite at QD 128 on one polling core, old and new binary alternating
# run by run so that the shared machine's load drifts over both alike. Prints each side's
# median IOPS and new/old per case, and the load average before and after (a loaded machine
# gives figures far below a quiet one's; the ratio is what the A/B is for).
#
# Usage: bench/ab_quorum.sh OLD_PERF NEW_PERF [PAIRS] [SECONDS]   (default 5 pairs of 2 s)
set -euo pipefail
OLD=$1 NEW=$2 PAIRS=${3:-5} SECONDS_PER_RUN=${4:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

config() { # module: three children of 65536 4 KiB blocks and quorum Q over them
    local module=$1 kids=""
    echo '{"subsystems": [{"subsystem": "bdev", "config": ['
    for i in 0 1 2; do
        echo "{\"method\": \"bdev_${module}_create\", \"params\": {\"name\": \"C$i\", \"num_blocks\": 65536, \"block_size\": 4096}},"
    done
    echo '{"method": "bdev_quorum_create", "params": {"name": "Q", "base_bdevs": ["C0", "C1", "C2"], "vote_threshold": 2}}'
    echo ']}]}'
}
config malloc >"$work/malloc.json"
config null >"$work/null.json"

iops() { # binary module workload
    "$1" -c "$work/$2.json" -b Q -m 0x1 -q 128 -o 4096 -w "$3" -t "$SECONDS_PER_RUN" --prefill \
        --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["iops"])'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for module in malloc null; do
    for workload in randread randwrite; do
        old=() new=()
        for _ in $(seq "$PAIRS"); do
            old+=("$(iops "$OLD" "$module" "$workload")")
            new+=("$(iops "$NEW" "$module" "$workload")")
        done
        python3 - "$module" "$workload" "${old[*]}" "${new[*]}" <<'EOF'
import statistics, sys
module, workload, old, new = sys.argv[1], sys.argv[2], *(list(map(float, s.split())) for s in sys.argv[3:])
mo, mn = statistics.median(old), statistics.median(new)
print(f"quorum of 3 {module:6} {workload:9}  old {mo:12,.0f}  new {mn:12,.0f}  new/old {mn / mo:.3f}"
      f"   (old {min(old):,.0f}-{max(old):,.0f}, new {min(new):,.0f}-{max(new):,.0f}, {len(old)} pairs)")
EOF
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
