//! Ready-made hz3 allocator types, each declared with [`hz3_runtime::hz3_allocator!`].
//!
//! Owns: the named presets that applications, tests and benchmarks pick from. Each is
//! a distinct type with its own arena, central structures, counters and thread-local
//! cache, so several can be used side by side in one binary; pick one as the
//! `#[global_allocator]`:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: hz3_presets::Scale = hz3_presets::Scale::new();
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
//!
//! | type | `s110_meta` | `free_fast` | `ptag` | `stats` |
//! |---|---|---|---|---|
//! | [`Scale`] | `true` | `false` | `late` | `true` |
//! | [`Hz3Default`] | `true` | `false` | `late` | `false` |
//! | [`S110Fast`] | `true` | `true` | `late` | `true` |
//! | [`PtagFirst`] | `true` | `false` | `first` | `true` |
//! | [`PtagOff`] | `true` | `true` | `off` | `true` |
//! | [`Hardened`] | `true` | `false` | `late` | `true` (and `harden: true`) |
//!
//! All other flags keep their defaults (`failfast: false`, `shards: 64`,
//! `arena_gib: 64`, `purge: true`). None of them exports the C symbols: the
//! `LD_PRELOAD` libraries are separate `cdylib` crates, one per preset, declaring
//! their own type with `export: c`.
//!
//! This package also holds the preset generator, which makes such a library from any
//! flag list: `cargo run -p hz3-presets -- new NAME "FLAGS"` builds
//! `target/release/libhz3_NAME.so` (`cargo run -p hz3-presets -- --help` tells more).
hz3_runtime::hz3_allocator! {
    /// The scale preset: the S110 page meta is written and observed, but
    /// `free` does not take it as a fast path; the page-tag map routes frees that the
    /// S110 step does not; stats on.
    pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;

    /// All defaults: the scale preset's routes without stats.
    pub struct Hz3Default;

    /// The S110 treatment: `free` first routes through the segment header's
    /// `bin_plus1` page meta, with the page-tag map as fallback; stats on.
    pub struct S110Fast<s110_meta: true, free_fast: true, ptag: late, stats: true>;

    /// The page-tag map as the primary free route (range check + one load), with the
    /// S110 page meta still written; stats on.
    pub struct PtagFirst<s110_meta: true, free_fast: false, ptag: first, stats: true>;

    /// No page-tag map: frees route by the S110 page meta, then the segment and page
    /// headers; stats on.
    pub struct PtagOff<s110_meta: true, free_fast: true, ptag: off, stats: true>;

    /// The scale preset with `harden: true`: free-list links encoded with a
    /// per-process key and checked, a freed-block mark, the exact block-start test on
    /// every free (the flags of `libhz3_hardened.so`).
    pub struct Hardened<s110_meta: true, free_fast: false, ptag: late, stats: true, harden: true>;
}
