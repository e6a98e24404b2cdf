#!/usr/bin/env bash
# vhost-user-blk export benchmark (not a test): the same libblkio load generator
# (examples/vhost_load.rs: one poll queue, 4 KiB, QD 32, random offsets) against
#   quorum-tgt          : a quorum of 3 (threshold 2) and one child alone, over null bdevs and
#                         over aio bdevs on raw files in /dev/shm;
#   qemu-storage-daemon : QEMU's quorum of 3 (vote-threshold 2) and one child alone, over
#                         null-co (read-zeroes) and over the same kind of raw files
#                         (aio=native, cache.direct=on: its best quorum mode for reads here);
# each exported with vhost-user-blk on a Unix socket, in one run. Prints IOPS and the ratios
# the issue sets goals on (ours / QEMU's quorum), and writes them to bench/vhost-RESULTS.md.
#
# Placement: the daemon on core 0 (quorum-tgt -m 0x1 busy-polling; qemu-storage-daemon
# pinned with taskset), the load generator on core 1.
#
# Usage: bench/vhost_blk.sh [SECONDS]   (builds what it runs)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${1:-10}
SIZE_MIB=512
cargo build --release --bins --example vhost_load >&2
TGT=target/release/quorum-tgt
LOAD=target/release/examples/vhost_load
for tool in qemu-storage-daemon spdk-rpc taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool (scripts/test-all installs it)" >&2; exit 1; }
done

WORK=$(mktemp -d /dev/shm/vhost_bench.XXXXXX)
PID=
stop_daemon() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    PID=
}
cleanup() { stop_daemon; rm -rf "$WORK"; }
trap cleanup EXIT

# Identical children, so quorum reads agree.
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/c0.raw"
for i in 1 2; do cp "$WORK/c0.raw" "$WORK/c$i.raw"; done
cp "$WORK/c0.raw" "$WORK/single.raw"

wait_socket() {
    for _ in $(seq 400); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 never appeared" >&2; exit 1
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A IOPS
measure() { # label socket
    for rw in randread randwrite; do
        IOPS[$1,$rw]=$(taskset -c 1 "$LOAD" "$2" "$rw" "$RUNTIME" 32 4096 | awk '/^IOPS/ {print $2}')
        printf '%-28s %-10s %10s IOPS\n' "$1" "$rw" "${IOPS[$1,$rw]}" >&2
    done
}

ours() { # label rpc-script
    local sock=$WORK/rpc.sock
    "$TGT" -m 0x1 -r "$sock" -S "$WORK" >"$WORK/tgt.log" 2>&1 &
    PID=$!
    wait_socket "$sock"
    printf '%b' "$2" | PYTHONPATH=python spdk-rpc -s "$sock" --plugin quorum_rpc_plugin >/dev/null
    wait_socket "$WORK/vb"
    measure "$1" "$WORK/vb"
    stop_daemon
}

qemu() { # label blockdev-args...
    local label=$1; shift
    rm -f "$WORK/qsd.sock"
    taskset -c 0 qemu-storage-daemon "$@" \
        --export type=vhost-user-blk,id=e,node-name=top,addr.type=unix,addr.path="$WORK/qsd.sock",writable=on \
        >"$WORK/qsd.log" 2>&1 &
    PID=$!
    wait_socket "$WORK/qsd.sock"
    measure "$label" "$WORK/qsd.sock"
    stop_daemon
}

ours quorum3-null "bdev_null_create N0 $SIZE_MIB 4096\nbdev_null_create N1 $SIZE_MIB 4096\nbdev_null_create N2 $SIZE_MIB 4096\nbdev_quorum_create -b Q -t 2 N0 N1 N2\nvhost_create_blk_controller vb Q\n"
ours null "bdev_null_create N0 $SIZE_MIB 4096\nvhost_create_blk_controller vb N0\n"
ours quorum3-aio-shm "bdev_aio_create $WORK/c0.raw A0 4096\nbdev_aio_create $WORK/c1.raw A1 4096\nbdev_aio_create $WORK/c2.raw A2 4096\nbdev_quorum_create -b Q -t 2 A0 A1 A2\nvhost_create_blk_controller vb Q\n"
ours aio-shm "bdev_aio_create $WORK/single.raw A0 4096\nvhost_create_blk_controller vb A0\n"

null_co() { echo "driver=null-co,node-name=$1,size=$((SIZE_MIB << 20)),read-zeroes=on"; }
raw() { echo "driver=raw,node-name=$1,file.driver=file,file.filename=$2,file.aio=native,file.cache.direct=on"; }
qemu qemu-quorum3-null-co --blockdev "$(null_co n0)" --blockdev "$(null_co n1)" --blockdev "$(null_co n2)" \
    --blockdev driver=quorum,node-name=top,children.0=n0,children.1=n1,children.2=n2,vote-threshold=2
qemu qemu-null-co --blockdev "$(null_co top)"
qemu qemu-quorum3-raw-shm --blockdev "$(raw r0 "$WORK/c0.raw")" --blockdev "$(raw r1 "$WORK/c1.raw")" \
    --blockdev "$(raw r2 "$WORK/c2.raw")" \
    --blockdev driver=quorum,node-name=top,children.0=r0,children.1=r1,children.2=r2,vote-threshold=2
qemu qemu-raw-shm --blockdev "$(raw top "$WORK/single.raw")"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
{
    echo "# vhost-user-blk: quorum-tgt vs qemu-storage-daemon"
    echo
    echo "One run of \`bench/vhost_blk.sh $RUNTIME\` at $(git rev-parse --short HEAD), $(date -u +%F):"
    echo "libblkio, one poll queue, 4 KiB, QD 32, ${RUNTIME} s per point; daemon on core 0, load on core 1."
    echo "Load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (figures from"
    echo "a machine whose load exceeds its 2 CPUs measure the sharing, not the daemons)."
    echo
    echo "| target | randread IOPS | randwrite IOPS |"
    echo "|---|---|---|"
    for t in quorum3-null null quorum3-aio-shm aio-shm qemu-quorum3-null-co qemu-null-co qemu-quorum3-raw-shm qemu-raw-shm; do
        echo "| $t | ${IOPS[$t,randread]} | ${IOPS[$t,randwrite]} |"
    done
    echo
    echo "| ratio (goal) | randread | randwrite |"
    echo "|---|---|---|"
    echo "| our quorum3-null / QEMU quorum3-null-co (>= 3) | $(ratio "${IOPS[quorum3-null,randread]}" "${IOPS[qemu-quorum3-null-co,randread]}") | $(ratio "${IOPS[quorum3-null,randwrite]}" "${IOPS[qemu-quorum3-null-co,randwrite]}") |"
    echo "| our quorum3-aio-shm / QEMU quorum3-raw-shm (>= 1.5) | $(ratio "${IOPS[quorum3-aio-shm,randread]}" "${IOPS[qemu-quorum3-raw-shm,randread]}") | $(ratio "${IOPS[quorum3-aio-shm,randwrite]}" "${IOPS[qemu-quorum3-raw-shm,randwrite]}") |"
    echo "| our quorum3-null / our null | $(ratio "${IOPS[quorum3-null,randread]}" "${IOPS[null,randread]}") | $(ratio "${IOPS[quorum3-null,randwrite]}" "${IOPS[null,randwrite]}") |"
    echo "| our null / QEMU null-co | $(ratio "${IOPS[null,randread]}" "${IOPS[qemu-null-co,randread]}") | $(ratio "${IOPS[null,randwrite]}" "${IOPS[qemu-null-co,randwrite]}") |"
} | tee bench/vhost-RESULTS.md
