//! Block helpers shared by the workloads: layout, allocate-and-touch, read-size-and-free.
//!
//! Every block of ≥ 16 bytes carries its size in its first 8 bytes (written on allocation,
//! which also touches the first cache line) and has its last byte written, so memory is really
//! touched; the free side reads the size back from the block, which is how a block crossing
//! a ring tells the freeing thread its layout. Volatile accesses keep the compiler from
//! eliding the touches (or the whole malloc/free pair).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

/// Alignment requested for every block.
pub const ALIGN: usize = 8;

/// The layout for a `size`-byte block.
#[inline(always)]
pub fn layout(size: usize) -> Layout {
    // SAFETY: ALIGN is a power of two and every size used here (≤ 32 MiB) is far below
    // isize::MAX when rounded up to ALIGN.
    unsafe { Layout::from_size_align_unchecked(size, ALIGN) }
}

#[cold]
fn oom(size: usize) -> ! {
    eprintln!("allocation of {size} bytes failed");
    std::process::abort()
}

/// Allocate `size` (≥ 16) bytes from `a`, write the size header and the last byte.
#[inline(always)]
pub fn alloc_touch<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    debug_assert!(size >= 16);
    // SAFETY: the layout has non-zero size.
    let p = unsafe { a.alloc(layout(size)) };
    if p.is_null() {
        oom(size);
    }
    // SAFETY: `p` is a fresh, 8-aligned block of `size` ≥ 16 bytes.
    unsafe {
        ptr::write_volatile(p as *mut u64, size as u64);
        ptr::write_volatile(p.add(size - 1), 0xA5);
    }
    p
}

/// Read the size header of a block made by [`alloc_touch`] (or grown by [`realloc_touch`]).
///
/// # Safety
/// `p` must be a live block whose first 8 bytes hold its size.
#[inline(always)]
pub unsafe fn block_size(p: *mut u8) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::read_volatile(p as *const u64) as usize }
}

/// Free a block made by [`alloc_touch`] / [`realloc_touch`], reading its size from the block.
///
/// # Safety
/// `p` must be a live block from `a` with its size header intact, not used afterwards.
#[inline(always)]
pub unsafe fn free_block<A: GlobalAlloc>(a: &A, p: *mut u8) {
    // SAFETY: guaranteed by the caller: live block of `a`, size header written at allocation.
    unsafe {
        let size = block_size(p);
        a.dealloc(p, layout(size));
    }
}

/// Grow (or shrink) a block to `new` bytes (≥ 16) with `realloc`, rewrite the header and the
/// new last byte.
///
/// # Safety
/// `p` must be a live block from `a` made by [`alloc_touch`] / [`realloc_touch`].
#[inline(always)]
pub unsafe fn realloc_touch<A: GlobalAlloc>(a: &A, p: *mut u8, new: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller; `new` is non-zero and small.
    unsafe {
        let old = block_size(p);
        let q = a.realloc(p, layout(old), new);
        if q.is_null() {
            oom(new);
        }
        ptr::write_volatile(q as *mut u64, new as u64);
        ptr::write_volatile(q.add(new - 1), 0x5A);
        q
    }
}

/// Allocate a small object (< 16 bytes: no size header; the caller writes it).
#[inline(always)]
pub fn alloc_small<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    // SAFETY: non-zero size.
    let p = unsafe { a.alloc(layout(size)) };
    if p.is_null() {
        oom(size);
    }
    p
}
