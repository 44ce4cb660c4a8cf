//! `hz3`: facade crate. Everything lives in [`hz3_runtime`]; depend on either.
//!
//! `hz3::hz3_allocator!` works with only this crate as a dependency: it tells
//! the macro to name the runtime through this crate.
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
