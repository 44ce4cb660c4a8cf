//! `hz3_allocator!` UI tests: every flag error points at the offending token, all
//! errors of one invocation are reported together, and valid invocations (several
//! types in one binary) compile and run.
//!
//! Regenerate the expected `.stderr` files with `TRYBUILD=overwrite cargo test -p
//! hz3-runtime --test ui`, then read each one.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
