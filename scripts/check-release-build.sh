#!/usr/bin/env bash
# The README's plain `cargo build --release` (at the repository root, no -p) must
# build every LD_PRELOAD library: target/release/libhz3_<name>.so for each cdylib
# crate under presets/. The libraries are removed first, so a library that the
# plain build skips is reported missing even when an earlier step had built it.
#
#   scripts/check-release-build.sh        (honours CARGO_TARGET_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac

# The library names, read from the preset crates that build a cdylib.
libs=()
for manifest in presets/*/Cargo.toml; do
    grep -q 'crate-type *= *\["cdylib"\]' "$manifest" || continue
    name=$(sed -n '/^\[lib\]/,/^\[/s/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)
    [ -n "$name" ] || { echo "check-release-build: no [lib] name in $manifest" >&2; exit 1; }
    libs+=("lib$name.so")
done
[ ${#libs[@]} -gt 0 ] || { echo "check-release-build: no cdylib preset found" >&2; exit 1; }

for lib in "${libs[@]}"; do rm -f "$target/release/$lib"; done
cargo build --release

missing=0
for lib in "${libs[@]}"; do
    if [ -f "$target/release/$lib" ]; then
        echo "  ok    target/release/$lib"
    else
        echo "  FAIL  target/release/$lib was not built by \`cargo build --release\`"
        missing=$((missing + 1))
    fi
done
echo "release build: $(( ${#libs[@]} - missing )) passed, $missing failed"
[ "$missing" -eq 0 ]
