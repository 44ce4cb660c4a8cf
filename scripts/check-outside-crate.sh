#!/usr/bin/env bash
# Builds and runs the README's "Use it" example as a user would: a new crate in a
# temporary directory OUTSIDE this repository, whose only dependency is the facade
# crate `hz3` by absolute path to this checkout.
#
# The Cargo.toml and Rust blocks are read from README.md: the first ```toml and the
# first ```rust block after the line
#     <!-- checked by scripts/check-outside-crate.sh -->
# (in the toml block, the placeholder path "/path/to/hz3" is replaced by this
# checkout's path). Without that line the copy below is used, and the script says so.
#
#   scripts/check-outside-crate.sh     (builds into $CARGO_TARGET_DIR/outside-crate,
#                                       default target/outside-crate, reused across runs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
marker='<!-- checked by scripts/check-outside-crate.sh -->'

work=$(mktemp -d "${TMPDIR:-/tmp}/hz3-outside.XXXXXX")
trap 'rm -rf "$work"' EXIT
crate=$work/hello-hz3
mkdir -p "$crate/src"

# The example, as the README shows it.
if grep -qF -- "$marker" "$root/README.md"; then
    block() { # $1 = fence language: prints the first such block after the marker
        awk -v m="$marker" -v lang="$1" '
            index($0, m) { seen = 1; next }
            seen && !inside && $0 == "```" lang { inside = 1; next }
            inside && $0 == "```" { exit }
            inside { print }' "$root/README.md"
    }
    deps=$(block toml)
    main=$(block rust)
    echo "outside-crate: using the example from README.md"
else
    echo "outside-crate: README.md has no '$marker' line; using this script's copy"
    deps='[dependencies]
hz3 = { path = "/path/to/hz3" }   # the root directory of your clone of hz3'
    main=$(cat <<'RUST'
// Declare allocator types from compile-time flags. Each one is a distinct type with
// its own arena, so several can live in one program; one of them is the global
// allocator.
hz3::hz3_allocator! {
    /// The scale preset's flags; its counters are printed to stderr at exit.
    pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;
    /// The same with the page-meta fast path in `free`.
    pub struct Fast<s110_meta: true, free_fast: true, ptag: late>;
}

#[global_allocator]
static GLOBAL: Scale = Scale::new();

fn main() {
    let v: Vec<u64> = (0..1_000).collect();
    println!("sum = {}", v.iter().sum::<u64>());
    println!("{:?}", Scale::stats()); // the counters, as a struct
    assert!(Fast::FREE_FAST && !Scale::FREE_FAST);
}
RUST
)
fi
[ -n "$deps" ] && [ -n "$main" ] || { echo "outside-crate: FAIL  empty example block in README.md"; exit 1; }
grep -q '/path/to/hz3' <<<"$deps" || {
    echo "outside-crate: FAIL  the toml block does not use the placeholder path /path/to/hz3"
    exit 1
}

{
    printf '[package]\nname = "hello-hz3"\nversion = "0.1.0"\nedition = "2021"\n\n'
    printf '%s\n' "${deps//\/path\/to\/hz3/$root}"
} >"$crate/Cargo.toml"
printf '%s\n' "$main" >"$crate/src/main.rs"
# The checkout's lock file pins the same dependency versions as the workspace's (cargo
# drops the entries this crate does not use), so no new version is fetched.
cp "$root/Cargo.lock" "$crate/Cargo.lock"

echo "outside-crate: $crate/Cargo.toml:"
sed 's/^/    /' "$crate/Cargo.toml"
(cd "$crate" && CARGO_TARGET_DIR="$target/outside-crate" cargo run --quiet) \
    >"$work/out" 2>"$work/err" || {
    echo "outside-crate: FAIL  the example does not build or run:"
    tail -n 40 "$work/err" | sed 's/^/    | /'
    exit 1
}
sed 's/^/    | /' "$work/out"
if grep -qx 'sum = 499500' "$work/out"; then
    echo "outside-crate: 1 passed, 0 failed"
else
    echo "outside-crate: FAIL  expected the line 'sum = 499500' in the output"
    echo "outside-crate: 0 passed, 1 failed"
    exit 1
fi
