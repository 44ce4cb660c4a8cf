#!/usr/bin/env bash
# Packaging checks for the crates meant for publishing (hz3-macros, hz3-runtime and
# the facade hz3):
#   1. `cargo doc --workspace --no-deps` gives no warning (warnings are errors here);
#   2. `cargo package` builds the three packages and verifies that each compiles from
#      its packaged sources alone.
# The three are packaged in one command: cargo then resolves hz3-runtime's dependency
# on hz3-macros (and the facade's on hz3-runtime) against the packages it has just
# made, since none of them is on crates.io yet. `cargo package -p hz3-runtime` alone
# fails with "no matching package named `hz3-macros` found". Publishing goes the same
# way: `cargo publish -p hz3-macros -p hz3-runtime -p hz3`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps
# --allow-dirty: a developer's uncommitted edits are packaged as they are (a CI clone
# is clean anyway).
cargo package -p hz3-macros -p hz3-runtime -p hz3 --allow-dirty
echo "packaging: 2 passed, 0 failed"
