//! The C allocation interface: `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`,
//! `pvalloc` and `malloc_usable_size` with glibc's semantics, generic over one
//! generated allocator type.
//!
//! Owns: the C contract on top of the engine entry points in
//! [`crate::__private`] — the 16-byte minimum alignment, `malloc(0)` as a unique
//! minimum-size block, `errno` (`ENOMEM` on failure, `EINVAL` for bad alignments;
//! `posix_memalign` reports through its return value and leaves `errno` alone),
//! the overflow checks of `calloc`, `reallocarray` and `pvalloc`, glibc's
//! `realloc(p, 0)` (frees, returns null) and the hand-over of *foreign*
//! pointers (blocks this type does not own, e.g. allocated before the library
//! was loaded) to the next allocator in the symbol chain, resolved lazily with
//! `dlsym(RTLD_NEXT, ..)` and cached in atomics.
//!
//! Must never: allocate through Rust's global allocator (it may be this very
//! allocator, and these functions run inside `malloc`), panic or unwind (they
//! are called from C; every arithmetic step is checked or wrapping), format
//! text, or take a lock that `fork()` could leave held (`dlsym` resolution is
//! guarded by an owner word with a bounded wait instead).
//!
//! Relies on the engine for: `free` accepting null and answering false
//! (having done nothing) for an address this type did not hand out, and
//! `usable_size` answering `None` for such an address — both without
//! faulting, whatever the address (other allocators' heaps and mappings
//! included) — and `Some` for every block it did hand out, aligned ones
//! included; `alloc`/`alloc_zeroed` honouring any power-of-two alignment and
//! returning null (never aborting) when memory runs out; `realloc` leaving
//! the block untouched when it fails, and accepting as `old_size` the usable
//! size with `align` 16 even for a block first allocated with a larger
//! alignment (`memalign`, then `realloc`); `free` not clobbering `errno` on
//! its ordinary paths.
//!
//! `hz3_allocator!` with `export: c` emits `#[no_mangle] extern "C"` forwards
//! with the same names and C signatures that call these functions (and the
//! C++ operators of [`crate::capi_cxx`]).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::__private as engine;
use crate::Config;

/// The C minimum alignment (glibc's `MALLOC_ALIGNMENT` on 64-bit targets).
const MIN_ALIGN: usize = 16;

/// Largest request (size or alignment) passed on to the engine. Anything above
/// can never be satisfied in a user address space, and the bound leaves the
/// engine room to round sizes up without overflowing.
const MAX_REQUEST: usize = (isize::MAX as usize) >> 1;

/// Page size used before `sysconf` answers (and if it answers nonsense).
const FALLBACK_PAGE: usize = 4096;

// ---------------------------------------------------------------------------
// errno

/// Sets the calling thread's `errno`.
#[inline]
fn set_errno(code: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid
    // for writes for the whole life of the thread.
    unsafe { *libc::__errno_location() = code };
}

/// Reads the calling thread's `errno`.
#[inline]
fn errno() -> c_int {
    // SAFETY: as in `set_errno`, the slot is the calling thread's and readable.
    unsafe { *libc::__errno_location() }
}

/// The failure return of the pointer-returning functions: `errno = ENOMEM`, null.
#[cold]
#[inline(never)]
fn enomem() -> *mut c_void {
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

/// The failure return for a bad alignment: `errno = EINVAL`, null.
#[cold]
#[inline(never)]
fn einval() -> *mut c_void {
    set_errno(libc::EINVAL);
    core::ptr::null_mut()
}

// ---------------------------------------------------------------------------
// Small helpers

/// The system page size, read once from `sysconf` and cached.
fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `sysconf` only reads process constants; it neither allocates nor
    // has preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if raw > 0 && (raw as usize).is_power_of_two() { raw as usize } else { FALLBACK_PAGE };
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Allocates `size` bytes (`1 ..= MAX_REQUEST`) aligned to `align` (a power of
/// two, at least `MIN_ALIGN`) from the engine; null with `ENOMEM` on failure.
#[inline]
fn engine_alloc<C: Config>(size: usize, align: usize) -> *mut c_void {
    if align > MAX_REQUEST {
        return enomem();
    }
    // SAFETY: `alloc` accepts any non-zero size and any power-of-two alignment
    // and returns null on failure; the caller guarantees both arguments.
    let p = unsafe { engine::alloc::<C>(size, align) };
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// The common body of every aligned entry point: `align` must already be a
/// power of two; sizes of 0 become 1 byte, oversized requests fail with ENOMEM.
fn aligned<C: Config>(align: usize, size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return enomem();
    }
    engine_alloc::<C>(size.max(1), align.max(MIN_ALIGN))
}

/// The usable size of `ptr` if this allocator type owns it.
#[inline(always)]
fn owned_size<C: Config>(ptr: *mut c_void) -> Option<usize> {
    // SAFETY: `usable_size` accepts any non-null address and answers `None` for
    // addresses this type does not own; the callers pass non-null pointers.
    unsafe { engine::usable_size::<C>(ptr as *const u8) }
}

// ---------------------------------------------------------------------------
// The next allocator in the chain (for foreign pointers)

type FreeFn = unsafe extern "C" fn(*mut c_void);
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// Resolution state: `UNRESOLVED`, then `RESOLVING` (owner in [`RESOLVER`]),
/// then `RESOLVED` for the rest of the process.
static NEXT_STATE: AtomicU8 = AtomicU8::new(UNRESOLVED);
const UNRESOLVED: u8 = 0;
const RESOLVING: u8 = 1;
const RESOLVED: u8 = 2;
/// `pthread_self()` of the thread running `dlsym`, 0 when none does.
static RESOLVER: AtomicUsize = AtomicUsize::new(0);
/// The next object's `free`, `realloc` and `malloc_usable_size` (0 = none).
static NEXT_FREE: AtomicUsize = AtomicUsize::new(0);
static NEXT_REALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_USABLE: AtomicUsize = AtomicUsize::new(0);
/// How often a thread yields while another resolves before it gives up (and
/// leaks, or fails, the one foreign call it was serving). Bounded so that a
/// child forked while another thread was resolving cannot hang.
const RESOLVE_PATIENCE: u32 = 10_000;

/// The address of the next object's symbol `name` (NUL-terminated), or 0.
fn lookup(name: &core::ffi::CStr) -> usize {
    // SAFETY: `RTLD_NEXT` with a valid NUL-terminated name is a plain symbol
    // lookup; it may call `malloc`/`calloc`, which this allocator serves
    // without coming back here (only foreign pointers lead here).
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

/// The calling thread's identity (never 0 for a live thread).
fn self_id() -> usize {
    // SAFETY: `pthread_self` has no preconditions and does not allocate.
    unsafe { libc::pthread_self() as usize }
}

/// Resolves the next allocator's functions once. Returns false when they are
/// not (yet) available to this caller: resolution is in progress on this very
/// thread (`dlsym` freeing a foreign pointer) or took too long on another.
#[cold]
#[inline(never)]
fn resolve_next() -> bool {
    let me = self_id();
    let mut waited = 0u32;
    loop {
        match NEXT_STATE.compare_exchange(UNRESOLVED, RESOLVING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => break,
            Err(RESOLVED) => return true,
            Err(_) => {
                if RESOLVER.load(Ordering::Relaxed) == me || waited >= RESOLVE_PATIENCE {
                    return false;
                }
                waited += 1;
                // SAFETY: `sched_yield` has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
    RESOLVER.store(me, Ordering::Relaxed);
    NEXT_FREE.store(lookup(c"free"), Ordering::Relaxed);
    NEXT_REALLOC.store(lookup(c"realloc"), Ordering::Relaxed);
    NEXT_USABLE.store(lookup(c"malloc_usable_size"), Ordering::Relaxed);
    RESOLVER.store(0, Ordering::Relaxed);
    NEXT_STATE.store(RESOLVED, Ordering::Release);
    true
}

/// The cached address in `slot` after resolution, 0 when unavailable.
fn next_fn(slot: &AtomicUsize) -> usize {
    if NEXT_STATE.load(Ordering::Acquire) == RESOLVED || resolve_next() {
        slot.load(Ordering::Relaxed)
    } else {
        0
    }
}

/// Frees a pointer this type does not own with the next allocator's `free`;
/// leaks it when there is none (a leak is better than a crash).
#[cold]
#[inline(never)]
fn foreign_free(ptr: *mut c_void) {
    let f = next_fn(&NEXT_FREE);
    if f != 0 {
        // SAFETY: `f` is the address `dlsym` gave for `free`, whose C signature
        // is `FreeFn`; the pointer came from that allocator (it is not ours).
        unsafe { core::mem::transmute::<usize, FreeFn>(f)(ptr) };
    }
}

/// The next allocator's usable size of a foreign pointer, if it can tell.
fn foreign_usable(ptr: *mut c_void) -> Option<usize> {
    let f = next_fn(&NEXT_USABLE);
    if f == 0 {
        return None;
    }
    // SAFETY: `f` is the address `dlsym` gave for `malloc_usable_size`, whose C
    // signature is `UsableFn`; the pointer belongs to that allocator.
    Some(unsafe { core::mem::transmute::<usize, UsableFn>(f)(ptr) })
}

/// `realloc` of a foreign pointer (`1 <= size <= MAX_REQUEST`): the block moves
/// into this allocator (copy, then the next allocator's `free`). When the old
/// size cannot be learnt, the next allocator's `realloc` does the work instead.
#[cold]
#[inline(never)]
fn foreign_realloc<C: Config>(ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(old) = foreign_usable(ptr) else {
        let f = next_fn(&NEXT_REALLOC);
        if f == 0 {
            return enomem();
        }
        // SAFETY: `f` is the address `dlsym` gave for `realloc`, whose C
        // signature is `ReallocFn`; the pointer belongs to that allocator.
        return unsafe { core::mem::transmute::<usize, ReallocFn>(f)(ptr, size) };
    };
    let q = engine_alloc::<C>(size, MIN_ALIGN);
    if q.is_null() {
        return q;
    }
    // SAFETY: `ptr` has `old` usable bytes (its allocator says so), `q` has at
    // least `size`; `q` is a fresh block, so the two do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(ptr as *const u8, q as *mut u8, old.min(size)) };
    foreign_free(ptr);
    q
}

// ---------------------------------------------------------------------------
// The C entry points

/// `malloc(size)`: 16-byte aligned; `malloc(0)` is a unique minimum-size (16-byte) block;
/// null with `ENOMEM` on failure.
///
/// # Safety
/// Callable from any thread at any time, as C's `malloc`.
#[inline]
pub unsafe fn malloc<C: Config>(size: usize) -> *mut c_void {
    // The engine serves size 0 with a unique 16-byte block and answers null
    // for sizes no mapping could hold, so no pre-check is needed here. The hot
    // half makes no call, so the slow half is a tail call: no stack frame on
    // the path a C program takes for nearly every malloc.
    // SAFETY: MIN_ALIGN is a power of two.
    let p = unsafe { engine::alloc_cached::<C>(size, MIN_ALIGN) };
    if !p.is_null() {
        return p.cast();
    }
    malloc_slow::<C>(size)
}

/// `malloc` when the thread cache cannot serve the request.
#[cold]
#[inline(never)]
fn malloc_slow<C: Config>(size: usize) -> *mut c_void {
    // SAFETY: MIN_ALIGN is a power of two; `alloc_slow` returns null on failure.
    let p = unsafe { engine::alloc_slow::<C>(size, MIN_ALIGN, false) };
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// `free(ptr)`: null is ignored; pointers this type does not own go to the
/// next allocator's `free`.
///
/// # Safety
/// `ptr` is null or a live block from this `malloc` family (or from the next
/// allocator), not freed before.
#[inline]
pub unsafe fn free<C: Config>(ptr: *mut c_void) {
    // SAFETY: the engine's hot free accepts null, blocks of this type and
    // pointers it never saw (answering false, having done nothing, for
    // everything it does not finish, null included); the caller guarantees
    // that a block of ours is live and freed once.
    if !unsafe { engine::free_hot::<C>(ptr as *mut u8) } {
        // SAFETY: as above.
        unsafe { free_slow::<C>(ptr) }
    }
}

/// `free` of everything the hot half does not finish (tail-called, so the hot
/// half needs no stack frame).
///
/// # Safety
/// As [`free`].
#[cold]
#[inline(never)]
unsafe fn free_slow<C: Config>(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: `free_slow` accepts any non-null pointer (ours or not), answering
    // false for pointers this type never handed out.
    if !unsafe { engine::free_slow::<C>(ptr as *mut u8) } {
        foreign_free(ptr)
    }
}

/// `calloc(n, size)`: zeroed; `ENOMEM` when `n * size` overflows.
///
/// # Safety
/// As `malloc`.
pub unsafe fn calloc<C: Config>(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return enomem();
    };
    if total > MAX_REQUEST {
        return enomem();
    }
    // SAFETY: `alloc_zeroed` accepts any non-zero size and power-of-two
    // alignment and returns null on failure.
    let p = unsafe { engine::alloc_zeroed::<C>(total.max(1), MIN_ALIGN) };
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// `realloc(ptr, size)`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)`
/// frees `p` and returns null (glibc); on failure null with `ENOMEM` and `p`
/// untouched. The content up to the smaller size is kept.
///
/// # Safety
/// `ptr` is null or a live block from this `malloc` family (or from the next
/// allocator); on success it must not be used again.
pub unsafe fn realloc<C: Config>(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        // SAFETY: forwarded contract of `malloc`.
        return unsafe { malloc::<C>(size) };
    }
    if size == 0 {
        // SAFETY: `ptr` is a live block the caller gives up.
        unsafe { free::<C>(ptr) };
        return core::ptr::null_mut();
    }
    if size > MAX_REQUEST {
        return enomem();
    }
    let Some(old) = owned_size::<C>(ptr) else {
        return foreign_realloc::<C>(ptr, size);
    };
    // SAFETY: the engine owns `ptr`, a live block of `old` usable bytes with
    // the C alignment; `size` is non-zero and bounded. On failure the engine
    // leaves the block untouched.
    let q = unsafe { engine::realloc::<C>(ptr as *mut u8, old, MIN_ALIGN, size) };
    if q.is_null() {
        return enomem();
    }
    q.cast()
}

/// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)` with `ENOMEM` (and
/// `ptr` untouched) when the product overflows.
///
/// # Safety
/// As `realloc`.
pub unsafe fn reallocarray<C: Config>(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded contract of `realloc`.
        Some(total) => unsafe { realloc::<C>(ptr, total) },
        None => enomem(),
    }
}

/// `posix_memalign(out, align, size)`: `EINVAL` unless `align` is a power of
/// two and a multiple of `sizeof(void*)`, `ENOMEM` on failure; reports through
/// the return value only: `errno` and `*out` are untouched on error.
///
/// # Safety
/// `out` is valid for a pointer-sized write.
pub unsafe fn posix_memalign<C: Config>(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // A power of two is a multiple of `sizeof(void*)` (itself a power of two)
    // exactly when it is at least that large.
    if !align.is_power_of_two() || align < core::mem::size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = aligned::<C>(align, size);
    if p.is_null() {
        set_errno(saved);
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(p) };
    0
}

/// `aligned_alloc(align, size)`: `EINVAL` and null unless `align` is a power
/// of two (any size is accepted, as glibc does).
///
/// # Safety
/// As `malloc`.
pub unsafe fn aligned_alloc<C: Config>(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return einval();
    }
    aligned::<C>(align, size)
}

/// `memalign(align, size)`: glibc's rules — alignments up to 16 are plain
/// `malloc`, others are rounded up to a power of two; `EINVAL` above
/// `SIZE_MAX / 2 + 1`.
///
/// # Safety
/// As `malloc`.
pub unsafe fn memalign<C: Config>(align: usize, size: usize) -> *mut c_void {
    if align > (usize::MAX >> 1) + 1 {
        return einval();
    }
    // `checked_next_power_of_two` cannot fail below the bound just checked.
    let align = align.checked_next_power_of_two().unwrap_or(MIN_ALIGN);
    aligned::<C>(align, size)
}

/// `valloc(size)`: page-aligned.
///
/// # Safety
/// As `malloc`.
pub unsafe fn valloc<C: Config>(size: usize) -> *mut c_void {
    aligned::<C>(page_size(), size)
}

/// `pvalloc(size)`: page-aligned, size rounded up to whole pages (0 is one
/// page); `ENOMEM` when the rounding overflows.
///
/// # Safety
/// As `malloc`.
pub unsafe fn pvalloc<C: Config>(size: usize) -> *mut c_void {
    let page = page_size();
    let Some(padded) = size.max(1).checked_add(page - 1) else {
        return enomem();
    };
    aligned::<C>(page, padded & !(page - 1))
}

/// `malloc_usable_size(ptr)`: bytes writable at `ptr`; 0 for null. Foreign
/// pointers are measured by the next allocator (0 if it cannot tell).
///
/// # Safety
/// `ptr` is null or a live block from this `malloc` family (or the next
/// allocator's).
pub unsafe fn malloc_usable_size<C: Config>(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    match owned_size::<C>(ptr) {
        Some(n) => n,
        None => foreign_usable(ptr).unwrap_or(0),
    }
}
