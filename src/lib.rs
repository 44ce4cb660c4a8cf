//! `hz3`: facade crate. Everything lives in [`hz3_runtime`]; depend on either.
#![no_std]
pub use hz3_runtime::*;
