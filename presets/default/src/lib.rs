//! `libhz3_default.so`: hz3 with the macro's default flags as an
//! `LD_PRELOAD` library.
//!
//! The C symbols (`malloc`, `free`, ...) come from `export: c`; the library's
//! own Rust code allocates from the same engine through `#[global_allocator]`.
//!
//! Use: `LD_PRELOAD=target/release/libhz3_default.so program args...`

hz3_runtime::hz3_allocator! {
    /// hz3 with every flag at its default.
    pub struct Hz3Default<export: c>;
}

#[global_allocator]
static GLOBAL: Hz3Default = Hz3Default::new();
