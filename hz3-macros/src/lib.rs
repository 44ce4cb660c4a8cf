//! placeholder; the macro helper writes this crate.
use proc_macro::TokenStream;
#[proc_macro]
pub fn hz3_allocator(_input: TokenStream) -> TokenStream { TokenStream::new() }
