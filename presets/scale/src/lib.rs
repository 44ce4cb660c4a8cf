//! `libhz3_scale.so`: hz3's scale preset as an `LD_PRELOAD` library.
//!
//! page meta observed (not used for routing), the page-tag map as the
//! free route behind it, one `[HZ3_S110_FREE]` stats line on stderr at exit.
//! The C symbols (`malloc`, `free`, ...) come from `export: c`; the library's
//! own Rust code allocates from the same engine through `#[global_allocator]`.
//!
//! Use: `LD_PRELOAD=target/release/libhz3_scale.so program args...`

hz3_runtime::hz3_allocator! {
    /// The scale preset: page meta observed, tag map late, stats on.
    pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true, export: c>;
}

#[global_allocator]
static GLOBAL: Scale = Scale::new();
