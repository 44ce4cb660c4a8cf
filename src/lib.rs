//! `hz3`: facade crate, the one to depend on. Everything lives in [`hz3_runtime`]
//! and is re-exported here.
//!
//! From outside the hz3 repository, depend on it by the path of your clone (its root
//! directory): `hz3 = { path = "/path/to/hz3" }`.
//!
//! `hz3::hz3_allocator!` works with only this crate as a dependency: it tells
//! the macro to name the runtime through this crate.
//!
//! ```
//! use std::alloc::{GlobalAlloc, Layout};
//!
//! hz3::hz3_allocator! {
//!     /// Declared through the facade.
//!     pub struct Facade<ptag: first, stats: true>;
//! }
//! static A: Facade = Facade::new();
//!
//! let layout = Layout::from_size_align(48, 16).unwrap();
//! // SAFETY: the layout has a non-zero size; the block is freed with it.
//! unsafe {
//!     let p = A.alloc(layout);
//!     assert!(!p.is_null() && p as usize % 16 == 0);
//!     p.write_bytes(0xa5, 48);
//!     A.dealloc(p, layout);
//! }
//! assert_eq!(Facade::PTAG, hz3::Ptag::First);
//! assert_eq!(Facade::stats().ptag_hit, 1);
//! ```
#![no_std]
pub use hz3_runtime::*;

#[doc(hidden)]
pub use hz3_runtime::hz3_allocator as __hz3_allocator_impl;

/// Declare hz3 allocator types; see [`hz3_runtime::hz3_allocator!`] for the syntax.
#[macro_export]
macro_rules! hz3_allocator {
    ($($t:tt)*) => {
        $crate::__hz3_allocator_impl! { #![hz3_runtime = $crate] $($t)* }
    };
}
