#!/usr/bin/env bash
# The whole hz3 test suite, as CI runs it (`.ci/run` calls exactly this).
#   1. system packages the real-program tests need (apt-get, only if missing)
#   2. cargo test --workspace      unit, macro UI, flag-matrix, reliability, cliffs, misuse, options
#      cargo clippy -D warnings    lints (every unsafe block says why it holds)
#   3. cargo build --release       the plain build makes every preset library
#   4. preset generator            a flag list becomes an LD_PRELOAD library
#   5. tests/preload/run.sh        every preset under LD_PRELOAD: C and C++ API edge cases,
#                                  python3, git, gcc, perl, sqlite3, ls, cat
#   6. hz3-bench --quick --check   every workload × allocator completes, outputs parse
#      hz3-bench exec              a program under every allocator's LD_PRELOAD library
#   7. cargo doc, cargo package, the README's example in a crate outside the repository
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
bash tests/preload/deps.sh

step "cargo test --workspace"
cargo test --workspace

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --release builds every preset library"
bash scripts/check-release-build.sh

step "preset generator: hz3-presets new NAME \"FLAGS\""
bash scripts/check-preset-generator.sh

step "LD_PRELOAD presets"
bash tests/preload/run.sh

step "hz3-bench smoke test"
# Own output directory: never overwrites the results of a default run.
cargo run --release -p hz3-bench -- --quick --check --out target/hz3-bench/smoke

step "hz3-bench exec smoke test"
cargo run --release -p hz3-bench -- exec --runs 1 --out target/hz3-bench/smoke -- python3 -c 'print(1)'

step "cargo doc without warnings; cargo package for hz3-macros, hz3-runtime, hz3"
bash scripts/check-packaging.sh

step "the README's example in a new crate outside the repository"
bash scripts/check-outside-crate.sh

step "all test stages passed"
