//! Failfast: detect inconsistencies and abort with one line.
//!
//! Owns: the live-bit map (one bit per 16 arena bytes, set while a small or
//! medium block is held by the program) and the abort message. Must never: be
//! compiled into a type without `failfast: true` or `harden: true` (every
//! caller tests `C::FAILFAST` or `C::HARDEN`), or allocate while reporting.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::segment::{self, SegHdr};
use crate::stats::Line;
use crate::{Config, State};

/// Abort with `hz3 failfast [Type]: <op>(<ptr>): <what>` (`hz3 harden [...`
/// for a hardened type without failfast).
#[cold]
#[inline(never)]
pub fn fail<C: Config>(op: &str, p: usize, what: &str) -> ! {
    let who = if C::FAILFAST { "hz3 failfast [" } else { "hz3 harden [" };
    Line::new().s(who).s(C::NAME).s("]: ").s(op).s("(").x(p).s("): ").s(what).emit();
    crate::os::abort()
}

#[inline]
fn bit_of<C: Config>(st: &State<C>, p: usize) -> (&'static AtomicU64, u64) {
    let idx = (p - st.arena.base.load(Ordering::Relaxed)) >> 4;
    // SAFETY: `live_bits` maps one bit per 16 bytes of the arena and `p` is in it.
    let word = unsafe { &*(st.live_bits.load(Ordering::Relaxed) as *const AtomicU64).add(idx >> 6) };
    (word, 1u64 << (idx & 63))
}

/// Mark a small/medium block live as it is handed to the program.
pub fn mark_live<C: Config>(st: &State<C>, p: usize) {
    if st.live_bits.load(Ordering::Relaxed) != 0 {
        let (w, b) = bit_of(st, p);
        w.fetch_or(b, Ordering::Relaxed);
    }
}

/// Check a small/medium free of `p` routed to `bin`: the pointer must be the
/// start of a block of its run, the run must be of `bin`, and the block live.
///
/// # Safety
/// `p` lies in a committed runs segment of the arena.
pub unsafe fn check_free<C: Config>(st: &State<C>, op: &str, p: usize, bin: usize) {
    if p & 15 != 0 {
        fail::<C>(op, p, "misaligned pointer (not a block start)");
    }
    let seg = segment::seg_base(p);
    let hdr = SegHdr::ptr(seg);
    // SAFETY: `p`'s segment is a committed runs segment (contract); its
    // descriptors are read in place (written at run life-cycle events).
    let rs = unsafe { (*hdr).descs[segment::page_index(p)].run_start.load(Ordering::Relaxed) } as usize;
    // SAFETY: as above; `run_start` is a page index of the same segment.
    if unsafe { (*hdr).descs[rs].bin_plus1.load(Ordering::Relaxed) } as usize != bin + 1 {
        fail::<C>(op, p, "route and page descriptor disagree (tag/meta mismatch)");
    }
    // SAFETY: `p`'s page is in a live run of `bin` (just checked against its
    // descriptor) of a committed runs segment.
    if unsafe { !crate::harden::is_block_start(p, bin) } {
        fail::<C>(op, p, "interior pointer (not a block start)");
    }
    if st.live_bits.load(Ordering::Relaxed) != 0 {
        let (w, b) = bit_of(st, p);
        if w.fetch_and(!b, Ordering::Relaxed) & b == 0 {
            fail::<C>(op, p, "double free or never allocated (block not live)");
        }
    }
}
