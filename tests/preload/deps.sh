#!/usr/bin/env bash
# Installs what tests/preload/run.sh needs on a Debian machine: python3, git,
# gcc, g++, perl, sqlite3 and the C headers; and what hz3-bench needs to build
# snmalloc (the snmalloc-rs crate runs cmake and g++). Idempotent: when everything is there
# it only checks and exits (no apt-get at all).
set -euo pipefail

missing=()
for cmd in python3 git gcc perl sqlite3; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
# libc6-dev: the C headers (and crt files) that capi_test.c needs.
[ -e /usr/include/stdio.h ] && [ -e /usr/include/malloc.h ] || missing+=(libc6-dev)
# g++ (with libstdc++'s headers): cxx_test.cpp.
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v timeout >/dev/null 2>&1 || missing+=(coreutils)
command -v readelf >/dev/null 2>&1 || missing+=(binutils)
# hz3-bench: snmalloc-rs builds snmalloc (C++) with cmake. Its cmake-free `build_cc`
# feature was measured 2.5x slower on the pair loop: it leaves the fast path's helpers
# (size_to_sizeclass, ...) out of line. (g++ is checked above.)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps: not root and no sudo" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
