//! The compile-time description of one generated allocator type.
//!
//! Owns: the [`Config`] trait, whose associated consts are the `hz3_allocator!`
//! flags, and the hooks through which the engine reaches the per-type statics
//! and the per-type thread-local slot that the macro emits.
//! Must never: hold state. Every flag is a const so that monomorphisation deletes
//! the branches of disabled routes.

/// Where the arena page-tag map sits in the free route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ptag {
    /// No tag map; frees are routed through the segment header.
    Off,
    /// The tag map is the primary free route (range check + one load).
    First,
    /// The tag map is consulted only after the S110 segment-meta step misses.
    Late,
}

/// One generated allocator type. Implemented by `hz3_allocator!`; not meant to be
/// implemented by hand (the statics must be unique to the type).
pub trait Config: Sized + Sync + 'static {
    /// The type's name, printed in its stats lines.
    const NAME: &'static str;
    /// Segment headers carry the per-page `bin_plus1` array.
    const S110_META: bool;
    /// `free` tries the S110 meta first (requires `S110_META`).
    const FREE_FAST: bool;
    /// Position of the page-tag map in the free route.
    const PTAG: Ptag;
    /// Count route and cache events; print them at exit.
    const STATS: bool;
    /// Abort with a one-line message on any detected inconsistency.
    const FAILFAST: bool;
    /// Number of owner shards (live threads beyond this share shards).
    const SHARDS: usize;
    /// Bytes of address space reserved for the arena.
    const ARENA_SIZE: usize;
    /// Release free pages to the OS (`madvise`) when they become empty.
    const PURGE: bool;
    /// Requests of 257 B to 2 KiB get the 16-byte size classes (128 small
    /// classes: least rounding, most partly used pages); off (the default),
    /// they round up to four classes per doubling (320, 384, 448, 512, 640,
    /// ... 2048: at most 25% rounding, 28 small classes in all), as jemalloc's
    /// and mimalloc's classes do.
    const FINE_CLASSES: bool = false;
    /// Free-list links encoded with a per-process random key and checked when
    /// followed, a double-free test on the local free path, the exact
    /// block-start test on every free; a detected corruption aborts with one
    /// line. Off (the default) compiles every check away.
    const HARDEN: bool = false;

    /// The type's own engine state (a `static` emitted by the macro).
    fn state() -> &'static crate::State<Self>;
    /// This thread's cache pointer for this type; null before first use.
    fn tls_get() -> *mut u8;
    /// Store this thread's cache pointer for this type.
    fn tls_set(p: *mut u8);
}
