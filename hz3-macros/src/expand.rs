//! Code generation for `hz3_allocator!`.
//!
//! Owns: what one validated declaration expands to — the zero-sized struct, its
//! inherent consts and helpers, the `hz3_runtime::Config` impl with the type's own
//! `State` static and thread-local slot (a `thread_local!` word, or with `export: c`
//! on `x86_64` Linux an initial-exec `.tbss` word read through `@GOTTPOFF`), the
//! `GlobalAlloc` impl, and with `export: c` the `#[no_mangle]` C allocation symbols.
//! Everything it emits names the runtime by absolute path and forwards to
//! `hz3_runtime::__private`.
//!
//! Must never: contain allocator logic, or emit code that can panic or `unwrap`.

use crate::parse::{Decl, Export, Input, Ptag};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::LitStr;

/// Expands a validated invocation. `seed` makes the TLS symbols of this invocation
/// unique in the final link (see `lib.rs`).
pub fn expand(input: &Input, seed: u64) -> TokenStream {
    let rt = input
        .runtime
        .clone()
        .unwrap_or_else(|| quote!(::hz3_runtime));
    input
        .decls
        .iter()
        .enumerate()
        .map(|(index, decl)| expand_decl(decl, &rt, &tls_symbol(decl, seed, index)))
        .collect()
}

/// The assembler name of a type's initial-exec TLS word:
/// `__hz3_tls_<Name>_<seed>_<index in invocation>`, ASCII only.
pub fn tls_symbol(decl: &Decl, seed: u64, index: usize) -> String {
    let name: String = decl
        .ident
        .unraw()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("__hz3_tls_{name}_{seed:016x}_{index}")
}

fn doc(text: &str) -> TokenStream {
    quote!(#[doc = #text])
}

fn expand_decl(decl: &Decl, rt: &TokenStream, tls_sym: &str) -> TokenStream {
    let Decl {
        attrs,
        vis,
        ident,
        flags,
    } = decl;
    let name = ident.unraw().to_string();
    let f = flags;

    let default_doc = if attrs.iter().any(|a| a.path().is_ident("doc")) {
        TokenStream::new()
    } else {
        doc(&format!(
            " hz3 allocator type `{name}`, declared with `hz3_allocator!`."
        ))
    };

    let s110_meta = f.s110_meta;
    let free_fast = f.free_fast;
    let stats = f.stats;
    let failfast = f.failfast;
    let harden = f.harden;
    let purge = f.purge;
    let fine_classes = f.fine_classes;
    let export_c = f.export == Export::C;
    let (ptag, ptag_name) = match f.ptag {
        Ptag::Off => (quote!(#rt::Ptag::Off), "off"),
        Ptag::First => (quote!(#rt::Ptag::First), "first"),
        Ptag::Late => (quote!(#rt::Ptag::Late), "late"),
    };
    let shards = Literal::usize_unsuffixed(f.shards as usize);
    let arena_gib = Literal::usize_suffixed(f.arena_gib as usize);

    let doc_new = doc(&format!(
        " Returns the `{name}` allocator handle. The type is zero-sized and all its \
         state lives in per-type statics, so every handle is the same allocator: \
         `#[global_allocator] static A: {name} = {name}::new();`"
    ));
    let doc_name = doc(" The type's name, as printed in its stats line.");
    let doc_s110 = doc(&format!(
        " Flag `s110_meta` (`{s110_meta}` here): whether segment headers carry the \
         per-page `bin_plus1` array."
    ));
    let doc_free_fast = doc(&format!(
        " Flag `free_fast` (`{free_fast}` here): whether `free` tries the S110 page meta first."
    ));
    let doc_ptag = doc(&format!(
        " Flag `ptag` (`{ptag_name}` here): position of the page-tag map in the free route."
    ));
    let doc_stats = doc(&format!(
        " Flag `stats` (`{stats}` here): whether route events are counted and printed at exit."
    ));
    let doc_failfast = doc(&format!(
        " Flag `failfast` (`{failfast}` here): whether any detected inconsistency aborts."
    ));
    let doc_harden = doc(&format!(
        " Flag `harden` (`{harden}` here): whether free-list links are keyed and checked, \
         and double and interior frees abort."
    ));
    let doc_shards = doc(&format!(
        " Flag `shards` (`{}` here): number of owner shards.",
        f.shards
    ));
    let doc_arena = doc(&format!(
        " Flag `arena_gib` (`{}` here), in bytes: address space reserved for the arena.",
        f.arena_gib
    ));
    let doc_purge = doc(&format!(
        " Flag `purge` (`{purge}` here): whether empty pages are returned to the OS."
    ));
    let doc_fine = doc(&format!(
        " Flag `fine_classes` (`{fine_classes}` here): whether requests of 257 B to 2 KiB \
         get 16-byte size classes (else four classes per doubling)."
    ));
    let doc_export = doc(&format!(
        " Flag `export` (`{}` here): whether this type defines the C allocation symbols.",
        if export_c { "c" } else { "none" }
    ));

    let (tls_asm, tls) = expand_tls(export_c, tls_sym);
    let capi = if export_c {
        let mut c = expand_capi(ident, rt);
        c.extend(expand_cxx(ident, rt));
        c
    } else {
        TokenStream::new()
    };

    quote! {
        #(#attrs)*
        #default_doc
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::default::Default
        )]
        #vis struct #ident {
            _private: (),
        }

        impl #ident {
            #doc_new
            #[inline]
            #[must_use]
            pub const fn new() -> Self {
                #ident { _private: () }
            }
            #doc_name
            pub const NAME: &'static str = #name;
            #doc_s110
            pub const S110_META: bool = #s110_meta;
            #doc_free_fast
            pub const FREE_FAST: bool = #free_fast;
            #doc_ptag
            pub const PTAG: #rt::Ptag = #ptag;
            #doc_stats
            pub const STATS: bool = #stats;
            #doc_failfast
            pub const FAILFAST: bool = #failfast;
            #doc_harden
            pub const HARDEN: bool = #harden;
            #doc_shards
            pub const SHARDS: usize = #shards;
            #doc_arena
            pub const ARENA_SIZE: usize = #arena_gib << 30;
            #doc_purge
            pub const PURGE: bool = #purge;
            #doc_fine
            pub const FINE_CLASSES: bool = #fine_classes;
            #doc_export
            pub const EXPORT_C: bool = #export_c;

            /// A snapshot of this type's counters (all zero unless the type has `stats: true`).
            #[inline]
            pub fn stats() -> #rt::StatsSnapshot {
                #rt::__private::stats::<#ident>()
            }

            /// Usable size of a block allocated by this type; `None` when `ptr` is not
            /// one of this type's blocks.
            ///
            /// # Safety
            ///
            /// `ptr` must be null, a block returned by this type's allocation
            /// functions that has not been freed yet, or a pointer this type never
            /// handed out (then the answer is `None`).
            #[inline]
            pub unsafe fn usable_size(ptr: *const u8) -> ::core::option::Option<usize> {
                // SAFETY: the caller upholds this function's contract, which is the
                // runtime entry point's contract.
                unsafe { #rt::__private::usable_size::<#ident>(ptr) }
            }
        }

        #tls_asm

        const _: () = {
            #tls

            impl #rt::Config for #ident {
                const NAME: &'static str = #name;
                const S110_META: bool = #s110_meta;
                const FREE_FAST: bool = #free_fast;
                const PTAG: #rt::Ptag = #ptag;
                const STATS: bool = #stats;
                const FAILFAST: bool = #failfast;
                const HARDEN: bool = #harden;
                const SHARDS: usize = #shards;
                const ARENA_SIZE: usize = #arena_gib << 30;
                const PURGE: bool = #purge;
                const FINE_CLASSES: bool = #fine_classes;

                #[inline(always)]
                fn state() -> &'static #rt::State<Self> {
                    static __HZ3_STATE: #rt::State<#ident> = #rt::State::new();
                    &__HZ3_STATE
                }
                #[inline(always)]
                fn tls_get() -> *mut u8 {
                    __hz3_tls_get()
                }
                #[inline(always)]
                fn tls_set(p: *mut u8) {
                    __hz3_tls_set(p)
                }
            }

            // SAFETY: every method forwards its arguments unchanged to the runtime
            // entry point of the same name, which upholds the `GlobalAlloc` contract.
            unsafe impl ::core::alloc::GlobalAlloc for #ident {
                #[inline]
                unsafe fn alloc(&self, layout: ::core::alloc::Layout) -> *mut u8 {
                    // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
                    unsafe { #rt::__private::alloc::<#ident>(layout.size(), layout.align()) }
                }
                #[inline]
                unsafe fn dealloc(&self, ptr: *mut u8, layout: ::core::alloc::Layout) {
                    // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
                    unsafe {
                        #rt::__private::dealloc::<#ident>(ptr, layout.size(), layout.align())
                    }
                }
                #[inline]
                unsafe fn alloc_zeroed(&self, layout: ::core::alloc::Layout) -> *mut u8 {
                    // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
                    unsafe {
                        #rt::__private::alloc_zeroed::<#ident>(layout.size(), layout.align())
                    }
                }
                #[inline]
                unsafe fn realloc(
                    &self,
                    ptr: *mut u8,
                    layout: ::core::alloc::Layout,
                    new_size: usize,
                ) -> *mut u8 {
                    // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
                    unsafe {
                        #rt::__private::realloc::<#ident>(
                            ptr,
                            layout.size(),
                            layout.align(),
                            new_size,
                        )
                    }
                }
            }

            #capi
        };
    }
}

/// The `thread_local!` slot: const-initialised `Cell<*mut u8>` without `Drop`, so no
/// lazy registration and no destructor; `with` never fails on it.
/// `cfg` is put on every item (empty for an unconditional slot).
fn thread_local_slot(cfg: &TokenStream) -> TokenStream {
    quote! {
        #cfg
        ::std::thread_local! {
            static __HZ3_SLOT: ::core::cell::Cell<*mut u8> =
                const { ::core::cell::Cell::new(::core::ptr::null_mut()) };
        }
        #cfg
        #[inline(always)]
        fn __hz3_tls_get() -> *mut u8 {
            __HZ3_SLOT.with(|c| c.get())
        }
        #cfg
        #[inline(always)]
        fn __hz3_tls_set(p: *mut u8) {
            __HZ3_SLOT.with(|c| c.set(p))
        }
    }
}

/// The per-type thread-local word and its `__hz3_tls_get` / `__hz3_tls_set` accessors,
/// as (module-level items, items for the `const _` block). `global_asm!` is only
/// accepted at module level; it is unnamed, so it adds no name to the module.
fn expand_tls(export_c: bool, sym: &str) -> (TokenStream, TokenStream) {
    if !export_c {
        return (TokenStream::new(), thread_local_slot(&TokenStream::new()));
    }
    let portable =
        thread_local_slot(&quote!(#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]));
    let lit = |s: String| LitStr::new(&s, proc_macro2::Span::call_site());
    // A global hidden symbol: the accessors may be inlined into any codegen unit or
    // downstream crate, where a file-local label would be undefined; `.hidden` keeps
    // it out of the dynamic symbol table. The name is unique per type (see lib.rs).
    let asm_lines = [
        lit(".pushsection .tbss,\"awT\",@nobits".into()),
        lit(".p2align 3".into()),
        lit(format!(".globl {sym}")),
        lit(format!(".hidden {sym}")),
        lit(format!(".type {sym},@object")),
        lit(format!(".size {sym},8")),
        lit(format!("{sym}:")),
        lit(".zero 8".into()),
        lit(".popsection".into()),
    ];
    let load_off = lit(format!("mov {{t}}, qword ptr [rip + {sym}@GOTTPOFF]"));
    let read = lit("mov {v}, qword ptr fs:[{t}]".into());
    let write = lit("mov qword ptr fs:[{t}], {v}".into());
    let module_level = quote! {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        ::core::arch::global_asm!(#(#asm_lines),*);
    };
    let block = quote! {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        #[inline(always)]
        fn __hz3_tls_get() -> *mut u8 {
            let v: *mut u8;
            // SAFETY: the symbol is an 8-byte, 8-aligned `.tbss` object defined by the
            // `global_asm!` above; its GOT slot holds its offset from the thread
            // pointer (initial-exec model), so `fs:[offset]` is this thread's copy.
            // The asm only reads that word and touches no stack or flags.
            unsafe {
                ::core::arch::asm!(
                    #load_off,
                    #read,
                    t = out(reg) _,
                    v = out(reg) v,
                    options(nostack, preserves_flags, readonly, pure),
                );
            }
            v
        }

        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        #[inline(always)]
        fn __hz3_tls_set(p: *mut u8) {
            // SAFETY: as in `__hz3_tls_get`; the asm writes only this thread's copy of
            // the word, which nothing else aliases.
            unsafe {
                ::core::arch::asm!(
                    #load_off,
                    #write,
                    t = out(reg) _,
                    v = in(reg) p,
                    options(nostack, preserves_flags),
                );
            }
        }

        #portable
    };
    (module_level, block)
}

/// The `#[no_mangle]` C allocation symbols of an `export: c` type.
fn expand_capi(ident: &syn::Ident, rt: &TokenStream) -> TokenStream {
    let void = quote!(*mut ::core::ffi::c_void);
    let int = quote!(::core::ffi::c_int);
    // (name, parameters, arguments, return type)
    let table = [
        (
            "malloc",
            quote!(size: usize),
            quote!(size),
            quote!(-> #void),
        ),
        ("free", quote!(ptr: #void), quote!(ptr), quote!()),
        (
            "calloc",
            quote!(nmemb: usize, size: usize),
            quote!(nmemb, size),
            quote!(-> #void),
        ),
        (
            "realloc",
            quote!(ptr: #void, size: usize),
            quote!(ptr, size),
            quote!(-> #void),
        ),
        (
            "reallocarray",
            quote!(ptr: #void, nmemb: usize, size: usize),
            quote!(ptr, nmemb, size),
            quote!(-> #void),
        ),
        (
            "posix_memalign",
            quote!(memptr: *mut #void, alignment: usize, size: usize),
            quote!(memptr, alignment, size),
            quote!(-> #int),
        ),
        (
            "aligned_alloc",
            quote!(alignment: usize, size: usize),
            quote!(alignment, size),
            quote!(-> #void),
        ),
        (
            "memalign",
            quote!(alignment: usize, size: usize),
            quote!(alignment, size),
            quote!(-> #void),
        ),
        (
            "valloc",
            quote!(size: usize),
            quote!(size),
            quote!(-> #void),
        ),
        (
            "pvalloc",
            quote!(size: usize),
            quote!(size),
            quote!(-> #void),
        ),
        (
            "malloc_usable_size",
            quote!(ptr: #void),
            quote!(ptr),
            quote!(-> usize),
        ),
    ];
    table
        .into_iter()
        .map(|(name, params, args, ret)| {
            let f = format_ident!("{}", name);
            let d = doc(&format!(" C `{name}`, served by `{}`.", ident.unraw()));
            quote! {
                #d
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn #f(#params) #ret {
                    // SAFETY: the C caller upholds this function's C contract, which is
                    // the contract of the runtime entry point of the same name.
                    unsafe { #rt::__private::capi::#f::<#ident>(#args) }
                }
            }
        })
        .collect()
}

/// The assembly body of a throwing `operator new` thunk (x86_64 System V):
/// one attempt through `{attempt}` (a Rust function that never unwinds), then
/// the new-handler loop, then a jump to `std::__throw_bad_alloc` made after
/// the thunk's frame is popped, so that no Rust frame is on the stack when a
/// C++ exception is thrown. `aligned`: the alignment in `rsi` is kept too.
/// The CFI lines describe the frame for a handler's exception.
fn new_thunk_asm(aligned: bool) -> Vec<LitStr> {
    // Bytes pushed: the arguments (and padding to keep calls 16-byte aligned).
    let frame = if aligned { 24 } else { 8 };
    let mut lines: Vec<String> = vec![".cfi_startproc".into(), "push rdi".into(), ".cfi_adjust_cfa_offset 8".into()];
    if aligned {
        lines.extend(["push rsi", ".cfi_adjust_cfa_offset 8", "sub rsp, 8", ".cfi_adjust_cfa_offset 8"].map(String::from));
    }
    let ret = [
        format!("add rsp, {frame}"),
        format!(".cfi_adjust_cfa_offset -{frame}"),
        "ret".into(),
        format!(".cfi_adjust_cfa_offset {frame}"),
    ];
    lines.extend(["call {attempt}", "test rax, rax", "jz 3f"].map(String::from));
    lines.extend(ret.iter().cloned());
    // 3: no memory. Call the new-handler (it frees memory, throws or aborts), retry.
    lines.extend(["3:", "call {handler}", "test rax, rax", "jz 4f", "call rax"].map(String::from));
    if aligned {
        lines.extend(["mov rdi, qword ptr [rsp + 16]", "mov rsi, qword ptr [rsp + 8]"].map(String::from));
    } else {
        lines.push("mov rdi, qword ptr [rsp]".into());
    }
    lines.extend(["call {attempt}", "test rax, rax", "jz 3b"].map(String::from));
    lines.extend(ret.iter().cloned());
    // 4: no handler installed: throw std::bad_alloc from the caller's frame.
    lines.extend([
        "4:".into(),
        "call {thrower}".into(),
        format!("add rsp, {frame}"),
        format!(".cfi_adjust_cfa_offset -{frame}"),
        "jmp rax".into(),
        ".cfi_endproc".into(),
    ]);
    lines.into_iter().map(|l| LitStr::new(&l, proc_macro2::Span::call_site())).collect()
}

/// The C++ operators of an `export: c` type: the throwing `new` forms as naked
/// assembly thunks on x86_64 Linux (a Rust `C-unwind` loop elsewhere), the
/// `nothrow` `new` forms and every `delete` form as plain forwards.
fn expand_cxx(ident: &syn::Ident, rt: &TokenStream) -> TokenStream {
    let void = quote!(*mut ::core::ffi::c_void);
    let cx = quote!(#rt::__private::capi_cxx);
    let linux64 = quote!(#[cfg(all(target_arch = "x86_64", target_os = "linux"))]);
    let other = quote!(#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]);
    let mut out = TokenStream::new();
    // (symbol, C++ name, aligned)
    for (sym, what, aligned) in [
        ("_Znwm", "operator new(size_t)", false),
        ("_Znam", "operator new[](size_t)", false),
        ("_ZnwmSt11align_val_t", "operator new(size_t, align_val_t)", true),
        ("_ZnamSt11align_val_t", "operator new[](size_t, align_val_t)", true),
    ] {
        let f = format_ident!("{}", sym);
        let d = doc(&format!(" C++ `{what}`, served by `{}`; throws `std::bad_alloc`.", ident.unraw()));
        let attempt = if aligned { quote!(new_aligned_try) } else { quote!(new_try) };
        let body = new_thunk_asm(aligned);
        let (params, align) = if aligned {
            (quote!(size: usize, align: usize), quote!(align))
        } else {
            (quote!(size: usize), quote!(16))
        };
        out.extend(quote! {
            #d
            #linux64
            #[unsafe(naked)]
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn #f(#params) -> #void {
                ::core::arch::naked_asm!(
                    #(#body),*,
                    attempt = sym #cx::#attempt::<#ident>,
                    handler = sym #cx::cxx_new_handler,
                    thrower = sym #cx::cxx_bad_alloc_thrower,
                )
            }
            #d
            #other
            #[unsafe(no_mangle)]
            pub unsafe extern "C-unwind" fn #f(#params) -> #void {
                // SAFETY: the C++ caller upholds `operator new`'s contract.
                unsafe { #cx::new_or_throw::<#ident>(size, #align) }
            }
        });
    }
    let nt = quote!(_nothrow: *const ::core::ffi::c_void);
    // (symbol, C++ name, parameters, call)
    let forwards = [
        ("_ZnwmRKSt9nothrow_t", "operator new(size_t, nothrow_t)", quote!(size: usize, #nt), quote!(-> #void), quote!(new_nothrow::<#ident>(size))),
        ("_ZnamRKSt9nothrow_t", "operator new[](size_t, nothrow_t)", quote!(size: usize, #nt), quote!(-> #void), quote!(new_nothrow::<#ident>(size))),
        ("_ZnwmSt11align_val_tRKSt9nothrow_t", "operator new(size_t, align_val_t, nothrow_t)", quote!(size: usize, align: usize, #nt), quote!(-> #void), quote!(new_aligned_nothrow::<#ident>(size, align))),
        ("_ZnamSt11align_val_tRKSt9nothrow_t", "operator new[](size_t, align_val_t, nothrow_t)", quote!(size: usize, align: usize, #nt), quote!(-> #void), quote!(new_aligned_nothrow::<#ident>(size, align))),
        ("_ZdlPv", "operator delete(void*)", quote!(ptr: #void), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdaPv", "operator delete[](void*)", quote!(ptr: #void), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdlPvm", "operator delete(void*, size_t)", quote!(ptr: #void, size: usize), quote!(), quote!(delete_sized::<#ident>(ptr, size, 16))),
        ("_ZdaPvm", "operator delete[](void*, size_t)", quote!(ptr: #void, size: usize), quote!(), quote!(delete_sized::<#ident>(ptr, size, 16))),
        ("_ZdlPvSt11align_val_t", "operator delete(void*, align_val_t)", quote!(ptr: #void, _align: usize), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdaPvSt11align_val_t", "operator delete[](void*, align_val_t)", quote!(ptr: #void, _align: usize), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdlPvmSt11align_val_t", "operator delete(void*, size_t, align_val_t)", quote!(ptr: #void, size: usize, align: usize), quote!(), quote!(delete_sized::<#ident>(ptr, size, align))),
        ("_ZdaPvmSt11align_val_t", "operator delete[](void*, size_t, align_val_t)", quote!(ptr: #void, size: usize, align: usize), quote!(), quote!(delete_sized::<#ident>(ptr, size, align))),
        ("_ZdlPvRKSt9nothrow_t", "operator delete(void*, nothrow_t)", quote!(ptr: #void, #nt), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdaPvRKSt9nothrow_t", "operator delete[](void*, nothrow_t)", quote!(ptr: #void, #nt), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdlPvSt11align_val_tRKSt9nothrow_t", "operator delete(void*, align_val_t, nothrow_t)", quote!(ptr: #void, _align: usize, #nt), quote!(), quote!(delete::<#ident>(ptr))),
        ("_ZdaPvSt11align_val_tRKSt9nothrow_t", "operator delete[](void*, align_val_t, nothrow_t)", quote!(ptr: #void, _align: usize, #nt), quote!(), quote!(delete::<#ident>(ptr))),
    ];
    for (sym, what, params, ret, call) in forwards {
        let f = format_ident!("{}", sym);
        let d = doc(&format!(" C++ `{what}`, served by `{}`.", ident.unraw()));
        out.extend(quote! {
            #d
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn #f(#params) #ret {
                // SAFETY: the C++ caller upholds this operator's contract, which is
                // the contract of the runtime function it forwards to.
                unsafe { #cx::#call }
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_input;

    fn expand_str(ts: TokenStream) -> String {
        match parse_input(ts) {
            Ok(input) => expand(&input, 0x1234).to_string(),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn tls_symbols_are_ascii_and_indexed() {
        let input =
            parse_input(quote! { struct r#Été; struct B; }).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tls_symbol(&input.decls[0], 0xab, 0),
            "__hz3_tls__t__00000000000000ab_0"
        );
        assert_eq!(
            tls_symbol(&input.decls[1], 0xab, 1),
            "__hz3_tls_B_00000000000000ab_1"
        );
    }

    #[test]
    fn plain_type_uses_thread_local_only() {
        let s = expand_str(quote! { pub struct Plain; });
        assert!(s.contains("thread_local"));
        assert!(!s.contains("GOTTPOFF") && !s.contains("global_asm"));
        assert!(!s.contains("no_mangle"));
        assert!(s.contains("impl :: hz3_runtime :: Config for Plain"));
        assert!(s.contains("GlobalAlloc for Plain"));
        assert!(
            s.contains("hz3 allocator type `Plain`"),
            "default doc added"
        );
    }

    #[test]
    fn export_c_emits_ie_tls_and_c_symbols() {
        let s = expand_str(quote! { /// Doc.
        pub struct Lib<export: c>; });
        assert!(s.contains("__hz3_tls_Lib_0000000000001234_0@GOTTPOFF"));
        assert!(s.contains(".tbss"));
        assert!(s.contains("not (all (target_arch = \"x86_64\" , target_os = \"linux\"))"));
        for f in [
            "malloc",
            "free",
            "calloc",
            "realloc",
            "reallocarray",
            "posix_memalign",
            "aligned_alloc",
            "memalign",
            "valloc",
            "pvalloc",
            "malloc_usable_size",
        ] {
            let def = format!("extern \"C\" fn {f} (");
            assert!(s.contains(&def), "{f}");
            let fwd = format!("capi :: {f} :: < Lib >");
            assert!(s.contains(&fwd), "{f}");
        }
        assert!(
            !s.contains("hz3 allocator type `Lib`"),
            "user doc kept, no default doc"
        );
    }

    #[test]
    fn export_c_emits_cxx_operators() {
        let s = expand_str(quote! { pub struct Lib<export: c>; });
        for f in [
            "_Znwm", "_Znam", "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
        ] {
            // A naked thunk on x86_64 Linux, a C-unwind loop elsewhere.
            assert_eq!(s.matches(&format!("extern \"C\" fn {f} (")).count(), 1, "{f}");
            assert_eq!(s.matches(&format!("extern \"C-unwind\" fn {f} (")).count(), 1, "{f}");
        }
        assert_eq!(s.matches("naked_asm !").count(), 4);
        assert!(s.contains("capi_cxx :: new_try :: < Lib >"));
        assert!(s.contains("capi_cxx :: new_aligned_try :: < Lib >"));
        for f in [
            "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_tRKSt9nothrow_t",
            "_ZnamSt11align_val_tRKSt9nothrow_t", "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm",
            "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
            "_ZdaPvmSt11align_val_t", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
            "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
        ] {
            assert_eq!(s.matches(&format!("extern \"C\" fn {f} (")).count(), 1, "{f}");
        }
        let plain = expand_str(quote! { pub struct Plain; });
        assert!(!plain.contains("_Znwm") && !plain.contains("capi_cxx"));
    }

    #[test]
    fn new_thunk_keeps_calls_aligned_and_frame_described() {
        for aligned in [false, true] {
            let lines: Vec<String> = new_thunk_asm(aligned).iter().map(|l| l.value()).collect();
            // Entry: rsp = 8 mod 16; every call must see rsp = 0 mod 16.
            let mut depth: i64 = 8;
            let mut cfa: i64 = 8;
            for l in &lines {
                if l.starts_with("push ") {
                    depth += 8;
                } else if let Some(n) = l.strip_prefix("sub rsp, ") {
                    depth += n.parse::<i64>().unwrap();
                } else if let Some(n) = l.strip_prefix("add rsp, ") {
                    depth -= n.parse::<i64>().unwrap();
                } else if let Some(n) = l.strip_prefix(".cfi_adjust_cfa_offset ") {
                    cfa += n.parse::<i64>().unwrap();
                } else if l.starts_with("call ") {
                    assert_eq!(depth % 16, 0, "misaligned call: {l} ({aligned})");
                    assert_eq!(depth, cfa, "CFI out of step at {l} ({aligned})");
                } else if l == "ret" || l == "jmp rax" {
                    assert_eq!(depth, 8, "frame not popped before {l} ({aligned})");
                    assert_eq!(cfa, 8, "CFI out of step at {l} ({aligned})");
                } else if l.ends_with(':') {
                    // Labels 3 and 4 are entered with the frame in place.
                    depth = if aligned { 32 } else { 16 };
                    assert_eq!(depth, cfa, "CFI out of step at label {l} ({aligned})");
                }
            }
        }
    }

    #[test]
    fn values_and_runtime_override() {
        let s = expand_str(quote! {
            #![hz3_runtime = crate::rt]
            struct T<ptag: first, shards: 7, arena_gib: 3>;
        });
        assert!(s.contains("crate :: rt :: Ptag :: First"));
        assert!(s.contains("SHARDS : usize = 7 ;"));
        assert!(s.contains("ARENA_SIZE : usize = 3usize << 30 ;"));
        assert!(!s.contains("hz3_runtime ::"));
    }

    #[test]
    fn no_unwrap_or_panic_in_generated_code() {
        let s = expand_str(quote! { struct A<export: c>; struct B; });
        for bad in ["unwrap", "expect", "panic", "unreachable"] {
            assert!(!s.contains(bad), "{bad}");
        }
    }
}
