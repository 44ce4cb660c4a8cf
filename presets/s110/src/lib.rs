//! `libhz3_s110.so`: the scale preset with the page-meta fast path (`free` routes by
//! the segment header's page meta first) as an `LD_PRELOAD` library.
//!
//! The C symbols (`malloc`, `free`, ...) come from `export: c`; the library's
//! own Rust code allocates from the same engine through `#[global_allocator]`.
//!
//! Use: `LD_PRELOAD=target/release/libhz3_s110.so program args...`

hz3_runtime::hz3_allocator! {
    /// The scale preset with the page-meta fast path in free.
    pub struct S110<s110_meta: true, free_fast: true, ptag: late, stats: true, export: c>;
}

#[global_allocator]
static GLOBAL: S110 = S110::new();
