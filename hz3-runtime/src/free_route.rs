//! What happens on free: from a pointer to its bin and owner shard.
//!
//! Owns: the order of the routes the flags select — `ptag: first` (tag map
//! first), the S110 step (segment header + `bin_plus1`, routing with
//! `free_fast`, observing only with `stats`), `ptag: late` (tag map after the
//! S110 step), and the header route (segment kind + page descriptor) that
//! every pointer can fall back to. Must never: write anything but counters, or
//! read a header of a slot it has not checked is live unless the pointer came
//! through a route that proves it (a tag or meta hit).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arena::{PAGES_PER_SEG, SLOT_HEAD};
use crate::segment::{self, SegHdr, KIND_LARGE, KIND_RUNS, SEG_MAGIC};
use crate::size_class::LARGE_BIN;
use crate::stats::{Counters, Ctr, Events};
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
            self.add(self.c.of(k));
        }
    }

    /// Count the events of one free when stats are on.
    #[inline(always)]
    pub fn bump_events<C: Config>(&self, e: Events) {
        if C::STATS {
            self.add(self.c.of_events(e));
        }
    }

    #[inline(always)]
    fn add(&self, c: &AtomicU64) {
        if self.owned {
            crate::stats::add_owned(c)
        } else {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether the S110 step routes frees (`free_fast`).
#[inline(always)]
fn meta_routes<C: Config>() -> bool {
    C::S110_META && C::FREE_FAST
}

/// Whether the S110 step only observes frees (counts, never routes): stats on,
/// `free_fast` off.
#[inline(always)]
fn meta_observes<C: Config>() -> bool {
    C::S110_META && C::STATS && !C::FREE_FAST
}

/// The hot route for a thread with a cache: `(tag, events)` of a block that
/// the configuration's first routing step resolves, the tag in `tagmap`
/// encoding (a small/medium block's bin and owner; on the tag routes also
/// [`tagmap::LARGE`], which the caller's local test never takes), or `None` for
/// everything else (not in the arena, a miss; large on the other routes).
/// Counts nothing: on `None` the caller's slow path runs [`route`], which takes
/// every configured step again and counts them; on a hit the caller counts
/// `events` with the free's own (one bump per free). Tests no block start:
/// with `harden` the caller does, once it has decoded the tag (see
/// `api::free_block`).
///
/// The first routing step in the flags' order ([`steps`]): `ptag: first`, the
/// S110 step when it routes, `ptag: late`, the header route. An S110 step that
/// only observes does not change the route, so when a tag route follows it
/// (`ptag: late`) the tag is read first and the observation follows: a
/// non-zero tag proves the segment live, so the observation needs no slot
/// check. Before `ptag: first` it is never reached on a hit; before the header
/// route it keeps its place.
///
/// # Safety
/// The state is initialised or `p` is outside its (empty) arena.
#[inline(always)]
pub unsafe fn fast<C: Config>(st: &State<C>, p: usize) -> Option<(u32, Events)> {
    // Every block start is 16-byte aligned: a misaligned pointer is never
    // pushed (the slow route rejects it).
    if p & 15 != 0 {
        return None;
    }
    let mut ev = Events::NONE;
    let off = in_arena::<C>(st, p, &mut ev)?;
    if C::PTAG == Ptag::First || (C::PTAG == Ptag::Late && !meta_routes::<C>()) {
        // SAFETY: `off` is `p`'s offset in the initialised arena (in_arena).
        return unsafe { fast_tag::<C>(st, p, off, ev, C::PTAG == Ptag::Late && meta_observes::<C>()) };
    }
    let r = if meta_routes::<C>() {
        // SAFETY: `p` is in the initialised arena (in_arena).
        unsafe { by_meta::<C>(st, p, &mut ev)? }
    } else {
        // `ptag: off` without `free_fast`: the header route is the only route
        // (after the S110 observation when stats are on).
        if meta_observes::<C>() {
            // SAFETY: `p` is in the initialised arena (in_arena).
            unsafe { by_meta::<C>(st, p, &mut ev) };
        }
        // SAFETY: `p` is in the initialised arena (in_arena).
        unsafe { by_header::<C>(st, p) }
    };
    match r {
        Route::Block { bin, owner } => Some((tagmap::encode(bin, owner), ev)),
        _ => None,
    }
}

/// The tag route on the hot path: the page's tag as it is (small/medium or
/// large), after the S110 observation when `observe` (the observation then
/// follows the tag load, see [`fast`]). `None` on a zero tag, on a tag a
/// failfast build cannot decode, and on an observation whose unexpected side
/// (a tagged page without meta) the slow route counts; so the hot side's
/// counters are constants, counted as in [`steps`] (observation, then a tag
/// hit).
#[inline(always)]
unsafe fn fast_tag<C: Config>(st: &State<C>, p: usize, off: usize, ev: Events, observe: bool) -> Option<(u32, Events)> {
    let page = off >> crate::os::PAGE_SHIFT;
    // SAFETY: `off` is an arena offset (caller), so `page` is below the page
    // count of the initialised arena's tag array.
    let tag = unsafe { tagmap::load(st.arena.tag_array(), page) };
    if tag == 0 {
        return None;
    }
    if C::FAILFAST && tagmap::decode(tag, C::SHARDS).is_none() {
        return None;
    }
    let mut ev = ev;
    if observe {
        // SAFETY: a non-zero tag is written only on the pages of a live run
        // or large block, so `p`'s segment is committed and live.
        if unsafe { !meta_is_set(p, page) } {
            return None;
        }
        note::<C>(&mut ev, Ctr::MetaHit);
    }
    note::<C>(&mut ev, Ctr::PtagHit);
    Some((tag, ev))
}

/// Route `p` (non-null) by the configured routes, ending with the header
/// route, and count the steps taken in `t`.
///
/// # Safety
/// The state is initialised.
#[inline(always)]
pub unsafe fn route<C: Config>(st: &State<C>, p: usize, t: Tally) -> Route {
    let mut ev = Events::NONE;
    let r = match in_arena::<C>(st, p, &mut ev) {
        Some(off) if off & 15 != 0 => Route::Invalid("misaligned pointer (not a block start)"),
        // SAFETY: `off` is `p`'s offset in the initialised arena.
        Some(off) => match unsafe { steps::<C>(st, p, off, &mut ev, t) } {
            Some(r) => r,
            // SAFETY: `p` is in the initialised arena.
            None => unsafe { by_header::<C>(st, p) },
        },
        None => Route::Outside,
    };
    if ev != Events::NONE {
        t.bump_events::<C>(ev);
    }
    if C::HARDEN {
        // A hardened type aborts on every bad free it can tell.
        match r {
            // SAFETY: every route returns `Block` only for a page of a live
            // run of `bin`.
            Route::Block { bin, .. } if unsafe { !crate::harden::is_block_start(p, bin) } => {
                crate::harden::interior_free::<C>(p)
            }
            // SAFETY: `Large` is returned only for a page of a live large
            // block, which lies in a committed slot.
            Route::Large if unsafe { !crate::large::is_live_block(st, p) } => {
                failfast::fail::<C>("free", p, "not the start of a live large block")
            }
            Route::Invalid(why) => failfast::fail::<C>("free", p, why),
            _ => {}
        }
    }
    r
}

/// The arena offset of `p`, or `None` (an S110 segment miss) when it is
/// outside the arena.
#[inline(always)]
fn in_arena<C: Config>(st: &State<C>, p: usize, ev: &mut Events) -> Option<usize> {
    let off = p.wrapping_sub(st.arena.base.load(Ordering::Relaxed));
    if off < st.arena.len.load(Ordering::Relaxed) {
        return Some(off);
    }
    if C::S110_META && (C::FREE_FAST || C::STATS) {
        note::<C>(ev, Ctr::SegMiss);
    }
    None
}

/// Add event `k` to `ev` when stats are on.
#[inline(always)]
fn note<C: Config>(ev: &mut Events, k: Ctr) {
    if C::STATS {
        *ev = ev.with(k);
    }
}

/// The configured route steps in the flags' order (`ptag: first`, the S110
/// step, `ptag: late`); `None` when none of them routes `p`.
///
/// # Safety
/// `off` is `p`'s offset in the initialised arena.
#[inline(always)]
unsafe fn steps<C: Config>(st: &State<C>, p: usize, off: usize, ev: &mut Events, t: Tally) -> Option<Route> {
    if C::PTAG == Ptag::First {
        // SAFETY: `off` is an arena offset (contract).
        if let Some(r) = unsafe { by_tag::<C>(st, off, ev, Some(t)) } {
            return Some(r);
        }
    }
    if C::S110_META && (C::FREE_FAST || C::STATS) {
        // SAFETY: `p` is in the initialised arena (contract).
        if let Some(r) = unsafe { by_meta::<C>(st, p, ev) } {
            return Some(r);
        }
    }
    if C::PTAG == Ptag::Late {
        // SAFETY: `off` is an arena offset (contract).
        return unsafe { by_tag::<C>(st, off, ev, Some(t)) };
    }
    None
}

/// The S110 observation of a pointer whose segment is known live (its page
/// has a tag): is the page meta set?
///
/// # Safety
/// `p`'s segment is a live segment of the arena and `arena_page` is `p`'s
/// arena page index.
#[inline(always)]
unsafe fn meta_is_set(p: usize, arena_page: usize) -> bool {
    let hdr = SegHdr::ptr(segment::seg_base(p));
    // The arena is segment-aligned, so the page's index in its segment is the
    // low bits of its arena page index (already computed for the tag), and
    // below `PAGES_PER_SEG`.
    let page = arena_page & (PAGES_PER_SEG - 1);
    // SAFETY: the header of a live segment is committed and initialised;
    // `meta` is atomic (others may write other pages' entries meanwhile) and
    // `page < PAGES_PER_SEG`, its length. Acquire pairs with the release store
    // at run carve time.
    unsafe { (*hdr).meta.get_unchecked(page).load(Ordering::Acquire) != 0 }
}

/// The S110 step: segment header, then `bin_plus1` of the page. Routes only
/// with `free_fast`; otherwise it observes (counts) and returns `None`.
///
/// # Safety
/// `p` is in the initialised arena.
#[inline(always)]
unsafe fn by_meta<C: Config>(st: &State<C>, p: usize, ev: &mut Events) -> Option<Route> {
    let seg = segment::seg_base(p);
    // seg_from_ptr: the slot must be live before its header is read (a stray
    // in-arena pointer may point into an uncommitted slot).
    // SAFETY: `p` is in the initialised arena (contract), so its segment's
    // slot index is below `slot_count()`.
    if unsafe { st.arena.slot_state(st.arena.slot_of(seg)) } != SLOT_HEAD {
        note::<C>(ev, Ctr::SegMiss);
        return None;
    }
    let hdr = SegHdr::ptr(seg);
    // SAFETY: a slot in state HEAD is committed, so its header is readable.
    // The magic is written when the segment is set up, before any of its
    // blocks is handed out, and when it is given back, after all came back:
    // no write races this read for a pointer the program owns, so a plain
    // read is sound (an atomic load would not fold into the compare: one
    // more instruction on this step). Only a stray pointer, outside free's
    // contract, could meet a write.
    if unsafe { *(*hdr).magic.as_ptr() } != SEG_MAGIC {
        note::<C>(ev, Ctr::SegMiss);
        return None;
    }
    // SAFETY: as above; `meta` is atomic and `page_index` is below its length.
    // Acquire pairs with the release store at run carve time.
    let m = unsafe { (*hdr).meta[segment::page_index(p)].load(Ordering::Acquire) } as usize;
    if m == 0 {
        note::<C>(ev, Ctr::MetaZero);
        return None;
    }
    note::<C>(ev, Ctr::MetaHit);
    if C::FREE_FAST {
        // SAFETY: the owner is written when the segment is set up, before any
        // of its pages has meta (the acquire above orders it).
        Some(decode_bin(m - 1, unsafe { (*hdr).owner.load(Ordering::Relaxed) } as usize))
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

/// The tag-map route: `None` on a zero (or undecodable) tag. A tag that does
/// not decode is counted (and fails) only on the slow route (`slow` given).
///
/// # Safety
/// `off` is an offset in the initialised arena.
#[inline(always)]
unsafe fn by_tag<C: Config>(st: &State<C>, off: usize, ev: &mut Events, slow: Option<Tally>) -> Option<Route> {
    // SAFETY: `off` is an arena offset, so its page is below the tag array's
    // page count.
    let tag = unsafe { tagmap::load(st.arena.tag_array(), off >> crate::os::PAGE_SHIFT) };
    if tag == 0 {
        note::<C>(ev, Ctr::PtagMiss);
        return None;
    }
    if !C::FAILFAST {
        // Tags are written only by this engine: only failfast builds validate
        // them (and count decode failures).
        note::<C>(ev, Ctr::PtagHit);
        let (bin, owner) = tagmap::decode_trusted(tag);
        return Some(decode_bin(bin, owner));
    }
    match tagmap::decode(tag, C::SHARDS) {
        Some((bin, owner)) => {
            note::<C>(ev, Ctr::PtagHit);
            Some(decode_bin(bin, owner))
        }
        None => {
            if let Some(t) = slow {
                t.bump::<C>(Ctr::PtagDecodeFail);
                failfast::fail::<C>("free", st.arena.base.load(Ordering::Relaxed) + off, "tag does not decode");
            }
            None
        }
    }
}

/// The header route: slot state, segment magic and kind, page descriptor.
///
/// # Safety
/// `p` is in the initialised arena.
#[inline]
pub unsafe fn by_header<C: Config>(st: &State<C>, p: usize) -> Route {
    let seg = segment::seg_base(p);
    // SAFETY: `p` is in the initialised arena (contract), so its segment's
    // slot index is below `slot_count()`.
    if unsafe { st.arena.slot_state(st.arena.slot_of(seg)) } != SLOT_HEAD {
        return Route::Invalid("not in a live segment");
    }
    let hdr = SegHdr::ptr(seg);
    // SAFETY: a slot in state HEAD is committed, so its header is readable;
    // magic, kind and owner are written when the segment is set up, before any
    // of its blocks is handed out.
    let (magic, kind) = unsafe { ((*hdr).magic.load(Ordering::Relaxed), (*hdr).kind.load(Ordering::Relaxed)) };
    if magic != SEG_MAGIC {
        return Route::Invalid("not in a live segment");
    }
    match kind {
        KIND_LARGE => Route::Large,
        KIND_RUNS => {
            // SAFETY: as above; a page's descriptor is written at its run's
            // life-cycle events (carve, release), before the run's blocks are
            // handed out. Read in place: no reference to the descriptors
            // other threads write.
            let b = unsafe { (*hdr).descs[segment::page_index(p)].bin_plus1.load(Ordering::Relaxed) } as usize;
            if b == 0 {
                Route::Invalid("not a block of a live run")
            } else {
                // SAFETY: as above.
                Route::Block { bin: b - 1, owner: unsafe { (*hdr).owner.load(Ordering::Relaxed) } as usize }
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
    // SAFETY: a live block's segment header is committed; the owner is
    // written when the segment is set up, before the block was handed out.
    unsafe { (*SegHdr::ptr(segment::seg_base(p))).owner.load(Ordering::Relaxed) as usize }
}
