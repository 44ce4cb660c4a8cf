//! `libhz3_hardened.so`: hz3's scale preset with `harden: true`, as an
//! `LD_PRELOAD` library.
//!
//! The scale preset's routes and stats line, plus: free-list links stored
//! encoded with a per-process random key and checked before they are
//! followed, a freed-block mark that catches a double free on the freeing
//! thread, and the exact block-start test on every free. A detected misuse
//! aborts with one line on stderr (`hz3 harden [Hardened]: ...`) instead of
//! handing out memory the program still uses. `failfast` stays off: its
//! live-block map costs an atomic update per malloc and per free.
//!
//! Use: `LD_PRELOAD=target/release/libhz3_hardened.so program args...`

hz3_runtime::hz3_allocator! {
    /// The scale preset hardened: keyed free lists, double and interior frees abort.
    pub struct Hardened<s110_meta: true, free_fast: false, ptag: late, stats: true, harden: true, export: c>;
}

#[global_allocator]
static GLOBAL: Hardened = Hardened::new();
