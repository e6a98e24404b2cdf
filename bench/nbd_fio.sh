#!/usr/bin/env bash
# NBD export benchmark (not a test): the same fio job (nbd engine, 4 KiB, QD 32, one job,
# 10 s, randread then randwrite) against
#   (a) quorum-tgt: a quorum of 3 (threshold 2) over uring and over aio children on raw
#       files in /dev/shm (and, for reference, over malloc children),
#   (b) qemu-storage-daemon: QEMU's quorum of 3 (vote-threshold 2) over the same kind of
#       raw files in /dev/shm,
#   (c) qemu-storage-daemon: a single raw file in /dev/shm,
# QEMU's twice, with its default file options and with aio=native,cache.direct=on (its best
# here); each exported over NBD on a Unix socket. Prints IOPS and our ratios to QEMU's.
#
# Placement on a small machine: the server runs on core 0 (quorum-tgt with -m 0x1, polling;
# qemu-storage-daemon pinned there with taskset), fio on core 1.
#
# Usage: bench/nbd_fio.sh [SECONDS]   (needs a release build: cargo build --release --bins)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${1:-10}
SIZE_MIB=256
TGT=target/release/quorum-tgt
[ -x "$TGT" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
for tool in fio qemu-storage-daemon spdk-rpc taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool (scripts/test-all installs it)" >&2; exit 1; }
done

WORK=$(mktemp -d /dev/shm/nbd_bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Identical children, so quorum reads agree.
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/c0.raw"
for i in 1 2; do cp "$WORK/c0.raw" "$WORK/c$i.raw"; done
cp "$WORK/c0.raw" "$WORK/single.raw"
for i in 0 1 2; do cp "$WORK/c0.raw" "$WORK/q$i.raw"; done

wait_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 never appeared" >&2; exit 1
}

# fio IOPS for one workload against an NBD URI.
run_fio() { # uri rw
    fio --name=bench --ioengine=nbd --uri="$1" --rw="$2" --bs=4k --iodepth=32 --numjobs=1 \
        --size=${SIZE_MIB}M --time_based --runtime="$RUNTIME" --cpus_allowed=1 \
        --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))'
}

declare -A IOPS
measure() { # label uri
    for rw in randread randwrite; do
        IOPS[$1,$rw]=$(run_fio "$2" "$rw")
        printf '%-34s %-10s %10s IOPS\n' "$1" "$rw" "${IOPS[$1,$rw]}"
    done
}

ours() { # label children-kind
    local dir="$WORK/tgt_$2"
    mkdir -p "$dir"
    "$TGT" -m 0x1 -r "$dir/rpc.sock" 2>"$dir/log" &
    PIDS+=($!)
    wait_socket "$dir/rpc.sock"
    local script=""
    for i in 0 1 2; do
        case "$2" in
            uring) script+="bdev_uring_create $WORK/c$i.raw C$i 512"$'\n' ;;
            aio) script+="bdev_aio_create $WORK/c$i.raw C$i 512"$'\n' ;;
            *) script+="bdev_malloc_create -b C$i $SIZE_MIB 512"$'\n' ;;
        esac
    done
    script+="bdev_quorum_create -b Q -t 2 C0 C1 C2"$'\n'
    script+="nbd_server_start $dir/nbd.sock"$'\n'"nbd_export_create Q"$'\n'
    PYTHONPATH=python PYTHONDONTWRITEBYTECODE=1 \
        spdk-rpc -s "$dir/rpc.sock" --plugin quorum_rpc_plugin <<<"$script" >/dev/null
    measure "$1" "nbd+unix:///Q?socket=$dir/nbd.sock"
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
}

qsd() { # label socket blockdev-args...
    local label=$1 sock=$2
    shift 2
    taskset -c 0 qemu-storage-daemon "$@" \
        --nbd-server addr.type=unix,addr.path="$sock" \
        --export type=nbd,id=e,node-name=q,name=q,writable=on 2>"$sock.log" &
    PIDS+=($!)
    wait_socket "$sock"
    measure "$label" "nbd+unix:///q?socket=$sock"
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
}

ours "quorum-tgt quorum/3 (uring, shm)" uring
ours "quorum-tgt quorum/3 (aio, shm)" aio
ours "quorum-tgt quorum/3 (malloc)" malloc
# QEMU twice: with its defaults (aio=threads, page cache: what the NBD issue measured) and
# at its best here (each file node aio=native with O_DIRECT: twice the quorum's writes).
for mode in default tuned; do
    opts=""
    [ "$mode" = tuned ] && opts=",aio=native,cache.direct=on"
    qsd "qemu-storage-daemon quorum/3 (shm, $mode)" "$WORK/qsd_quorum_$mode.sock" \
        --blockdev driver=file,node-name=c0,filename="$WORK/q0.raw$opts" \
        --blockdev driver=file,node-name=c1,filename="$WORK/q1.raw$opts" \
        --blockdev driver=file,node-name=c2,filename="$WORK/q2.raw$opts" \
        --blockdev '{"driver":"quorum","node-name":"q","vote-threshold":2,"children":["c0","c1","c2"]}'
    qsd "qemu-storage-daemon single file (shm, $mode)" "$WORK/qsd_single_$mode.sock" \
        --blockdev driver=file,node-name=q,filename="$WORK/single.raw$opts"
done

echo
for kind in "uring, shm" "aio, shm" malloc; do
    for rw in randread randwrite; do
        for mode in default tuned; do
            ours=${IOPS["quorum-tgt quorum/3 ($kind)",$rw]}
            qq=${IOPS["qemu-storage-daemon quorum/3 (shm, $mode)",$rw]}
            qs=${IOPS["qemu-storage-daemon single file (shm, $mode)",$rw]}
            python3 -c "print(f'ours ($kind) $rw vs QEMU $mode: {$ours/$qq:.2f}x QEMU quorum (target >= 4x), {$ours/$qs:.2f}x QEMU single file (target >= 1x)')"
        done
    done
done
