//! hz3: a memory allocator whose every design choice is a compile-time flag.
//!
//! `hz3_allocator!` declares an allocator type from a flag list; this crate is
//! the engine those types run on. The engine is generic over [`Config`] (the
//! flags as associated consts), so each generated type is compiled to its own
//! code with its own statics and thread-local cache.
//!
//! Layers, from the hot path down: [`api`](crate::__private) (alloc/free),
//! `tcache` (per-thread bins), `free_route` (pointer → bin and owner),
//! `remote` (batched cross-thread frees), `shard` (central runs, inboxes),
//! `segment` / `tagmap` / `arena` (address space), `large` (big blocks and
//! direct mappings), `thread` (life cycle), `os` (every system call).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub use hz3_macros::hz3_allocator;

mod api;
mod arena;
#[doc(hidden)]
pub mod capi;
#[doc(hidden)]
pub mod capi_cxx;
mod config;
mod failfast;
mod free_route;
mod harden;
mod large;
mod options;
mod os;
mod remote;
mod segment;
mod shard;
mod size_class;
mod state;
pub mod stats;
mod sync;
mod tagmap;
mod tcache;
mod thread;

pub use config::{Config, Ptag};
pub use state::State;
pub use stats::StatsSnapshot;

/// Entry points used by the code that `hz3_allocator!` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::api::{
        alloc, alloc_cached, alloc_slow, alloc_zeroed, dealloc, free, free_cached, free_hot, free_slow, realloc, stats,
        usable_size,
    };
    pub use crate::State;
    pub use crate::capi;
    pub use crate::capi_cxx;
}
#[cfg(test)]
mod engine_tests;
