#!/usr/bin/env bash
# The LD_PRELOAD floor: ns per malloc/free pair of the C pair loop under a
# minimal preload allocator (tests/preload/call_floor.c) against the same
# allocator inlined, beside hz3's preloaded scale library against its in-process
# Rust twin (examples/pair_loop.rs); median of N interleaved runs each.
#
#   scripts/preload-floor.sh [runs=11] [pairs=20000000]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
runs=${1:-11}
pairs=${2:-20000000}
work=$(mktemp -d "${TMPDIR:-/tmp}/hz3-floor.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$root" && cargo build --release -q -p hz3-scale && cargo build --release -q -p hz3 --example pair_loop)
cc -O2 -fno-builtin -o "$work/pair_loop" "$root/tests/preload/pair_loop.c"
cc -O2 -fPIC -shared -ftls-model=initial-exec -DCALL_FLOOR_LIBRARY -o "$work/libcall_floor.so" "$root/tests/preload/call_floor.c"
cc -O2 -fno-builtin -DCALL_FLOOR_INLINE -o "$work/call_floor" "$root/tests/preload/pair_loop.c"

ns() { sed -n 's/.*ns_per_pair=//p'; }
for _ in $(seq "$runs"); do
    echo "floor-preloaded $(LD_PRELOAD="$work/libcall_floor.so" "$work/pair_loop" "$pairs" 64 | ns)"
    echo "floor-inlined $("$work/call_floor" "$pairs" 64 | ns)"
    echo "hz3-scale-preloaded $(LD_PRELOAD="$target/release/libhz3_scale.so" "$work/pair_loop" "$pairs" 64 2>/dev/null | ns)"
    echo "hz3-scale-in-process $("$target/release/examples/pair_loop" "$pairs" 64 2>/dev/null | ns)"
done | sort -k1,1 -k2n | awk '
    { v[$1] = v[$1] " " $2 }
    END {
        for (k in v) { n = split(v[k], a, " "); med[k] = a[int((n + 1) / 2)] }
        printf "ns per pair, median of %d runs\n", n
        printf "  minimal allocator: preloaded %.2f, inlined %.2f (%.2fx)\n", med["floor-preloaded"], med["floor-inlined"], med["floor-preloaded"] / med["floor-inlined"]
        printf "  hz3 scale:         preloaded %.2f, in-process %.2f (%.2fx)\n", med["hz3-scale-preloaded"], med["hz3-scale-in-process"], med["hz3-scale-preloaded"] / med["hz3-scale-in-process"]
    }'
