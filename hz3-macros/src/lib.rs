//! `hz3_allocator!`: declare distinct hz3 allocator types from compile-time flags.
//!
//! Use it through the facade crate, `hz3::hz3_allocator!` (then `hz3` is the only
//! dependency you need), or through the runtime, `hz3_runtime::hz3_allocator!`.
//!
//! # Syntax
//!
//! ```ignore
//! hz3_runtime::hz3_allocator! {
//!     /// Scale lane.
//!     pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;
//!
//!     /// All defaults (no flag list, or an empty one: `struct Plain<>;`).
//!     pub(crate) struct Plain;
//! }
//!
//! #[global_allocator]
//! static GLOBAL: Scale = Scale::new();
//! ```
//!
//! One invocation holds any number of declarations `ATTRS VIS struct NAME<FLAGS>;`,
//! each ending with `;`. Outer attributes (doc comments included) are forwarded to the
//! struct. The flag list is `name: value` items separated by `,` (a trailing `,` is
//! fine), in any order; a flag left out takes its default. (`hz3_allocator!<...>`
//! is not valid Rust invocation syntax, so the angle-bracket list lives inside the
//! invocation instead.)
//!
//! | flag | values | default | meaning |
//! |---|---|---|---|
//! | `s110_meta` | `true` / `false` | `true` | segment headers carry the per-page `bin_plus1` array |
//! | `free_fast` | `true` / `false` | `false` | `free` tries the S110 page meta first (needs `s110_meta: true`) |
//! | `ptag` | `off` / `first` / `late` | `late` | page-tag map: none, primary free route, or fallback after the S110 step |
//! | `stats` | `true` / `false` | `false` | counters and one summary line per type at exit |
//! | `failfast` | `true` / `false` | `false` | abort with a one-line message on any inconsistency |
//! | `harden` | `true` / `false` | `false` | free-list links encoded with a per-process random key and checked when followed; double and interior frees abort |
//! | `shards` | integer literal `1..=4096` | `64` | number of owner shards |
//! | `arena_gib` | integer literal `1..=1024` | `64` | GiB of address space reserved for the arena |
//! | `purge` | `true` / `false` | `true` | return empty pages to the OS |
//! | `fine_classes` | `true` / `false` | `false` | 16-byte size classes up to 2 KiB (else four per doubling above 256 B) |
//! | `export` | `none` / `c` | `none` | also define the C allocation symbols |
//!
//! The defaults are the scale preset's routes (with `stats: false`).
//!
//! # Errors
//!
//! Every error of the invocation is reported at once, each pointing at the
//! offending token: an unknown flag (at its name; the message lists the valid flags),
//! a value of the wrong type or an unknown value (at the value), an integer out of
//! range (at the value), a duplicate flag (at its second occurrence), `free_fast: true`
//! with `s110_meta: false` (at the `true`), `ptag: late` with `s110_meta: false` (at
//! the `late`; with `ptag` left out, at the `s110_meta: false` value), and a second
//! `export: c` declaration in one invocation. A flag name or value close to a valid
//! one gets a hint (`ptag: frist` → "did you mean `first`?"), and a flag written with
//! a bad value gets only that error, none about combinations with its default.
//!
//! Malformed syntax (say, `stats true` without its `:`) is reported, the rest of that
//! declaration is skipped up to its `;` (or the next `struct`), and the declarations
//! after it are still checked. A declaration missing only its `;` gets its flags
//! checked too.
//!
//! # What a declaration expands to
//!
//! For `VIS struct Name<...>;`:
//!
//! - `#[derive(Clone, Copy, Debug, Default)] VIS struct Name { /* private */ }`, a
//!   zero-sized handle (do not derive those four traits again); a default doc comment
//!   is added when the declaration has none;
//! - inherent items: `const fn new()`, `NAME`, one const per flag (`S110_META`,
//!   `FREE_FAST`, `PTAG`, `STATS`, `FAILFAST`, `HARDEN`, `SHARDS`, `ARENA_SIZE` in bytes,
//!   `PURGE`, `EXPORT_C`), `fn stats() -> StatsSnapshot` and
//!   `unsafe fn usable_size(*const u8) -> Option<usize>`;
//! - `impl hz3_runtime::Config for Name` with the same consts, the type's own
//!   `static` `State<Name>` and its own thread-local cache slot;
//! - `unsafe impl GlobalAlloc for Name`, so it can be the `#[global_allocator]`.
//!
//! Each declaration has its own statics and thread-local slot, so any number of types
//! with any flags can live in one binary. The helpers sit inside an anonymous
//! `const _: () = { ... };` block: the only names the expansion adds to the module are
//! the struct's (and, with `export: c`, the C symbols).
//!
//! The thread-local slot is a `::std::thread_local!` const-initialised
//! `Cell<*mut u8>` (no destructor, no lazy registration). The calling crate therefore
//! needs `std`; a `#![no_std]` crate must declare `extern crate std;`.
//!
//! # `export: c`
//!
//! The type also defines `#[no_mangle] extern "C"` `malloc`, `free`, `calloc`,
//! `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`,
//! `pvalloc` and `malloc_usable_size`, each forwarding to
//! `hz3_runtime::__private::capi::<same name>::<Name>`, so a `cdylib` holding it can be
//! used with `LD_PRELOAD`. **Only one type per final binary may use `export: c`**
//! (two would define `malloc` twice; a second one in the same invocation is a compile
//! error, across invocations the linker reports it).
//!
//! On `x86_64` Linux its thread-local slot is an initial-exec TLS word instead: an
//! 8-byte `.tbss` symbol defined with `global_asm!` and read through
//! `sym@GOTTPOFF` plus `fs:`, so the library never calls `__tls_get_addr` on the hot
//! path (it carries `STATIC_TLS` and an `R_X86_64_TPOFF64` relocation, and cannot be
//! `dlopen`ed late into a process without static TLS room). Elsewhere the portable
//! `thread_local!` slot is used. The symbol is `.globl` + `.hidden` (so it links from
//! any codegen unit or downstream crate but is not exported) and is named
//! `__hz3_tls_<Name>_<hash>_<index>`, where the hash covers the invocation's tokens,
//! its file, line and column, the per-compilation invocation counter and the crate's
//! name, version and manifest directory: two same-named types in one crate, or in two
//! crates linked together with fat LTO, get distinct symbols.
//!
//! # Runtime path
//!
//! Generated code names the runtime as `::hz3_runtime`. A `macro_rules!` wrapper may
//! pass another path (typically `$crate`) with a leading inner attribute:
//! `hz3_allocator! { #![hz3_runtime = $crate] pub struct A; }`.

mod expand;
mod parse;

use proc_macro::TokenStream;
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares one or more hz3 allocator types; see the [crate docs](crate) for the
/// syntax, the flags and the expansion.
#[proc_macro]
pub fn hz3_allocator(input: TokenStream) -> TokenStream {
    let seed = invocation_seed(&input);
    match parse::parse_input(input.into()) {
        Ok(parsed) => expand::expand(&parsed, seed).into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Invocations expanded so far by this proc-macro instance (one per compilation).
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A hash that differs between any two invocations linked into one binary.
fn invocation_seed(input: &TokenStream) -> u64 {
    let mut h = Fnv::default();
    h.write(input.to_string().as_bytes());
    h.write(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let site = proc_macro::Span::call_site();
    h.write(site.file().as_bytes());
    h.write(&site.line().to_le_bytes());
    h.write(&site.column().to_le_bytes());
    for var in [
        "CARGO_CRATE_NAME",
        "CARGO_PKG_NAME",
        "CARGO_PKG_VERSION",
        "CARGO_MANIFEST_DIR",
    ] {
        h.write(std::env::var(var).unwrap_or_default().as_bytes());
        h.write(&[0]);
    }
    h.0
}

/// FNV-1a, 64 bit: stable across compiler versions, unlike `DefaultHasher`.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
