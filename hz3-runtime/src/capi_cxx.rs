//! The C++ allocation operators: `operator new` / `new[]` (plain, `nothrow`,
//! `std::align_val_t`) and `operator delete` / `delete[]` (plain, sized,
//! aligned, sized and aligned, `nothrow`), generic over one generated type.
//!
//! Owns: the C++ contract on top of the engine — `new(0)` as a unique block,
//! the new-handler loop and `std::bad_alloc` of the throwing forms, null from
//! the `nothrow` forms, the use of a sized delete's size — and the lookup of
//! the C++ runtime's `std::get_new_handler` and `std::__throw_bad_alloc`
//! (with `dlsym`, so that a C program never needs a C++ runtime).
//!
//! Must never: let a C++ exception pass through a Rust frame. The throwing
//! forms are assembly thunks (emitted by `hz3_allocator!` for `export: c`):
//! they call [`new_try`] / [`new_aligned_try`] (plain Rust, never unwinding),
//! call the new-handler themselves (a handler's exception unwinds through the
//! thunk's frame only, described by CFI), and jump to `__throw_bad_alloc`
//! after popping their frame, so the exception starts in the operator's
//! caller's frame. (Rust cannot unwind a foreign exception through its own
//! frames under `panic = "abort"`, the release profile of the presets.)
//! Like [`crate::capi`], it never allocates through Rust's global allocator,
//! panics or formats.
//!
//! `hz3_allocator!` with `export: c` emits the mangled symbols (`_Znwm`,
//! `_ZdlPvm`, `_ZnwmSt11align_val_t`, ...) that call these functions.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::__private as engine;
use crate::{Config, Ptag};

/// The default alignment of `operator new` (`__STDCPP_DEFAULT_NEW_ALIGNMENT__`
/// on x86_64 Linux), also the C minimum.
const NEW_ALIGN: usize = 16;

/// Largest request passed on to the engine (as in `capi`).
const MAX_REQUEST: usize = (isize::MAX as usize) >> 1;

/// One allocation attempt for `operator new(size)`: the thread-cache pop
/// inlined, then the engine's slow path; null when memory is out (the caller
/// then runs the new-handler loop or returns null).
///
/// `align` is ignored (the thunks pass whatever their second register holds).
///
/// # Safety
/// Callable from any thread at any time, as `operator new`.
pub unsafe extern "C" fn new_try<C: Config>(size: usize, _align: usize) -> *mut c_void {
    // SAFETY: NEW_ALIGN is a power of two.
    let p = unsafe { engine::alloc_cached::<C>(size, NEW_ALIGN) };
    if !p.is_null() {
        return p.cast();
    }
    new_slow::<C>(size)
}

/// [`new_try`] when the cache cannot serve: size 0 is a unique block, sizes
/// no mapping could hold fail.
#[cold]
#[inline(never)]
fn new_slow<C: Config>(size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return core::ptr::null_mut();
    }
    // SAFETY: NEW_ALIGN is a power of two; `alloc_slow` returns null on failure.
    unsafe { engine::alloc_slow::<C>(size, NEW_ALIGN, false) }.cast()
}

/// One allocation attempt for `operator new(size, std::align_val_t(align))`;
/// null when memory is out or `align` is not a power of two.
///
/// # Safety
/// As [`new_try`].
pub unsafe extern "C" fn new_aligned_try<C: Config>(size: usize, align: usize) -> *mut c_void {
    if align <= NEW_ALIGN {
        // SAFETY: forwarded contract.
        return unsafe { new_try::<C>(size, align) };
    }
    if !align.is_power_of_two() || size > MAX_REQUEST || align > MAX_REQUEST {
        return core::ptr::null_mut();
    }
    // SAFETY: `alloc` accepts any non-zero size and power-of-two alignment and
    // returns null on failure.
    unsafe { engine::alloc::<C>(size.max(1), align) }.cast()
}

/// `operator new(size, std::nothrow)`: null when memory is out (the
/// new-handler is not called).
///
/// # Safety
/// As [`new_try`].
#[inline]
pub unsafe fn new_nothrow<C: Config>(size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { new_try::<C>(size, NEW_ALIGN) }
}

/// `operator new(size, std::align_val_t(align), std::nothrow)`.
///
/// # Safety
/// As [`new_try`].
#[inline]
pub unsafe fn new_aligned_nothrow<C: Config>(size: usize, align: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { new_aligned_try::<C>(size, align) }
}

/// `operator delete(p)` (and the `nothrow` and aligned forms): `free`.
///
/// # Safety
/// `p` is null or a live block from this type's `new`/`malloc` family.
#[inline]
pub unsafe fn delete<C: Config>(p: *mut c_void) {
    // SAFETY: forwarded contract of `free`.
    unsafe { crate::capi::free::<C>(p) }
}

/// `operator delete(p, size)` (and `delete(p, size, align)`): with no tag map
/// (`ptag: off`) the size gives the block's bin, so the engine's sized free
/// reads only the owner; with a tag map the tag gives bin and owner in one
/// load and the size adds nothing, so it is `free`.
///
/// # Safety
/// `p` is null or a live block from this type's `new` family allocated with
/// `size` bytes and alignment `align`.
#[inline]
pub unsafe fn delete_sized<C: Config>(p: *mut c_void, size: usize, align: usize) {
    if C::PTAG == Ptag::Off && size != 0 && align.is_power_of_two() {
        let st = C::state();
        let off = (p as usize).wrapping_sub(st.arena.base.load(Ordering::Relaxed));
        if off < st.arena.len.load(Ordering::Relaxed) {
            // SAFETY: `p` is in this type's arena, hence one of its blocks
            // (the caller's contract), allocated with this size and alignment.
            unsafe { engine::dealloc::<C>(p.cast(), size, align.max(NEW_ALIGN)) };
            return;
        }
    }
    // SAFETY: forwarded contract of `free`.
    unsafe { crate::capi::free::<C>(p) }
}

// ---------------------------------------------------------------------------
// The C++ runtime's new-handler and bad_alloc

/// A resolved symbol: 0 = not looked up yet, `ABSENT` = not in the process.
const ABSENT: usize = 1;
static GET_NEW_HANDLER: AtomicUsize = AtomicUsize::new(0);
static THROW_BAD_ALLOC: AtomicUsize = AtomicUsize::new(0);

/// The address of `name` in the process's global scope (cached in `slot`),
/// or `None`. Relaxed: a racing thread at worst looks the symbol up again.
fn lookup(slot: &AtomicUsize, name: &core::ffi::CStr) -> Option<usize> {
    let mut v = slot.load(Ordering::Relaxed);
    if v == 0 {
        // SAFETY: `RTLD_DEFAULT` with a NUL-terminated name is a plain lookup
        // (it may allocate, which this allocator serves).
        let a = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
        v = if a == 0 { ABSENT } else { a };
        slot.store(v, Ordering::Relaxed);
    }
    (v != ABSENT).then_some(v)
}

/// The installed new-handler (`std::get_new_handler()`), or 0 when none is
/// installed or the process has no C++ runtime. Called by the throwing
/// thunks after a failed attempt.
pub extern "C" fn cxx_new_handler() -> usize {
    match lookup(&GET_NEW_HANDLER, c"_ZSt15get_new_handlerv") {
        // SAFETY: the symbol is `std::new_handler std::get_new_handler() noexcept`,
        // which takes nothing and returns a function pointer.
        Some(f) => unsafe { core::mem::transmute::<usize, extern "C" fn() -> usize>(f)() },
        None => 0,
    }
}

/// The address of `std::__throw_bad_alloc()` (the thunks jump to it after
/// popping their frame); aborts with a one-line message when the process has
/// no C++ runtime that provides it.
pub extern "C" fn cxx_bad_alloc_thrower() -> usize {
    match lookup(&THROW_BAD_ALLOC, c"_ZSt17__throw_bad_allocv") {
        Some(f) => f,
        None => {
            crate::os::write_once(
                2,
                b"hz3: operator new: out of memory, and no std::bad_alloc to throw (no libstdc++)\n",
            );
            crate::os::abort()
        }
    }
}

/// The throwing `operator new` where the assembly thunks are not available
/// (not x86_64 Linux): the same loop in Rust. A handler's exception or the
/// `bad_alloc` unwinds through this frame, which needs `panic = "unwind"`;
/// under `panic = "abort"` the process aborts instead.
///
/// # Safety
/// As [`new_try`].
pub unsafe extern "C-unwind" fn new_or_throw<C: Config>(size: usize, align: usize) -> *mut c_void {
    loop {
        // SAFETY: forwarded contract.
        let p = unsafe { new_aligned_try::<C>(size, align) };
        if !p.is_null() {
            return p;
        }
        let h = cxx_new_handler();
        if h == 0 {
            let t = cxx_bad_alloc_thrower();
            // SAFETY: `std::__throw_bad_alloc()` takes nothing and throws.
            unsafe { core::mem::transmute::<usize, extern "C-unwind" fn()>(t)() };
            crate::os::abort();
        }
        // SAFETY: a `std::new_handler` is `void (*)()`; it may throw bad_alloc.
        unsafe { core::mem::transmute::<usize, extern "C-unwind" fn()>(h)() };
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::State;
    use std::vec::Vec;

    macro_rules! cxx_config {
        ($m:ident, $ptag:expr) => {
            mod $m {
                use super::*;
                std::thread_local! {
                    static SLOT: core::cell::Cell<*mut u8> = const { core::cell::Cell::new(core::ptr::null_mut()) };
                }
                pub struct T;
                impl Config for T {
                    const NAME: &'static str = stringify!($m);
                    const S110_META: bool = false;
                    const FREE_FAST: bool = false;
                    const PTAG: Ptag = $ptag;
                    const STATS: bool = true;
                    const FAILFAST: bool = false;
                    const SHARDS: usize = 4;
                    const ARENA_SIZE: usize = 4 << 30;
                    const PURGE: bool = true;
                    fn state() -> &'static State<Self> {
                        static S: State<T> = State::new();
                        &S
                    }
                    fn tls_get() -> *mut u8 {
                        SLOT.with(|c| c.get())
                    }
                    fn tls_set(p: *mut u8) {
                        SLOT.with(|c| c.set(p))
                    }
                }
            }
        };
    }
    cxx_config!(cxx_off, Ptag::Off);
    cxx_config!(cxx_late, Ptag::Late);

    /// Sized and aligned deletes give every block back to the bin it came
    /// from: later `new`s of the same request get the same block back.
    fn sized_delete_returns_blocks_to_their_bin<C: Config>() {
        // SAFETY: every block passed to a delete came from a `new` of the same
        // type with the same size and alignment (or, for the last one, from
        // libc's malloc, which the delete hands on).
        std::thread::spawn(|| unsafe {
            for (size, align) in [
                (1, 16),
                (24, 16),
                (100, 16),
                (2048, 16),
                (2049, 16),
                (40000, 16),
                (100, 64),
                (5000, 4096),
            ] {
                let p = new_aligned_try::<C>(size, align) as *mut u8;
                assert!(!p.is_null() && (p as usize).is_multiple_of(align), "{size}/{align}");
                p.write_bytes(0x77, size);
                delete_sized::<C>(p.cast(), size, align);
                // The bin hands out its refilled blocks first, then the freed ones.
                let mut got = Vec::new();
                let mut back = false;
                while !back && got.len() < 4096 {
                    let q = new_aligned_try::<C>(size, align);
                    assert!(!q.is_null());
                    back = core::ptr::eq(q as *const u8, p);
                    got.push(q);
                }
                assert!(back, "{}: block of {size}/{align} not back in its bin", C::NAME);
                for q in got {
                    delete_sized::<C>(q, size, align);
                }
            }
            // Large blocks and a size-0 block.
            let big = new_try::<C>(3 << 20, 0);
            assert!(!big.is_null());
            delete_sized::<C>(big, 3 << 20, 16);
            let (a, b) = (new_try::<C>(0, 0), new_try::<C>(0, 0));
            assert!(!a.is_null() && !b.is_null() && a != b);
            delete_sized::<C>(a, 0, 16);
            delete::<C>(b);
            // A pointer of another allocator goes to it (no crash, no leak into our bins).
            let foreign = libc::malloc(100);
            delete_sized::<C>(foreign, 100, 16);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn sized_delete_without_tag_map() {
        sized_delete_returns_blocks_to_their_bin::<cxx_off::T>();
    }

    #[test]
    fn sized_delete_with_tag_map() {
        sized_delete_returns_blocks_to_their_bin::<cxx_late::T>();
    }

    #[test]
    fn failed_requests_return_null() {
        // SAFETY: only requests, no block is used or freed.
        unsafe {
            assert!(new_try::<cxx_late::T>(1 << 60, 0).is_null());
            assert!(new_aligned_try::<cxx_late::T>(1 << 60, 64).is_null());
            assert!(
                new_aligned_try::<cxx_late::T>(100, 48).is_null(),
                "alignment not a power of two"
            );
            assert!(new_nothrow::<cxx_late::T>(usize::MAX).is_null());
            assert!(new_aligned_nothrow::<cxx_late::T>(usize::MAX, 1 << 16).is_null());
        }
    }

    #[test]
    fn no_cxx_runtime_means_no_handler() {
        // This test binary links no libstdc++: no handler to call.
        if lookup(&GET_NEW_HANDLER, c"_ZSt15get_new_handlerv").is_none() {
            assert_eq!(cxx_new_handler(), 0);
        }
    }
}
