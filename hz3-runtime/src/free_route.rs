//! What happens on free: from a pointer to its bin and owner shard.
//!
//! Owns: the order of the routes the flags select — `ptag: first` (tag map
//! first), the S110 step (segment header + `bin_plus1`, routing with
//! `free_fast`, observing only with `stats`), `ptag: late` (tag map after the
//! S110 step), and the header route (segment kind + page descriptor) that
//! every pointer can fall back to. Must never: write anything but counters, or
//! read a header of a slot it has not checked is live unless the pointer came
//! through a route that proves it (a tag or meta hit).

use core::sync::atomic::Ordering;

use crate::arena::SLOT_HEAD;
use crate::segment::{self, SegHdr, KIND_LARGE, KIND_RUNS, SEG_MAGIC};
use crate::size_class::LARGE_BIN;
use crate::stats::{Counters, Ctr};
use crate::{failfast, tagmap, Config, Ptag, State};

/// Where a freed pointer goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// A small or medium block of `bin` owned by shard `owner`.
    Block { bin: usize, owner: usize },
    /// A large block in the arena.
    Large,
    /// Not in the arena (a direct mapping, or not ours).
    Outside,
    /// In the arena but not a block start of a live run.
    Invalid(&'static str),
}

/// Counters for one route decision (the thread's own set, or the shared one).
#[derive(Clone, Copy)]
pub struct Tally<'a> {
    /// Counter set.
    pub c: &'a Counters,
    /// Whether only this thread writes `c`.
    pub owned: bool,
}

impl<'a> Tally<'a> {
    /// The calling thread's counters when it has a cache, else the shared set.
    #[inline]
    pub fn current<C: Config>(st: &'a State<C>) -> Self {
        let tc = crate::thread::raw::<C>();
        if crate::thread::is_live(tc) {
            // SAFETY: a live TLS value is this thread's cache, which outlives
            // the call that uses the tally.
            Tally { c: unsafe { &(*tc).ctr }, owned: true }
        } else {
            Tally { c: &st.shared_ctr, owned: false }
        }
    }

    /// Count an event when stats are on.
    #[inline(always)]
    pub fn bump<C: Config>(&self, k: Ctr) {
        if C::STATS {
            if self.owned {
                self.c.bump_owned(k)
            } else {
                self.c.bump_shared(k)
            }
        }
    }
}

/// The hot route for a thread with a cache: `(bin, owner)` of a small/medium
/// block, or `None` for everything else (not in the arena, large, a miss of
/// every configured route) — the caller then takes the cold path, which
/// finishes with the header route without counting the steps taken here again.
///
/// # Safety
/// The state is initialised or `p` is outside its (empty) arena.
#[inline(always)]
pub unsafe fn fast<C: Config>(st: &State<C>, p: usize, c: &Counters) -> Option<(usize, usize)> {
    let t = Tally { c, owned: true };
    let off = in_arena::<C>(st, p, t)?;
    if let Some(r) = steps::<C>(st, p, off, t) {
        return block(r);
    }
    if C::PTAG == Ptag::Off && !C::FREE_FAST {
        // The header route is this configuration's only route: keep it hot.
        return block(by_header::<C>(st, p));
    }
    None
}

/// Route `p` (non-null) by the configured routes, ending with the header route.
///
/// # Safety
/// The state is initialised.
#[inline(always)]
pub unsafe fn route<C: Config>(st: &State<C>, p: usize, t: Tally) -> Route {
    match in_arena::<C>(st, p, t) {
        Some(off) => match steps::<C>(st, p, off, t) {
            Some(r) => r,
            None => by_header::<C>(st, p),
        },
        None => Route::Outside,
    }
}

/// The arena offset of `p`, or `None` (counted as an S110 segment miss) when
/// it is outside the arena.
#[inline(always)]
fn in_arena<C: Config>(st: &State<C>, p: usize, t: Tally) -> Option<usize> {
    let off = p.wrapping_sub(st.arena.base.load(Ordering::Relaxed));
    if off < st.arena.len.load(Ordering::Relaxed) {
        return Some(off);
    }
    if C::S110_META && (C::FREE_FAST || C::STATS) {
        t.bump::<C>(Ctr::SegMiss);
    }
    None
}

/// The configured route steps in the flags' order (`ptag: first`, the S110
/// step, `ptag: late`); `None` when none of them routes `p`.
#[inline(always)]
unsafe fn steps<C: Config>(st: &State<C>, p: usize, off: usize, t: Tally) -> Option<Route> {
    if C::PTAG == Ptag::Late && C::S110_META && C::STATS && !C::FREE_FAST {
        // The scale lane: the S110 step only observes and the tag map routes.
        // The route does not depend on the order of the two loads, so read the
        // tag first: a non-zero tag proves the segment live, and the observation
        // then needs no slot check. Counted as before (observation, then a tag
        // hit as a fallback).
        let tag = tagmap::load(st.arena.tag_array(), off >> crate::os::PAGE_SHIFT);
        if tag != 0 {
            observe_meta::<C>(p, t);
            t.bump::<C>(Ctr::PtagHit);
            let (bin, owner) = tagmap::decode_trusted(tag);
            return Some(decode_bin(bin, owner));
        }
    }
    if C::PTAG == Ptag::First {
        if let Some(r) = by_tag::<C>(st, off, t) {
            return Some(r);
        }
    }
    if C::S110_META && (C::FREE_FAST || C::STATS) {
        if let Some(r) = by_meta::<C>(st, p, t) {
            return Some(r);
        }
    }
    if C::PTAG == Ptag::Late {
        return by_tag::<C>(st, off, t);
    }
    None
}

/// The S110 observation of a pointer whose segment is known live (its page
/// has a tag): count whether the page meta is set.
#[inline(always)]
unsafe fn observe_meta<C: Config>(p: usize, t: Tally) {
    let hdr = SegHdr::at(segment::seg_base(p));
    // Acquire pairs with the release store at run carve time.
    if hdr.meta[segment::page_index(p)].load(Ordering::Acquire) != 0 {
        t.bump::<C>(Ctr::MetaHit);
    } else {
        t.bump::<C>(Ctr::MetaZero);
    }
}

#[inline(always)]
fn block(r: Route) -> Option<(usize, usize)> {
    match r {
        Route::Block { bin, owner } => Some((bin, owner)),
        _ => None,
    }
}

/// The S110 step: segment header, then `bin_plus1` of the page. Routes only
/// with `free_fast`; otherwise it observes (counts) and returns `None`.
#[inline(always)]
unsafe fn by_meta<C: Config>(st: &State<C>, p: usize, t: Tally) -> Option<Route> {
    let seg = segment::seg_base(p);
    // seg_from_ptr: the slot must be live before its header is read (a stray
    // in-arena pointer may point into an uncommitted slot).
    if st.arena.slot_state(st.arena.slot_of(seg)) != SLOT_HEAD {
        t.bump::<C>(Ctr::SegMiss);
        return None;
    }
    let hdr = SegHdr::at(seg);
    if hdr.magic != SEG_MAGIC {
        t.bump::<C>(Ctr::SegMiss);
        return None;
    }
    // Acquire pairs with the release store at run carve time.
    let m = hdr.meta[segment::page_index(p)].load(Ordering::Acquire) as usize;
    if m == 0 {
        t.bump::<C>(Ctr::MetaZero);
        return None;
    }
    t.bump::<C>(Ctr::MetaHit);
    if C::FREE_FAST {
        Some(decode_bin(m - 1, hdr.owner as usize))
    } else {
        None
    }
}

#[inline(always)]
fn decode_bin(bin: usize, owner: usize) -> Route {
    if bin == LARGE_BIN {
        Route::Large
    } else {
        Route::Block { bin, owner }
    }
}

/// The tag-map route: `None` on a zero (or undecodable) tag.
#[inline(always)]
unsafe fn by_tag<C: Config>(st: &State<C>, off: usize, t: Tally) -> Option<Route> {
    let tag = tagmap::load(st.arena.tag_array(), off >> crate::os::PAGE_SHIFT);
    if tag == 0 {
        t.bump::<C>(Ctr::PtagMiss);
        return None;
    }
    if !C::FAILFAST {
        // Tags are written only by this engine: only failfast builds validate
        // them (and count decode failures).
        t.bump::<C>(Ctr::PtagHit);
        let (bin, owner) = tagmap::decode_trusted(tag);
        return Some(decode_bin(bin, owner));
    }
    match tagmap::decode(tag, C::SHARDS) {
        Some((bin, owner)) => {
            t.bump::<C>(Ctr::PtagHit);
            Some(decode_bin(bin, owner))
        }
        None => {
            t.bump::<C>(Ctr::PtagDecodeFail);
            if C::FAILFAST {
                failfast::fail::<C>("free", st.arena.base.load(Ordering::Relaxed) + off, "tag does not decode");
            }
            None
        }
    }
}

/// The header route: slot state, segment magic and kind, page descriptor.
#[inline]
pub unsafe fn by_header<C: Config>(st: &State<C>, p: usize) -> Route {
    let seg = segment::seg_base(p);
    if st.arena.slot_state(st.arena.slot_of(seg)) != SLOT_HEAD {
        return Route::Invalid("not in a live segment");
    }
    let hdr = SegHdr::at(seg);
    if hdr.magic != SEG_MAGIC {
        return Route::Invalid("not in a live segment");
    }
    match hdr.kind {
        KIND_LARGE => Route::Large,
        KIND_RUNS => {
            let b = hdr.descs[segment::page_index(p)].bin_plus1 as usize;
            if b == 0 {
                Route::Invalid("not a block of a live run")
            } else {
                Route::Block { bin: b - 1, owner: hdr.owner as usize }
            }
        }
        _ => Route::Invalid("unknown segment kind"),
    }
}

/// Owner shard of a small/medium block whose bin the caller already knows
/// (sized free on the header route: one load instead of two).
///
/// # Safety
/// `p` is a live small/medium block of this arena.
#[inline(always)]
pub unsafe fn owner_of(p: usize) -> usize {
    SegHdr::at(segment::seg_base(p)).owner as usize
}
