//! The operations a generated type exposes: alloc, free, realloc, usable size.
//!
//! Owns: the hot paths (a thread-cache pop; a route and a push) and the
//! dispatch of everything else to the slow paths. Must never: allocate through
//! Rust's global allocator, panic, or unwind; errors are null returns.

use core::sync::atomic::Ordering;

use crate::free_route::{self, Route, Tally};
use crate::size_class::{self, BINS, MEDIUM_MAX, SMALL_MAX};
use crate::stats::{Ctr, Events, StatsSnapshot};
use crate::tcache::{self, ThreadCache};
use crate::thread::{self, is_live};
use crate::{failfast, large, remote, tagmap, Config, Ptag, State};

/// Bytes this thread cleared for zeroed allocations (tests only: they check
/// that memory known to read as zero is not written).
pub mod zeroing {
    #[cfg(test)]
    extern crate std;
    #[cfg(test)]
    std::thread_local! {
        static BYTES: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    }

    /// Count `n` bytes cleared (compiled out outside tests).
    #[inline(always)]
    pub fn add(n: usize) {
        #[cfg(test)]
        BYTES.with(|c| c.set(c.get() + n as u64));
        let _ = n;
    }

    /// Bytes counted on this thread so far.
    #[cfg(test)]
    pub fn get() -> u64 {
        BYTES.with(|c| c.get())
    }
}

/// Requests above this are refused at once (no mapping could hold them).
const MAX_REQUEST: usize = 1 << 46;

/// Allocate `size` bytes aligned to `align` (a power of two). Null on failure.
///
/// # Safety
/// `align` is a power of two.
#[inline(always)]
pub unsafe fn alloc<C: Config>(size: usize, align: usize) -> *mut u8 {
    // SAFETY: `align` is a power of two (caller's contract).
    let p = unsafe { alloc_cached::<C>(size, align) };
    if !p.is_null() {
        return p;
    }
    // SAFETY: as above.
    unsafe { alloc_slow::<C>(size, align, false) }
}

/// The hot half of [`alloc`]: a block from this thread's cache, or null when
/// the request needs the slow path (no cache yet, empty bin, large or
/// over-aligned). Makes no call, so a caller can tail-call its slow path.
///
/// # Safety
/// `align` is a power of two.
#[inline(always)]
pub unsafe fn alloc_cached<C: Config>(size: usize, align: usize) -> *mut u8 {
    // Size 0 takes the slow path, so a small size's bin is the range test's
    // `size - 1` shifted (and its bin's offset in the cache that masked and
    // doubled). Each size range pops on its own path: no jump joins them.
    let below = size.wrapping_sub(1);
    if align <= 16 {
        // Up to `COARSE_FROM` (every small size with `fine_classes`) the
        // bin is the 16-byte step; above it, the coarse class's.
        if below < if C::FINE_CLASSES { SMALL_MAX } else { size_class::COARSE_FROM } {
            // SAFETY: `below < SMALL_MAX` gives the offset of a small bin.
            return unsafe { pop_cached::<C>((below & !15) * 2) };
        }
        if below < SMALL_MAX {
            // SAFETY: `below >> 4 < SMALL_BINS`, the table's length; its
            // entries are offsets of small bins.
            return unsafe { pop_cached::<C>(*size_class::COARSE_BIN_OFFSET.get_unchecked(below >> 4) as usize) };
        }
        if below < MEDIUM_MAX {
            // SAFETY: a size in (SMALL_MAX, MEDIUM_MAX] has a medium bin.
            return unsafe { pop_cached::<C>(size_class::bin_of(size) * tcache::BIN_BYTES) };
        }
    }
    core::ptr::null_mut()
}

/// A block from the bin `off` bytes into this thread's cache, or null (no
/// cache yet, or the bin is empty).
///
/// # Safety
/// `off = bin * BIN_BYTES` of a `bin < NBINS`.
#[inline(always)]
unsafe fn pop_cached<C: Config>(off: usize) -> *mut u8 {
    let tc = thread::raw::<C>();
    if !is_live(tc) {
        return core::ptr::null_mut();
    }
    // Not counted: `allocs` is derived from the bins' block flow. A
    // corrupted link (`harden`) answers null: the slow path pops again and aborts.
    // SAFETY: `tc` is this thread's live cache (`is_live`) and `off` a bin's
    // offset (contract).
    let p = unsafe { tcache::pop_at::<C>(tc, off, false) };
    if C::FAILFAST && !p.is_null() {
        failfast::mark_live(C::state(), p as usize);
    }
    p
}

/// Allocate zeroed memory, writing none that is known to read as zero: a
/// block the thread cache holds (freed before, so written) is cleared; the
/// slow path hands out blocks of runs carved from fresh or purged pages, and
/// large blocks from clean slots, without writing them.
///
/// # Safety
/// `align` is a power of two.
#[inline]
pub unsafe fn alloc_zeroed<C: Config>(size: usize, align: usize) -> *mut u8 {
    // SAFETY: `align` is a power of two (caller's contract).
    let p = unsafe { alloc_cached::<C>(size, align) };
    if !p.is_null() {
        // SAFETY: `p` is a block of at least `size` bytes; a cached block was
        // written before, so it is cleared.
        unsafe { clear_block(p, size) };
        return p;
    }
    // SAFETY: as above.
    unsafe { alloc_slow::<C>(size, align, true) }
}

/// Everything [`alloc`] does not do on its hot path: first use, an empty
/// bin (refill), large and over-aligned requests; `zero` asks for zeroed
/// memory (written only where it is not known to read as zero).
///
/// # Safety
/// `align` is a power of two.
#[cold]
#[inline(never)]
pub unsafe fn alloc_slow<C: Config>(size: usize, align: usize, zero: bool) -> *mut u8 {
    let st = C::state();
    if size > MAX_REQUEST || align > MAX_REQUEST || (!st.ready() && !st.ensure_init()) {
        return core::ptr::null_mut();
    }
    let bin = match size_class::bin_for_classes(size, align, C::FINE_CLASSES) {
        Some(bin) => bin,
        None => {
            let t = Tally::current::<C>(st);
            t.bump::<C>(Ctr::LargeAllocs);
            t.bump::<C>(Ctr::Allocs);
            // SAFETY: `align` is a power of two (caller's contract).
            return unsafe { large::alloc(st, size, align, zero) };
        }
    };
    let tc = thread::cache::<C>();
    let mut known_zero = false;
    let p = if is_live(tc) {
        // A pop is counted by the bins' block flow, a refill's block by refill.
        // SAFETY: `tc` is this thread's live cache and `bin_for` gives `bin < NBINS`.
        let p = unsafe { tcache::pop::<C>(tc, bin) };
        if !p.is_null() {
            p
        } else if zero {
            // SAFETY: `tc` is this thread's live cache; the pop found bin `bin` empty.
            let (p, z) = unsafe { tcache::refill_zeroed::<C>(tc, bin) };
            known_zero = z;
            p
        } else {
            // SAFETY: as for `refill_zeroed`.
            unsafe { tcache::refill::<C>(tc, bin) }
        }
    } else {
        thread::direct_alloc(st, bin)
    };
    if p.is_null() {
        // The arena is exhausted: map the block directly (it reads as zero).
        // SAFETY: `align` is a power of two (caller's contract).
        return unsafe { large::huge_alloc(st, size, align) };
    }
    if C::FAILFAST {
        failfast::mark_live(st, p as usize);
    }
    if zero && !known_zero {
        // SAFETY: `p` is a block of `bin`, whose size is at least `size`.
        unsafe { clear_block(p, size) };
    }
    p
}

/// A class block of at least this many bytes is cleared by giving its pages
/// back (`clear_block`).
const CLEAR_BY_PURGE: usize = 128 << 10;

/// Make the first `size` bytes of the class block `p` read as zero. A block
/// of `CLEAR_BY_PURGE` bytes or more (one block per run of whole pages, so
/// its pages are its own) gives its pages back instead of writing them: only
/// the pages the program then touches come back (resident), as with a large
/// block.
///
/// # Safety
/// `p` is a live class block, handed out now, of at least `size` bytes.
#[inline(always)]
unsafe fn clear_block(p: *mut u8, size: usize) {
    if size >= CLEAR_BY_PURGE {
        // SAFETY: a class block this big is the whole run of whole pages it
        // starts (page-aligned), so `[p, p + size rounded up to a page)` is
        // its own, and it holds no data yet.
        unsafe { crate::os::purge(p, (size + crate::os::PAGE_SIZE - 1) & !(crate::os::PAGE_SIZE - 1)) };
    } else {
        // SAFETY: as the contract says.
        unsafe { core::ptr::write_bytes(p, 0, size) };
        zeroing::add(size);
    }
}

/// Free `p` (any block of this type, or null). Returns false when `p` is not
/// ours (the C interface then hands it to the next allocator).
///
/// # Safety
/// `p` is null, a live block of this type, or a pointer this type never saw.
#[inline(always)]
pub unsafe fn free<C: Config>(p: *mut u8) -> bool {
    // SAFETY: `p` is null, a live block of this type, or a pointer this type
    // never saw (caller's contract), as both halves require.
    unsafe { free_cached::<C>(p) || free_slow::<C>(p) }
}

/// The hot half of [`free`]: true when `p` is null or a small/medium block the
/// first route step resolves for a thread with a cache (then freed); false
/// when `p` needs [`free_slow`]. Its only calls are the remote and flush paths.
///
/// # Safety
/// As [`free`].
#[inline(always)]
pub unsafe fn free_cached<C: Config>(p: *mut u8) -> bool {
    // SAFETY: as [`free`] (caller's contract).
    p.is_null() || unsafe { free_hot::<C>(p) }
}

/// [`free_cached`] without its null test: null is never in the arena, so it
/// answers false for null too (the C `free` tests null on its slow half).
///
/// # Safety
/// As [`free`].
#[inline(always)]
pub unsafe fn free_hot<C: Config>(p: *mut u8) -> bool {
    let tc = thread::raw::<C>();
    if is_live(tc) {
        let st = C::state();
        // SAFETY: a live cache exists only after the state was initialised.
        if let Some((tag, ev)) = unsafe { free_route::fast::<C>(st, p as usize) } {
            // A misuse a hardened type detects answers false: the slow path
            // routes again and aborts (no call, so no stack frame, here).
            // SAFETY: `tc` is this thread's live cache and the route gave
            // `p`'s tag: `p` is a block of this type (caller's contract).
            return unsafe { free_block::<C>(st, tc, p, tag, ev, false) };
        }
    }
    false
}

/// Free the block `p` routed to `tag` (`tagmap` encoding): a push when this
/// thread's shard owns it, where the tag xor the cache's owner half is the
/// bin + 1 (one xor and one compare decide and decode); everything else —
/// another shard's block, or a large block on the tag route (a large tag has no
/// owner half) — goes to [`free_foreign`]. `ev`: the route's events, counted
/// together with local/remote in one bump. `slow`: called from the slow path,
/// whose route already tested that `p` is a block start (`free_route::route`
/// does with `harden`), and where a misuse aborts at once. On the hot path a
/// hardened type tests the start here (on a local free with the bin's copy
/// of the test, on the line the push touches anyway) and a detected misuse
/// (interior or double free) answers false, having done nothing, so that
/// the caller's slow path aborts; otherwise true.
///
/// # Safety
/// `tc` is this thread's live cache; `p` is a live block of this type whose
/// tag (as the route found it) is `tag`.
#[inline(always)]
unsafe fn free_block<C: Config>(
    st: &State<C>,
    tc: *mut ThreadCache,
    p: *mut u8,
    tag: u32,
    ev: Events,
    slow: bool,
) -> bool {
    // SAFETY: `tc` is this thread's live cache (contract).
    let bin_plus1 = tag as usize ^ unsafe { (*tc).owner_half };
    if bin_plus1 <= tagmap::BIN_MASK as usize {
        // The end of the bin's entry in the cache: the push folds the `- 1`.
        let end = bin_plus1 * tcache::BIN_BYTES;
        if C::FAILFAST {
            // SAFETY: a block with a bin tag lies in a committed runs segment.
            unsafe { failfast::check_free::<C>(st, "free", p as usize, bin_plus1 - 1) };
        } else if C::HARDEN && !slow {
            // SAFETY: `tc` is live and the bin ending at `end` is `p`'s (its
            // tag): `p` lies on a page of a live run of it.
            if unsafe { !crate::harden::starts_block(p as usize, tcache::start_test(tc, end)) } {
                return false;
            }
        }
        // SAFETY: `tc` is this thread's live cache (contract); the tag says
        // `p` is a block of bin `bin_plus1 - 1` (< NBINS) owned by its
        // shard, which the caller no longer uses.
        // (Counted before the push, so the flush is a tail call; a misuse
        // the push detects aborts, so its count never shows.)
        unsafe {
            (*tc).count_events::<C>(ev.with(Ctr::Local));
            if !tcache::push_end::<C>(tc, end, p) {
                if slow {
                    crate::harden::double_free::<C>(p as usize);
                }
                return false;
            }
        }
    } else {
        // SAFETY: as this function's contract.
        unsafe { free_foreign::<C>(st, tc, p, tag, ev, slow) };
    }
    true
}

/// A block [`free_block`] did not push: another shard's (a remote free), or a
/// large block (routed again and freed by [`free_slow`], which counts it).
///
/// # Safety
/// As [`free_block`].
#[cold]
#[inline(never)]
unsafe fn free_foreign<C: Config>(
    st: &State<C>,
    tc: *mut ThreadCache,
    p: *mut u8,
    tag: u32,
    ev: Events,
    slow: bool,
) {
    if tag == tagmap::LARGE {
        // SAFETY: `p` is a live block of this type (contract).
        unsafe { free_slow::<C>(p) };
        return;
    }
    let (bin, owner) = tagmap::decode_trusted(tag);
    if C::FAILFAST {
        // SAFETY: a block with a bin tag lies in a committed runs segment.
        unsafe { failfast::check_free::<C>(st, "free", p as usize, bin) };
    } else if C::HARDEN && !slow {
        // SAFETY: a bin tag marks a page of a live run of its bin.
        if unsafe { !crate::harden::is_block_start(p as usize, bin) } {
            crate::harden::interior_free::<C>(p as usize);
        }
    }
    // SAFETY: `tc` is this thread's live cache (contract), so its remote
    // buffer and counters are this thread's; the tag says `p` is a live block
    // of `bin` owned by `owner`.
    unsafe {
        (*tc).count_events::<C>(ev.with(Ctr::Remote));
        remote::free::<C>(&mut (*tc).remote, &(*tc).ctr, p, bin, owner);
    }
}

/// Free with the allocation's size and alignment known. On the header route
/// (`ptag: off`, no `free_fast`) the size gives the bin and only the owner is
/// read; every other configuration uses its route (the object of the A/B).
///
/// # Safety
/// `p` is a live block allocated by this type with this size and alignment.
#[inline(always)]
pub unsafe fn dealloc<C: Config>(p: *mut u8, size: usize, align: usize) {
    // Header-route configurations only; failfast and harden checks and the
    // page-meta observation (stats) need the full route.
    let header_route = C::PTAG == Ptag::Off && !C::FREE_FAST;
    let observed = C::FAILFAST || C::HARDEN || (C::S110_META && C::STATS);
    if header_route && !observed {
        let st = C::state();
        let tc = thread::raw::<C>();
        let off = (p as usize).wrapping_sub(st.arena.base.load(Ordering::Relaxed));
        if is_live(tc) && off < st.arena.len.load(Ordering::Relaxed) {
            if let Some(bin) = size_class::bin_for_classes(size, align, C::FINE_CLASSES) {
                // SAFETY: `p` is a live block of this type (contract) inside
                // the arena with a small/medium size: a small/medium block.
                let tag = tagmap::encode(bin, unsafe { free_route::owner_of(p as usize) });
                // SAFETY: `tc` is this thread's live cache; `tag` is `p`'s
                // tag (its bin from its size, its owner from its segment).
                unsafe { free_block::<C>(st, tc, p, tag, Events::NONE, false) };
                return;
            }
        }
    }
    // A live block is never null: no null test.
    // SAFETY: `p` is a live block of this type (contract).
    unsafe {
        if !free_hot::<C>(p) {
            free_slow::<C>(p);
        }
    }
}

/// Everything that is not a hot small/medium free: a thread without a cache
/// (first free, torn down: counted in the shared set), or a pointer the fast
/// route did not resolve (large blocks, direct mappings, foreign and invalid
/// pointers, a miss of the first route step). Routes again with every
/// configured step, counting them (the fast route counts nothing).
///
/// # Safety
/// As [`free`].
#[cold]
#[inline(never)]
pub unsafe fn free_slow<C: Config>(p: *mut u8) -> bool {
    let st = C::state();
    let mut tc = thread::raw::<C>();
    let t = Tally::current::<C>(st);
    // SAFETY: `route` first tests `p` against the arena's bounds
    // (`in_arena`), which stay empty until the state is initialised, so
    // before that every pointer routes as outside.
    let r = unsafe { free_route::route::<C>(st, p as usize, t) };
    match r {
        Route::Block { bin, owner } => {
            if tc.is_null() {
                tc = thread::cache_preferring::<C>(owner);
            }
            if is_live(tc) {
                // SAFETY: `tc` is this thread's live cache; the route found
                // `p` a block of `bin` owned by `owner`.
                unsafe { free_block::<C>(st, tc, p, tagmap::encode(bin, owner), Events::NONE, true) };
            } else {
                if C::FAILFAST {
                    // SAFETY: the route found `p` in a committed runs segment.
                    unsafe { failfast::check_free::<C>(st, "free", p as usize, bin) };
                }
                t.bump::<C>(Ctr::Remote);
                // SAFETY: `p` is a live block (contract) of `bin` owned by
                // `owner` (the route).
                unsafe { thread::direct_free::<C>(st, p, bin, owner) };
            }
            true
        }
        Route::Large => {
            t.bump::<C>(Ctr::FreeOther);
            // SAFETY: the route found a large header for `p`: it lies in a
            // committed slot, the first one of a large block.
            if C::FAILFAST && !unsafe { large::is_live_block(st, p as usize) } {
                failfast::fail::<C>("free", p as usize, "not the start of a live large block");
            }
            // SAFETY: as above.
            if !unsafe { large::free(st, p as usize) } {
                if C::FAILFAST {
                    failfast::fail::<C>("free", p as usize, "double free of a large block");
                }
                t.bump::<C>(Ctr::Invalid);
            }
            true
        }
        Route::Outside => {
            t.bump::<C>(Ctr::FreeOther);
            large::huge_free(st, p as usize)
        }
        Route::Invalid(why) => {
            if C::FAILFAST {
                failfast::fail::<C>("free", p as usize, why);
            }
            t.bump::<C>(Ctr::FreeOther);
            t.bump::<C>(Ctr::Invalid);
            true
        }
    }
}

/// What a pointer is, without counting: used by realloc and usable_size.
///
/// # Safety
/// `p` is a live block of this type or a pointer this type never saw.
unsafe fn classify<C: Config>(st: &State<C>, p: usize) -> Route {
    let off = p.wrapping_sub(st.arena.base.load(Ordering::Relaxed));
    if off >= st.arena.len.load(Ordering::Relaxed) {
        Route::Outside
    } else {
        // SAFETY: `p` lies in the arena, which is non-empty only once initialised.
        unsafe { free_route::by_header::<C>(st, p) }
    }
}

/// Usable size of a block of this type; `None` when `p` is not ours.
///
/// # Safety
/// `p` is a live block of this type or a pointer this type never saw.
pub unsafe fn usable_size<C: Config>(p: *const u8) -> Option<usize> {
    if p.is_null() {
        return None;
    }
    let st = C::state();
    // SAFETY: `p` is a live block of this type or a pointer it never saw (contract).
    match unsafe { classify::<C>(st, p as usize) } {
        Route::Block { bin, .. } => Some(BINS[bin].size as usize),
        // SAFETY: the header route found a large block at `p`, live (contract).
        Route::Large => Some(unsafe { large::usable(p as usize) }),
        Route::Outside => large::huge_usable(st, p as usize),
        Route::Invalid(why) => {
            if C::FAILFAST {
                failfast::fail::<C>("usable_size", p as usize, why);
            }
            None
        }
    }
}

/// Resize `p` (allocated with `align`, `old` bytes in use) to `new` bytes.
/// Stays in place when the new size keeps the block's class (small/medium) or
/// fits its slots (large). Null on failure, with `p` untouched.
///
/// # Safety
/// `p` is null or a live block of this type allocated with `align`.
pub unsafe fn realloc<C: Config>(p: *mut u8, old: usize, align: usize, new: usize) -> *mut u8 {
    if p.is_null() {
        // SAFETY: `align` is a power of two (every block is allocated with one).
        return unsafe { alloc::<C>(new, align) };
    }
    let st = C::state();
    let new_bin = size_class::bin_for_classes(new, align, C::FINE_CLASSES);
    // SAFETY: `p` is a live block of this type (contract).
    match unsafe { classify::<C>(st, p as usize) } {
        Route::Block { bin, .. } if new_bin == Some(bin) => return p,
        // SAFETY: the header route found a large block at `p`, live (contract).
        Route::Large if new_bin.is_none() && new <= MAX_REQUEST && unsafe { large::resize_in_place(st, p as usize, new) } => {
            return p;
        }
        Route::Invalid(why) if C::FAILFAST => failfast::fail::<C>("realloc", p as usize, why),
        _ => {}
    }
    // SAFETY: `align` is a power of two (every block is allocated with one).
    let q = unsafe { alloc::<C>(new, align) };
    if !q.is_null() {
        // SAFETY: `p` holds `old` bytes in use (contract), `q` at least
        // `new`; `q` is a new block, so they do not overlap. `p` is then a
        // live block of this type, freed once.
        unsafe {
            core::ptr::copy_nonoverlapping(p, q, old.min(new));
            free::<C>(p);
        }
    }
    q
}

/// Snapshot of the type's counters (all zero with `stats: false`).
pub fn stats<C: Config>() -> StatsSnapshot {
    thread::snapshot::<C>()
}
