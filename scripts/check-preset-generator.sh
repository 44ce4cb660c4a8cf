#!/usr/bin/env bash
# The preset generator as the README shows it: `hz3-presets new NAME "FLAGS"` turns a
# flag list into target/release/libhz3_NAME.so, which then runs a real program under
# LD_PRELOAD; a bad flag list fails with the macro's own message.
#
#   scripts/check-preset-generator.sh      (honours CARGO_TARGET_DIR; shares the target
#                                           directory, so the release dependencies built
#                                           by `cargo build --release` are reused)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/hz3-gen.XXXXXX")
trap 'rm -rf "$work"' EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "  ok    $1"; }
bad() {
    fail=$((fail + 1))
    echo "  FAIL  $1"
    [ -n "${2:-}" ] && [ -s "$2" ] && tail -n 25 "$2" | sed 's/^/        | /'
    return 0
}
gen() { cargo run --quiet -p hz3-presets -- "$@"; }

# 1. A good flag list: the library is built where the README says, and works.
lib=$target/release/libhz3_gencheck.so
rm -f "$lib"
if gen new gencheck "s110_meta: true, ptag: first, stats: false" >"$work/out" 2>"$work/err"; then
    if [ -f "$lib" ] && grep -qxF "$lib" "$work/out"; then
        ok "new gencheck: built and reported $lib"
    else
        bad "new gencheck: $lib missing or not reported" "$work/err"
    fi
else
    bad "new gencheck \"s110_meta: true, ptag: first, stats: false\" failed" "$work/err"
fi
if [ -f "$lib" ]; then
    out=$(LD_PRELOAD=$lib python3 -c 'print(sum(range(10)))' 2>"$work/py.err")
    if [ "$out" = 45 ] && ! grep -q 'cannot be preloaded' "$work/py.err"; then
        ok "LD_PRELOAD=libhz3_gencheck.so python3 -c 'print(sum(range(10)))' printed 45"
    else
        bad "python3 under libhz3_gencheck.so printed '$out'" "$work/py.err"
    fi
    # The library really serves the program: it is mapped and defines malloc.
    mapped=$(LD_PRELOAD=$lib python3 -c \
        'print(any("libhz3_gencheck.so" in l for l in open("/proc/self/maps")))' 2>/dev/null)
    if [ "$mapped" = True ] && nm -D --defined-only "$lib" | grep -qw malloc; then
        ok "libhz3_gencheck.so is loaded into python3 and defines malloc"
    else
        bad "libhz3_gencheck.so not mapped into python3 (got '$mapped') or no malloc"
    fi
fi

# 2. A bad flag list: non-zero exit, the macro's message, no library left behind.
badlib=$target/release/libhz3_gencheck_bad.so
touch "$badlib" # as if left by an earlier good run: a failed build must remove it
if gen new gencheck_bad "s110_meta: false, ptag: frist" >"$work/out" 2>"$work/err"; then
    bad "new gencheck_bad with ptag: frist succeeded" "$work/err"
elif grep -qF 'unknown `ptag` value `frist` (did you mean `first`?)' "$work/err" \
    && ! grep -q 'leaves the default ptag' "$work/err" && [ ! -e "$badlib" ]; then
    ok "new gencheck_bad \"... ptag: frist\": fails with the macro's message"
else
    bad "new gencheck_bad: wrong message or a library left behind" "$work/err"
fi

# 3. Command-line errors and --help.
if gen new GenCheck "" >"$work/out" 2>"$work/err"; then
    bad "new GenCheck (upper case) succeeded"
elif grep -q 'invalid NAME `GenCheck`' "$work/err"; then
    ok "new GenCheck: rejected (lower-case C identifier required)"
else
    bad "new GenCheck: unexpected message" "$work/err"
fi
if gen --help >"$work/out" 2>"$work/err" && grep -q 'hz3-presets new NAME' "$work/out"; then
    ok "--help prints the usage"
else
    bad "--help" "$work/err"
fi

rm -f "$lib" "$badlib"
echo "preset generator: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
