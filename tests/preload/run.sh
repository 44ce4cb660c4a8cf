#!/usr/bin/env bash
# Preload tests: every hz3 preset library under LD_PRELOAD runs the C edge-case
# test (capi_test.c), the C++ operator test (cxx_test.cpp), the runtime options
# and exit-line checks (reassign_stderr.c, ls, cat), a threaded Python churn,
# git, gcc, perl and sqlite3, and each program's output is checked, not only
# its exit status.
#
#   tests/preload/run.sh [preset ...]        presets: scale default s110 hardened (all by default)
#
# Environment:
#   HZ3_PRELOAD_LIBS="name=/path/lib.so ..."  test these libraries instead (no cargo build)
#   HZ3_STATS_PRESETS="scale s110 hardened"   presets that must print the [HZ3_S110_FREE]
#                                             stats line at exit ("" to skip the check)
#   CARGO_TARGET_DIR                          honoured when locating the built libraries
#
# Prints "preload: N passed, M failed"; exits non-zero when M > 0.
set -u
# The runtime options are set per check below; none from the caller's environment.
unset HZ3_SHOW_STATS HZ3_STATS_FILE HZ3_VERBOSE

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
stats_presets=${HZ3_STATS_PRESETS-scale s110 hardened}
work=$(mktemp -d "${TMPDIR:-/tmp}/hz3-preload.XXXXXX")
trap 'rm -rf "$work"' EXIT
# A program that hangs under the allocator fails instead of blocking the run.
limit=300

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "  ok    $1"; }
bad() {
    fail=$((fail + 1))
    echo "  FAIL  $1"
    shift
    for f in "$@"; do [ -s "$f" ] && tail -n 15 "$f" | sed 's/^/        | /'; done
    return 0
}
finish() {
    echo "preload: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
}

# ---- tools -------------------------------------------------------------------
need_deps=0
for cmd in python3 git gcc g++ perl sqlite3 timeout readelf; do
    command -v "$cmd" >/dev/null 2>&1 || need_deps=1
done
if [ $need_deps -eq 1 ]; then
    echo "preload: installing missing tools (tests/preload/deps.sh)"
    bash "$here/deps.sh" || { bad "deps.sh"; finish; }
fi

# ---- libraries -----------------------------------------------------------------
declare -a names=() libs=()
if [ -n "${HZ3_PRELOAD_LIBS:-}" ]; then
    for item in $HZ3_PRELOAD_LIBS; do
        names+=("${item%%=*}")
        libs+=("$(cd "$(dirname "${item#*=}")" && pwd)/$(basename "${item#*=}")")
    done
else
    presets=("$@")
    [ ${#presets[@]} -eq 0 ] && presets=(scale default s110 hardened)
    pkgs=()
    for p in "${presets[@]}"; do pkgs+=(-p "hz3-$p"); done
    echo "preload: cargo build --release ${pkgs[*]}"
    if (cd "$root" && cargo build --release "${pkgs[@]}") >"$work/build.log" 2>&1; then
        ok "cargo build --release ${pkgs[*]}"
    else
        bad "cargo build --release ${pkgs[*]}" "$work/build.log"
        finish
    fi
    for p in "${presets[@]}"; do
        names+=("$p")
        libs+=("$target/release/libhz3_$p.so")
    done
fi

# ---- programs and reference outputs (system allocator) --------------------------
if gcc -O1 -fno-builtin -Wall -pthread -o "$work/capi_test" "$here/capi_test.c" -ldl >"$work/cc.log" 2>&1; then
    ok "gcc capi_test.c"
else
    bad "gcc capi_test.c" "$work/cc.log"
    finish
fi

if g++ -std=c++17 -O1 -fno-allocation-dce -Wall -pthread -o "$work/cxx_test" "$here/cxx_test.cpp" -ldl >"$work/cc.log" 2>&1; then
    ok "g++ cxx_test.cpp"
else
    bad "g++ cxx_test.cpp" "$work/cc.log"
    finish
fi

if gcc -O1 -Wall -o "$work/reassign_stderr" "$here/reassign_stderr.c" >"$work/cc.log" 2>&1; then
    ok "gcc reassign_stderr.c"
else
    bad "gcc reassign_stderr.c" "$work/cc.log"
    finish
fi

cat >"$work/hello.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    char *s = NULL;
    size_t n = 0;
    for (int i = 0; i < 5000; i++) {
        char buf[32];
        int k = snprintf(buf, sizeof buf, "%d,", i * 7);
        char *t = realloc(s, n + (size_t)k + 1);
        if (!t) return 1;
        s = t;
        memcpy(s + n, buf, (size_t)k + 1);
        n += (size_t)k;
    }
    unsigned long h = 5381;
    for (size_t i = 0; i < n; i++) h = h * 33 + (unsigned char)s[i];
    free(s);
    printf("hello %zu %lu\n", n, h);
    return 0;
}
C

perl_prog='my %h; my $t = 0;
for my $i (1 .. 200000) { $h{"key$i"} = ("v" x ($i % 50)) . $i; }
$t += length($h{$_}) for keys %h;
delete $h{"key$_"} for grep { $_ % 2 } 1 .. 200000;
my @parts = map { $h{$_} } sort keys %h;
my $s = join(",", @parts);
$s =~ s/v+/w/g;
my %count; $count{substr($_, -1)}++ for @parts;
print scalar(keys %h), " $t ", length($s), " ", join(":", map { "$_=$count{$_}" } sort keys %count), "\n";'

{
    echo "BEGIN;"
    echo "CREATE TABLE t(i INTEGER PRIMARY KEY, s TEXT, sq INTEGER);"
    awk 'BEGIN { for (i = 1; i <= 10000; i++) printf "INSERT INTO t VALUES(%d, '"'"'row%d'"'"', %d);\n", i, i, i * i }'
    echo "COMMIT;"
    echo "CREATE INDEX ts ON t(s);"
    echo "SELECT count(*), sum(i), sum(sq), sum(length(s)) FROM t;"
    echo "SELECT s FROM t ORDER BY s DESC LIMIT 1;"
    echo "SELECT count(*) FROM (SELECT DISTINCT substr(s, 1, 5) FROM t);"
} >"$work/sqlite.sql"
sqlite_expected='10000|50005000|333383335000|68894
row9999
99'

gcc -O1 -o "$work/hello_ref" "$work/hello.c" && "$work/hello_ref" >"$work/hello.ref"
PYTHONMALLOC=malloc timeout $limit python3 "$here/alloc_heavy.py" >"$work/python.ref" 2>&1
timeout $limit perl -e "$perl_prog" >"$work/perl.ref" 2>&1

# git with no user or system configuration, deterministic identity.
git_env=(HOME="$work" GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=hz3 GIT_AUTHOR_EMAIL=hz3@example.invalid
    GIT_COMMITTER_NAME=hz3 GIT_COMMITTER_EMAIL=hz3@example.invalid)

# ---- per library ----------------------------------------------------------------
for idx in "${!names[@]}"; do
    name=${names[$idx]}
    lib=${libs[$idx]}
    base=$(basename "$lib" .so)
    out=$work/$name
    mkdir -p "$out"
    echo "preload: $name ($lib)"
    if [ ! -f "$lib" ]; then
        bad "$name: $lib missing"
        continue
    fi
    pre=(env LD_PRELOAD="$lib")

    # exported symbols
    readelf -Ws --dyn-syms "$lib" >"$out/syms" 2>&1
    missing=""
    for sym in malloc free calloc realloc reallocarray posix_memalign aligned_alloc memalign valloc pvalloc malloc_usable_size; do
        grep -Eq " FUNC +GLOBAL +DEFAULT +[0-9]+ $sym\$" "$out/syms" || missing="$missing $sym"
    done
    if [ -z "$missing" ]; then ok "$name: exports the 11 C symbols"; else bad "$name: not exported:$missing"; fi
    missing=""
    for sym in _Znwm _Znam _ZnwmRKSt9nothrow_t _ZnamRKSt9nothrow_t _ZnwmSt11align_val_t _ZnamSt11align_val_t \
        _ZnwmSt11align_val_tRKSt9nothrow_t _ZnamSt11align_val_tRKSt9nothrow_t _ZdlPv _ZdaPv _ZdlPvm _ZdaPvm \
        _ZdlPvSt11align_val_t _ZdaPvSt11align_val_t _ZdlPvmSt11align_val_t _ZdaPvmSt11align_val_t \
        _ZdlPvRKSt9nothrow_t _ZdaPvRKSt9nothrow_t _ZdlPvSt11align_val_tRKSt9nothrow_t _ZdaPvSt11align_val_tRKSt9nothrow_t; do
        grep -Eq " FUNC +GLOBAL +DEFAULT +[0-9]+ $sym\$" "$out/syms" || missing="$missing $sym"
    done
    if [ -z "$missing" ]; then ok "$name: exports the 20 C++ operators"; else bad "$name: not exported:$missing"; fi

    # the C++ operators: every form, alignment, nothrow, new-handler, bad_alloc
    "${pre[@]}" CXX_EXPECT_LIB="$base" timeout $limit "$work/cxx_test" >"$out/cxx.out" 2>"$out/cxx.err"
    rc=$?
    if [ $rc -eq 0 ] && grep -Eq '^cxx_test: [0-9]+ passed, 0 failed$' "$out/cxx.out"; then
        ok "$name: cxx_test ($(grep -E '^cxx_test: [0-9]+ passed' "$out/cxx.out"))"
    else
        bad "$name: cxx_test (exit $rc)" "$out/cxx.out" "$out/cxx.err"
    fi

    # the C edge-case test
    "${pre[@]}" CAPI_EXPECT_LIB="$base" timeout $limit "$work/capi_test" >"$out/capi.out" 2>"$out/capi.err"
    rc=$?
    if [ $rc -eq 0 ] && grep -Eq '^capi_test: [0-9]+ passed, 0 failed$' "$out/capi.out"; then
        ok "$name: capi_test ($(grep -E '^capi_test: [0-9]+ passed' "$out/capi.out"))"
    else
        bad "$name: capi_test (exit $rc)" "$out/capi.out" "$out/capi.err"
    fi

    # the stats line at exit
    if [[ " $stats_presets " == *" $name "* ]]; then
        if grep -Eq '^\[HZ3_S110_FREE\] .*calls=[1-9][0-9]*' "$out/capi.err"; then
            ok "$name: [HZ3_S110_FREE] stats line at exit"
        else
            bad "$name: no [HZ3_S110_FREE] calls=N (N > 0) line on stderr at exit" "$out/capi.err"
        fi
    fi

    # runtime options and where the exit lines go
    stats_lib=0
    [[ " $stats_presets " == *" $name "* ]] && stats_lib=1
    "${pre[@]}" HZ3_SHOW_STATS=0 timeout $limit "$work/capi_test" >/dev/null 2>"$out/quiet.err"
    if ! grep -q '^\[HZ3_' "$out/quiet.err"; then
        ok "$name: HZ3_SHOW_STATS=0 prints no exit lines"
    else
        bad "$name: HZ3_SHOW_STATS=0 but exit lines on stderr" "$out/quiet.err"
    fi
    "${pre[@]}" HZ3_SHOW_STATS=1 timeout $limit "$work/capi_test" >/dev/null 2>"$out/loud.err"
    if grep -Eq "^\[HZ3_(S110_FREE|STATS)\] .* prog=capi_test pid=[0-9]+\$" "$out/loud.err"; then
        ok "$name: HZ3_SHOW_STATS=1 prints the exit lines with prog and pid"
    else
        bad "$name: HZ3_SHOW_STATS=1: no exit line naming prog=capi_test pid=N" "$out/loud.err"
    fi
    "${pre[@]}" HZ3_VERBOSE=1 HZ3_SHOW_STATS=0 timeout $limit "$work/capi_test" >/dev/null 2>"$out/verbose.err"
    if grep -q '^\[HZ3_OPTIONS\] HZ3_SHOW_STATS=0 ' "$out/verbose.err" &&
        grep -Eq '^\[HZ3_ARENA\] type=[A-Za-z0-9_]+ reserved_bytes=[1-9][0-9]* shards=[1-9][0-9]* page=[1-9]' "$out/verbose.err"; then
        ok "$name: HZ3_VERBOSE=1 prints the options and arena lines"
    else
        bad "$name: HZ3_VERBOSE=1: no [HZ3_OPTIONS] / [HZ3_ARENA] line" "$out/verbose.err"
    fi
    # a program that closes stderr and opens a file (fd 2): never our lines in it
    "${pre[@]}" timeout $limit "$work/reassign_stderr" "$out/own.txt" >"$out/reassign.out"
    rc=$?
    if [ $rc -eq 0 ] && [ "$(cat "$out/own.txt")" = "program's own line" ]; then
        ok "$name: closed stderr, reopened file gets no exit lines"
    else
        bad "$name: reassign_stderr (exit $rc): the program's file is not its own" "$out/own.txt"
    fi
    rm -f "$out"/stats.*
    "${pre[@]}" HZ3_STATS_FILE="$out/stats.%p" timeout $limit "$work/reassign_stderr" "$out/own.txt" >"$out/reassign.out"
    pid=$(sed -n 's/^pid=//p' "$out/reassign.out")
    if [ $stats_lib -eq 0 ] || { [ -n "$pid" ] && grep -Eq "^\[HZ3_CACHE\] .* pid=$pid\$" "$out/stats.$pid" 2>/dev/null; }; then
        if [ "$(cat "$out/own.txt")" = "program's own line" ]; then
            ok "$name: HZ3_STATS_FILE=stats.%p gets the exit lines (pid $pid)"
        else
            bad "$name: HZ3_STATS_FILE set, but the program's file got lines" "$out/own.txt"
        fi
    else
        bad "$name: HZ3_STATS_FILE=stats.%p: no exit lines in stats.$pid" "$out/reassign.out"
    fi
    # ls and cat close stderr before exit: the lines still reach HZ3_STATS_FILE
    rm -f "$out/ls.stats"
    "${pre[@]}" HZ3_STATS_FILE="$out/ls.stats" HZ3_SHOW_STATS=1 timeout $limit ls -l "$here" >"$out/ls.out" 2>&1 &&
        "${pre[@]}" HZ3_STATS_FILE="$out/ls.stats" HZ3_SHOW_STATS=1 timeout $limit cat "$here/run.sh" >"$out/cat.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q 'run.sh' "$out/ls.out" && cmp -s "$out/cat.out" "$here/run.sh" &&
        grep -Eq '^\[HZ3_(CACHE|STATS)\] .* prog=ls pid=' "$out/ls.stats" &&
        grep -Eq '^\[HZ3_(CACHE|STATS)\] .* prog=cat pid=' "$out/ls.stats"; then
        ok "$name: ls and cat: exit lines in HZ3_STATS_FILE"
    else
        bad "$name: ls/cat (exit $rc): no exit lines in HZ3_STATS_FILE" "$out/ls.stats" "$out/ls.out"
    fi

    # python: threaded churn, checksum equal to the system allocator's run
    "${pre[@]}" PYTHONMALLOC=malloc HZ3_EXPECT_LIB="$base" timeout $limit python3 "$here/alloc_heavy.py" >"$out/python.out" 2>"$out/python.err"
    rc=$?
    if [ $rc -eq 0 ] && grep -q '^OK ' "$out/python.out" && cmp -s "$out/python.out" "$work/python.ref"; then
        ok "$name: python3 alloc_heavy.py ($(cat "$out/python.out"))"
    else
        bad "$name: python3 alloc_heavy.py (exit $rc; reference: $(cat "$work/python.ref"))" "$out/python.out" "$out/python.err"
    fi

    # git: init, 20 commits, log, fsck, gc
    repo=$out/repo
    (
        set -e
        mkdir -p "$repo"
        cd "$repo"
        g() { env "${git_env[@]}" LD_PRELOAD="$lib" timeout $limit git "$@"; }
        g -c init.defaultBranch=main init -q .
        for i in $(seq 1 20); do
            seq 1 $((i * 500)) | sed "s/\$/ line of file $i/" >"f$((i % 7)).txt"
            g add -A
            g commit -q -m "commit $i"
        done
        g log --format=%s >"$out/git.log"
        g fsck --strict --no-progress
        g gc -q
        g log -p --format=%s | wc -l >"$out/git.lines"
        g status --porcelain >"$out/git.status"
    ) >"$out/git.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(wc -l <"$out/git.log")" -eq 20 ] && [ "$(head -n 1 "$out/git.log")" = "commit 20" ] &&
        [ "$(tail -n 1 "$out/git.log")" = "commit 1" ] && [ ! -s "$out/git.status" ] && [ "$(cat "$out/git.lines")" -gt 1000 ]; then
        ok "$name: git init/commit/log/fsck/gc"
    else
        bad "$name: git (exit $rc)" "$out/git.out" "$out/git.log"
    fi

    # gcc: compile under the allocator, run the result under it too
    if "${pre[@]}" timeout $limit gcc -O2 -o "$out/hello" "$work/hello.c" >"$out/gcc.out" 2>&1 &&
        "${pre[@]}" timeout $limit "$out/hello" >"$out/hello.out" 2>>"$out/gcc.out" &&
        cmp -s "$out/hello.out" "$work/hello.ref"; then
        ok "$name: gcc compile + run ($(cat "$out/hello.out"))"
    else
        bad "$name: gcc compile + run (reference: $(cat "$work/hello.ref"))" "$out/gcc.out" "$out/hello.out"
    fi

    # perl: hash and string churn, output equal to the system allocator's run
    "${pre[@]}" timeout $limit perl -e "$perl_prog" >"$out/perl.out" 2>"$out/perl.err"
    rc=$?
    if [ $rc -eq 0 ] && [ -s "$out/perl.out" ] && cmp -s "$out/perl.out" "$work/perl.ref"; then
        ok "$name: perl hash/string churn ($(cat "$out/perl.out"))"
    else
        bad "$name: perl (exit $rc; reference: $(cat "$work/perl.ref"))" "$out/perl.out" "$out/perl.err"
    fi

    # sqlite3: 10k rows, index, checksums
    "${pre[@]}" timeout $limit sqlite3 "$out/t.db" <"$work/sqlite.sql" >"$out/sqlite.out" 2>"$out/sqlite.err"
    rc=$?
    if [ $rc -eq 0 ] && [ "$(cat "$out/sqlite.out")" = "$sqlite_expected" ]; then
        ok "$name: sqlite3 10k rows"
    else
        bad "$name: sqlite3 (exit $rc)" "$out/sqlite.out" "$out/sqlite.err"
    fi
done

finish
