#!/usr/bin/env bash
# Baseline speed of the bdev stack on this machine (not a test): 4 KiB I/O, queue depth 128,
# one pinned, polling core. Runs null randread, malloc randread and randwrite, and measures in
# the same run how many 4 KiB blocks per second one core can memcpy between random offsets of
# a region the malloc bdev's size and 128 buffers, i.e. the work a malloc I/O cannot avoid.
# It also measures how many 4 KiB buffers of such a ring one core can zero-fill per second,
# the work a null read cannot avoid (it returns zeroes): with 128 buffers that is bound by the
# second-level cache, and it caps null randread below the 10 M target on this machine.
# Prints IOPS, malloc IOPS / memcpy blocks-per-second and null IOPS / zero-fill rate.
# Targets: null >= 10 M IOPS per core; malloc >= 80 % of the memcpy rate.
#
# Usage: bench/perf_base.sh [SECONDS]   (default 5 per run; needs python3)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
CORE_MASK=0x1
REGION_BLOCKS=262144   # 1 GiB of 4 KiB blocks

cargo build --release --bin quorum-perf >&2
PERF=target/release/quorum-perf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/bdevs.json" <<EOF
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $REGION_BLOCKS, "block_size": 4096}},
  {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": $REGION_BLOCKS, "block_size": 4096}}
]}]}
EOF

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

run() { # bdev workload [extra flags...]
    local bdev=$1 workload=$2
    shift 2
    "$PERF" -c "$work/bdevs.json" -b "$bdev" -m "$CORE_MASK" -q 128 -o 4096 -w "$workload" \
        -t "$SECONDS_PER_RUN" --output json "$@" | field '["total"]["iops"]'
}

memcpy() { # field: measured right before the malloc run it is compared with (the machine is shared)
    "$PERF" --memcpy-rate $((REGION_BLOCKS * 4096)) -m "$CORE_MASK" -q 128 -o 4096 \
        -t "$SECONDS_PER_RUN" --output json | field "[\"$1\"]"
}

zero_fill=$(memcpy zero_blocks_per_sec)
null_randread=$(run Null0 randread)
# --prefill: a fresh malloc bdev is unbacked anonymous memory; reads would hit the kernel's
# zero page and the first writes would pay page faults, neither of which is the copy cost.
memcpy_read=$(memcpy read_blocks_per_sec)
malloc_randread=$(run Malloc0 randread --prefill)
memcpy_write=$(memcpy write_blocks_per_sec)
malloc_randwrite=$(run Malloc0 randwrite --prefill)

python3 - "$zero_fill" "$memcpy_read" "$memcpy_write" "$null_randread" "$malloc_randread" "$malloc_randwrite" <<'EOF'
import sys
zf, mr, mw, null, rr, rw = map(float, sys.argv[1:])
print(f"{'zero-fill 4 KiB  (blocks/s)':34} {zf:14,.0f}")
print(f"{'memcpy 4 KiB read  (blocks/s)':34} {mr:14,.0f}")
print(f"{'memcpy 4 KiB write (blocks/s)':34} {mw:14,.0f}")
print(f"{'null randread   (IOPS)':34} {null:14,.0f}   {null / zf:6.1%} of zero-fill      (target >= 10,000,000)")
print(f"{'malloc randread  (IOPS)':34} {rr:14,.0f}   {rr / mr:6.1%} of memcpy read   (target >= 80%)")
print(f"{'malloc randwrite (IOPS)':34} {rw:14,.0f}   {rw / mw:6.1%} of memcpy write  (target >= 80%)")
EOF
