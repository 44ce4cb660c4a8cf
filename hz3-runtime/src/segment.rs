//! Segments: the 1 MiB units of the arena and their headers.
//!
//! Owns: the segment header layout (magic, kind, owner shard, free-page bitmap,
//! the bitmap of free pages that read as zero,
//! the S110 `meta` array of `bin_plus1` per page, and the per-page descriptors
//! the shard central uses), segment arithmetic, and finding/marking page runs
//! inside one segment. Must never: decide policy (which shard, when to purge) —
//! that is the shard's — or be reached for a pointer that is not in the arena.
//!
//! Who reaches what: any thread may read a header (`&SegHdr` or
//! [`SegHdr::ptr`]), because the fields read without a lock (magic, kind,
//! owner, large-block fields, page meta, each page's `bin_plus1` and
//! `run_start`) are atomics written at life-cycle events. The page maps,
//! the segment-list links ([`SegRuns`]) and the run state of each page
//! ([`RunDesc`]) sit in `UnsafeCell`s that only the holder of the owning
//! shard's lock opens. No `&mut SegHdr` is ever made.
//!
//! Pages 0 and 1 hold the header of a small/medium segment. A large block's
//! first segment uses only page 0 for its header; its data starts at page 1 or
//! later, over the unused descriptor area.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::arena::{PAGES_PER_SEG, SEG_SHIFT, SEG_SIZE};
use crate::os::{PAGE_SHIFT, PAGE_SIZE};

/// "hz3seg01": a live segment header.
pub const SEG_MAGIC: u64 = 0x6831_3067_6573_337a;
/// Header pages of a small/medium segment.
pub const HDR_PAGES: usize = 2;
/// Pages of a small/medium segment that can hold runs.
pub const USABLE_PAGES: usize = PAGES_PER_SEG - HDR_PAGES;
/// Segment of small and medium runs.
pub const KIND_RUNS: u32 = 1;
/// First segment of a large block.
pub const KIND_LARGE: u32 = 2;

/// Descriptor flag: the run is on its shard's partial list.
pub const IN_PARTIAL: u8 = 1;
/// Descriptor flag: the run's pages read as zero when it was carved, so its
/// blocks at index >= `bump` (never handed out) still do.
pub const ZERO_RUN: u8 = 2;

/// Per-page descriptor. The free route of any thread reads `bin_plus1` and
/// `run_start` without a lock, so they are atomics; the rest (`run`) is
/// reached only by the holder of the owning shard's lock.
#[repr(C)]
pub struct PageDesc {
    /// `bin + 1` on pages where a block of the run starts, else 0. Written
    /// under the shard lock when the run is carved or released. Relaxed
    /// everywhere: a free of a live block is ordered after the carve by the
    /// chain that handed the block out (shard lock, then the program's own
    /// synchronisation); a stray pointer may read either value, and both are
    /// checked.
    pub bin_plus1: AtomicU16,
    /// Page index of the run's first page (as `bin_plus1`, Relaxed).
    pub run_start: AtomicU8,
    /// The run's state, for the shard lock holder only.
    run: UnsafeCell<RunDesc>,
}

/// What a run's first page says about the run: read and written only by
/// the holder of the lock of the shard that owns the segment.
#[repr(C)]
pub struct RunDesc {
    /// `IN_PARTIAL`, `ZERO_RUN` (run-start pages only).
    pub flags: u8,
    /// Blocks of the run that are out of the central (in caches, in flight, or live).
    pub used: u16,
    /// Blocks carved so far (blocks at index >= bump were never handed out).
    pub bump: u16,
    /// Segment offset of the first block on the run's free list (0 = empty).
    pub free_head: u32,
    /// Next run on the shard's partial list (global page id, 0 = none).
    pub next: u32,
    /// Previous run on the shard's partial list (global page id, 0 = none).
    pub prev: u32,
}

impl RunDesc {
    /// The state of a page that starts no run yet.
    pub const EMPTY: RunDesc = RunDesc { flags: 0, used: 0, bump: 0, free_head: 0, next: 0, prev: 0 };
}

impl PageDesc {
    /// The run state of this page, for the lock holder.
    ///
    /// # Safety
    /// The caller holds the lock of the shard that owns this segment (or
    /// holds the segment alone: a slot just claimed), and makes no other
    /// reference to this page's run state while the one returned lives.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn run(&self) -> &mut RunDesc {
        // SAFETY: the run state is reached only by the holder of the shard
        // lock, who makes one reference at a time (contract).
        unsafe { &mut *self.run.get() }
    }
}

/// Segment header (page 0, and page 1 for the descriptors).
///
/// Shared by every thread: the fields the free route and the failfast checks
/// read without a lock are atomics (written at the segment's life-cycle
/// events), and the rest sits behind an `UnsafeCell` that only the holder of
/// the owning shard's lock opens ([`SegHdr::runs`], [`PageDesc::run`]). So a
/// `&SegHdr` may be held by any thread; no `&mut SegHdr` is ever made.
#[repr(C)]
pub struct SegHdr {
    /// `SEG_MAGIC` while the segment is live. Stored with release when the
    /// segment is set up (after the fields below), cleared when it is given
    /// back; readers load it relaxed (see `bin_plus1`).
    pub magic: AtomicU64,
    /// `KIND_RUNS` or `KIND_LARGE` (relaxed: published by the magic).
    pub kind: AtomicU32,
    /// Owner shard (runs segments; relaxed: published by the magic).
    pub owner: AtomicU32,
    /// Page maps and the shard's segment-list links, for the shard lock holder.
    runs: UnsafeCell<SegRuns>,
    /// Large block: slots in the run. Written by the block's holder (alloc,
    /// in-place growth); relaxed, the holder orders its own accesses.
    pub large_slots: AtomicU32,
    /// Large block: offset of the user pointer from the segment base (as `large_slots`).
    pub large_off: AtomicU32,
    /// Large block: 1 while the block is live (failfast double-free check).
    pub large_live: core::sync::atomic::AtomicU32,
    /// S110 page meta: `bin_plus1` per page (0 = unknown / not a block start).
    pub meta: [AtomicU16; PAGES_PER_SEG],
    /// Page descriptors (runs segments only; overlaps large-block data).
    pub descs: [PageDesc; PAGES_PER_SEG],
}

/// The part of a runs segment's header only the holder of its shard's lock
/// reads or writes: which pages are free, dirty or zero, and the links of
/// the shard's list of segments with free pages.
#[repr(C)]
pub struct SegRuns {
    /// Free pages (bit set = free).
    pub free_map: [u64; PAGES_PER_SEG / 64],
    /// Free pages whose memory is still resident (bit set = dirty); purging
    /// clears them.
    pub dirty_map: [u64; PAGES_PER_SEG / 64],
    /// Free pages known to read as zero (bit set): fresh from the OS or
    /// purged, and not carved into a run since.
    pub zero_map: [u64; PAGES_PER_SEG / 64],
    /// Number of free pages.
    pub n_free: u32,
    /// Number of dirty pages (bits set in `dirty_map`, kept by
    /// [`Self::mark_dirty`]): the warm-first carve passes over a segment
    /// without enough of them at once instead of scanning its map.
    pub n_dirty: u32,
    /// Slot index + 1 of the next/previous segment on the shard's list of
    /// segments with free pages (0 = none); `listed` says whether it is on it.
    pub next_seg: u32,
    /// See `next_seg`.
    pub prev_seg: u32,
    /// Whether the segment is on its shard's list.
    pub listed: u32,
    /// Pages of the segment in runs longer than `LONG_RUN_PAGES` (the classes
    /// above 256 KiB). A segment holds long runs or shorter ones, not both
    /// (see [`Self::takes_run`]).
    pub long_pages: u32,
}

const _: () = assert!(core::mem::size_of::<SegHdr>() <= HDR_PAGES * PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(SegHdr, descs) <= PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(SegHdr, meta) + 2 * PAGES_PER_SEG <= PAGE_SIZE);

/// Segment base of an address inside the arena.
#[inline(always)]
pub fn seg_base(p: usize) -> usize {
    p & !(SEG_SIZE - 1)
}

/// Page index of an address within its segment.
#[inline(always)]
pub fn page_index(p: usize) -> usize {
    (p & (SEG_SIZE - 1)) >> PAGE_SHIFT
}

/// Global page id (arena page index) of page `pi` of the segment at `seg`.
#[inline]
pub fn page_id(arena_base: usize, seg: usize, pi: usize) -> u32 {
    (((seg - arena_base) >> PAGE_SHIFT) + pi) as u32
}

/// Segment base and page index of global page id `id`.
#[inline]
pub fn from_page_id(arena_base: usize, id: u32) -> (usize, usize) {
    let off = (id as usize) << PAGE_SHIFT;
    (arena_base + (off & !(SEG_SIZE - 1)), (off & (SEG_SIZE - 1)) >> PAGE_SHIFT)
}

/// Slot index of a segment base.
#[inline]
pub fn slot_index(arena_base: usize, seg: usize) -> usize {
    (seg - arena_base) >> SEG_SHIFT
}

impl SegHdr {
    /// The header of the segment at `seg`, as a raw pointer: the reader of a
    /// header other threads write (other pages' descriptors, counters) reads
    /// the fields it needs in place, through no reference to the whole header.
    /// Dereferencing needs `seg` to be the base of a committed slot.
    #[inline(always)]
    pub const fn ptr(seg: usize) -> *mut SegHdr {
        seg as *mut SegHdr
    }

    /// The header of the segment at `seg`, shared: every field another
    /// thread may change is atomic or behind the shard lock's `UnsafeCell`.
    ///
    /// # Safety
    /// `seg` is the base of a committed slot of the arena, which stays
    /// committed while the reference lives.
    #[inline(always)]
    pub unsafe fn of<'a>(seg: usize) -> &'a SegHdr {
        // SAFETY: `seg` is the base of a committed slot (contract), which
        // starts with its header; a shared reference is sound because
        // nothing in it changes outside atomics and `UnsafeCell`s.
        unsafe { &*(seg as *const SegHdr) }
    }

    /// The page maps and list links of this runs segment, for the lock holder.
    ///
    /// # Safety
    /// The caller holds the lock of the shard that owns this segment (or
    /// holds the segment alone: a slot just claimed), and makes no other
    /// reference to them while the one returned lives.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn runs(&self) -> &mut SegRuns {
        // SAFETY: only the shard lock holder opens this cell, one reference
        // at a time (contract).
        unsafe { &mut *self.runs.get() }
    }

    /// Initialise a fresh runs segment owned by `owner` (all usable pages
    /// free); `clean`: its memory reads as zero (fresh or purged slot).
    ///
    /// # Safety
    /// The caller holds this segment alone: a committed slot just claimed
    /// from the arena, whose run state nobody else references.
    pub unsafe fn init_runs(&self, owner: usize, clean: bool) {
        // Relaxed: published by the release store of the magic below.
        self.kind.store(KIND_RUNS, Ordering::Relaxed);
        self.owner.store(owner as u32, Ordering::Relaxed);
        // SAFETY: the segment is the caller's alone (contract).
        let r = unsafe { self.runs() };
        r.free_map = [!0u64; PAGES_PER_SEG / 64];
        r.free_map[0] &= !((1u64 << HDR_PAGES) - 1);
        r.dirty_map = [0; PAGES_PER_SEG / 64];
        r.zero_map = if clean { r.free_map } else { [0; PAGES_PER_SEG / 64] };
        r.n_free = USABLE_PAGES as u32;
        r.n_dirty = 0;
        r.next_seg = 0;
        r.prev_seg = 0;
        r.listed = 0;
        r.long_pages = 0;
        for m in self.meta.iter() {
            m.store(0, Ordering::Relaxed);
        }
        for d in self.descs.iter() {
            d.bin_plus1.store(0, Ordering::Relaxed);
            // SAFETY: as above; one page's run state at a time.
            unsafe { *d.run() = RunDesc::EMPTY };
        }
        // Release: a reader that sees the magic sees the initialised header.
        self.magic.store(SEG_MAGIC, Ordering::Release);
    }
}

/// The words of a page bitmap that pages `[pi, pi + k)` cover (`pi + k <=
/// PAGES_PER_SEG`), each with the mask of its bits in the range: the bitmap
/// updates of a run cost a step per 64 pages, not per page (a long run has
/// up to 254).
fn range_words(pi: usize, k: usize) -> impl Iterator<Item = (usize, u64)> {
    let end = pi + k;
    (pi / 64..end.div_ceil(64)).map(move |w| {
        let lo = pi.max(w * 64) - w * 64;
        let hi = end.min(w * 64 + 64) - w * 64;
        let mask = if hi - lo == 64 { !0 } else { ((1u64 << (hi - lo)) - 1) << lo };
        (w, mask)
    })
}

/// Runs longer than this many pages are placed last fit (see
/// [`SegRuns::find_run_aligned`]); the window searches take at most this many.
pub const LONG_RUN_PAGES: usize = 64;

/// First page index `p >= first`, a multiple of `a` pages (a power of two up
/// to 32; 1 = any page), such that pages `p..p+k` (`k <= 64`) all have their
/// bit set in `map`, if any (first fit). Reads each bitmap word with the next
/// one as a 128-bit window and tests only the set bits at multiples of `a`.
fn first_window(map: &[u64; PAGES_PER_SEG / 64], k: usize, a: usize, first: usize) -> Option<usize> {
    debug_assert!(k <= 64 && a <= 32 && a.is_power_of_two());
    let want: u128 = if k == 64 { u64::MAX as u128 } else { (1u128 << k) - 1 };
    // One bit at every multiple of `a` (every bit for `a <= 1`).
    let starts = u64::MAX / ((1u64 << a.max(1)) - 1);
    for w in 0..map.len() {
        let lo = map[w];
        if lo == 0 {
            continue;
        }
        let hi = if w + 1 < map.len() { map[w + 1] } else { 0 };
        let window = lo as u128 | (hi as u128) << 64;
        let mut cand = lo & starts;
        while cand != 0 {
            let b = cand.trailing_zeros() as usize;
            let p = w * 64 + b;
            if p >= first && p + k <= PAGES_PER_SEG && (window >> b) & want == want {
                return Some(p);
            }
            cand &= cand - 1;
        }
    }
    None
}

/// First page index of `k` contiguous pages whose bits are set in `map`, if
/// any (first fit, scanning runs of set bits a word at a time; any `k`).
fn first_run(map: &[u64; PAGES_PER_SEG / 64], k: usize) -> Option<usize> {
    let mut run_start = 0;
    let mut run_len = 0;
    for (w, &word) in map.iter().enumerate() {
        if word == !0 {
            if run_len == 0 {
                run_start = w * 64;
            }
            run_len += 64;
            if run_len >= k {
                return Some(run_start);
            }
            continue;
        }
        let mut b = 0;
        while b < 64 {
            let x = word >> b;
            if x == 0 {
                run_len = 0;
                break;
            }
            let zeros = x.trailing_zeros() as usize;
            if zeros > 0 {
                run_len = 0;
                b += zeros;
                continue;
            }
            let ones = x.trailing_ones() as usize;
            if run_len == 0 {
                run_start = w * 64 + b;
            }
            run_len += ones;
            if run_len >= k {
                return Some(run_start);
            }
            b += ones;
            if b < 64 {
                run_len = 0;
            }
        }
    }
    None
}

/// Highest page index `p` such that pages `p..p+k` all have their bit set in
/// `map`, if any (last fit: the set run nearest the segment's end, scanned
/// from the top a word at a time; any `k`).
fn last_run(map: &[u64; PAGES_PER_SEG / 64], k: usize) -> Option<usize> {
    let mut run_len = 0;
    // One past the top page of the run being counted.
    let mut end = 0;
    for w in (0..map.len()).rev() {
        let word = map[w];
        if word == !0 {
            if run_len == 0 {
                end = w * 64 + 64;
            }
            run_len += 64;
            if run_len >= k {
                return Some(end - k);
            }
            continue;
        }
        // Bits `0..b` of the word are still to look at, from bit `b - 1` down.
        let mut b = 64;
        while b > 0 {
            let x = word << (64 - b);
            if x == 0 {
                run_len = 0;
                break;
            }
            let zeros = x.leading_zeros() as usize;
            if zeros > 0 {
                run_len = 0;
                b -= zeros;
                continue;
            }
            let ones = x.leading_ones() as usize;
            if run_len == 0 {
                end = w * 64 + b;
            }
            run_len += ones;
            if run_len >= k {
                return Some(end - k);
            }
            b -= ones;
        }
    }
    None
}

impl SegRuns {
    /// Whether a run of `k` pages may be carved here: long runs (more than
    /// `LONG_RUN_PAGES`) go only to segments without shorter runs, and those
    /// only to segments without long runs. Mixed, the short runs carved
    /// beside a long one keep its segment when the long block is freed, and
    /// the next long run needs a new segment (measured: with `purge: false`,
    /// RSS rose in steps of 8-12 MiB over waves of threads that reuse each
    /// other's pages).
    pub fn takes_run(&self, k: usize) -> bool {
        let used = USABLE_PAGES as u32 - self.n_free;
        if k > LONG_RUN_PAGES {
            self.long_pages == used
        } else {
            self.long_pages == 0
        }
    }

    /// First page index of `k` contiguous free pages, if any (first fit).
    pub fn find_run(&self, k: usize) -> Option<usize> {
        if (self.n_free as usize) < k {
            return None;
        }
        first_run(&self.free_map, k)
    }

    /// First page index, a multiple of `a` pages (a power of two up to 32),
    /// of `k` contiguous free pages, if any (first fit). Reads each
    /// bitmap word with the next one as a 128-bit window and tests only the
    /// free pages at multiples of `a`.
    ///
    /// Runs longer than 64 pages (the classes above 256 KiB, page-aligned)
    /// are placed last fit, from the segment's end: shorter runs fill
    /// segments from their start, so the pages a freed long run leaves are
    /// found whole by the next long run instead of being cut up by short ones.
    pub fn find_run_aligned(&self, k: usize, a: usize) -> Option<usize> {
        if (self.n_free as usize) < k {
            return None;
        }
        if k > LONG_RUN_PAGES {
            debug_assert!(a <= 1);
            return last_run(&self.free_map, k);
        }
        if a <= 1 {
            return self.find_run(k);
        }
        first_window(&self.free_map, k, a, HDR_PAGES.div_ceil(a) * a)
    }

    /// First page index, a multiple of `a` pages (a power of two up to 32),
    /// of `k` contiguous free pages that are still resident (dirty), if
    /// any (first fit, the window test of [`Self::find_run_aligned`] over
    /// the dirty map). Carving these first reuses warm memory instead of
    /// faulting in pages that were purged or never touched: a thread that
    /// takes a parked shard, or a program that frees and allocates again,
    /// keeps its resident set instead of growing it.
    /// Runs longer than 64 pages are placed last fit, as in
    /// [`Self::find_run_aligned`].
    pub fn find_warm_run(&self, k: usize, a: usize) -> Option<usize> {
        if (self.n_dirty as usize) < k {
            return None;
        }
        if k > LONG_RUN_PAGES {
            debug_assert!(a <= 1);
            return last_run(&self.dirty_map, k);
        }
        // Dirty pages are free pages past the header.
        first_window(&self.dirty_map, k, a, HDR_PAGES)
    }

    /// Mark pages `[pi, pi+k)` used (`used = true`) or free.
    pub fn mark(&mut self, pi: usize, k: usize, used: bool) {
        for (w, m) in range_words(pi, k) {
            if used {
                self.free_map[w] &= !m;
            } else {
                self.free_map[w] |= m;
            }
        }
        if used {
            self.n_free -= k as u32;
        } else {
            self.n_free += k as u32;
        }
    }
}

impl SegRuns {
    /// Whether every page of `[pi, pi+k)` reads as zero; clears their zero
    /// marks (called when the pages are carved into a run, whose blocks are
    /// then written).
    pub fn take_zero(&mut self, pi: usize, k: usize) -> bool {
        let mut all = true;
        for (w, m) in range_words(pi, k) {
            all &= self.zero_map[w] & m == m;
            self.zero_map[w] &= !m;
        }
        all
    }

    /// Mark pages `[pi, pi+k)` as reading zero.
    pub fn set_zero(&mut self, pi: usize, k: usize) {
        for (w, m) in range_words(pi, k) {
            self.zero_map[w] |= m;
        }
    }

    /// Mark pages `[pi, pi+k)` dirty (`true`) or clean; returns how many changed.
    pub fn mark_dirty(&mut self, pi: usize, k: usize, dirty: bool) -> u32 {
        let mut changed = 0;
        for (w, m) in range_words(pi, k) {
            let flip = if dirty { !self.dirty_map[w] & m } else { self.dirty_map[w] & m };
            self.dirty_map[w] ^= flip;
            changed += flip.count_ones();
        }
        if dirty {
            self.n_dirty += changed;
        } else {
            self.n_dirty -= changed;
        }
        changed
    }

    /// Purge every dirty page of this segment, a stretch of free pages at a
    /// time: a stretch is purged whole, with the clean free pages between its
    /// dirty ones (they read as zero either way), so a segment whose free
    /// pages alternate dirty and clean costs one call per stretch, not per
    /// dirty piece. Returns the number of dirty pages purged.
    ///
    /// The stretches go into `batch`, given back by its next flush.
    ///
    /// # Safety
    /// `self` is the run state of a committed runs segment; dirty pages hold
    /// no data, and the free pages stay unused until `batch` is flushed.
    pub unsafe fn purge_dirty(&mut self, batch: &mut crate::os::PurgeBatch) -> u32 {
        // SAFETY: the caller's contract.
        unsafe { self.purge_dirty_stretches(1, batch) }
    }

    /// [`Self::purge_dirty`] for the stretches of at least `min` pages only
    /// (the most pages per call; short stretches are the likeliest to be
    /// carved again soon).
    ///
    /// # Safety
    /// As [`Self::purge_dirty`].
    pub unsafe fn purge_dirty_stretches(&mut self, min: usize, batch: &mut crate::os::PurgeBatch) -> u32 {
        if self.n_dirty == 0 {
            return 0;
        }
        // The run state lies in the header, at the start of its segment.
        let seg = seg_base(self as *mut SegRuns as usize) as *mut u8;
        let mut purged = 0;
        // A word of the bitmaps at a time (four per segment), not a page at a
        // time: a shard's purge looks at every segment it holds.
        let mut p = HDR_PAGES;
        while let Some(start) = next_bit(&self.dirty_map, p, true) {
            if !bit_set(&self.free_map, start) {
                // A dirty page is always free; never purge one that is not.
                debug_assert!(false, "dirty page {start} is not free");
                p = start + 1;
                continue;
            }
            // The free stretch from `start`, up to its last dirty page
            // (trailing clean pages need no call).
            let stretch_end = next_bit(&self.free_map, start, false).unwrap_or(PAGES_PER_SEG);
            let end = last_bit_below(&self.dirty_map, stretch_end).map_or(start + 1, |d| d + 1);
            p = stretch_end;
            if end - start < min {
                continue;
            }
            // Only the dirty pages of purged stretches are counted.
            purged += self.mark_dirty(start, end - start, false);
            // SAFETY: pages `start..end` lie in this committed segment (below
            // PAGES_PER_SEG) and, being free, hold no data; they stay unused
            // until the batch is flushed (contract).
            unsafe { batch.push(seg.add(start * PAGE_SIZE), (end - start) * PAGE_SIZE) };
            // Purged pages read as zero until carved again (not carved before
            // the batch is flushed).
            self.set_zero(start, end - start);
        }
        purged
    }
}

/// Whether page `p`'s bit is set in `map`.
fn bit_set(map: &[u64; PAGES_PER_SEG / 64], p: usize) -> bool {
    map[p / 64] & (1u64 << (p % 64)) != 0
}

/// The first page `>= from` whose bit in `map` is `set` (true: a set bit,
/// false: a clear one), if any: a word at a time.
fn next_bit(map: &[u64; PAGES_PER_SEG / 64], from: usize, set: bool) -> Option<usize> {
    let mut w = from / 64;
    if w >= map.len() {
        return None;
    }
    let flip = if set { 0 } else { !0 };
    let mut word = (map[w] ^ flip) & (!0u64 << (from % 64));
    loop {
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        if w == map.len() {
            return None;
        }
        word = map[w] ^ flip;
    }
}

/// The last page `< below` whose bit is set in `map`, if any: a word at a time.
fn last_bit_below(map: &[u64; PAGES_PER_SEG / 64], below: usize) -> Option<usize> {
    if below == 0 {
        return None;
    }
    let top = below - 1;
    let mut w = top / 64;
    let mut word = map[w] & (!0u64 >> (63 - top % 64));
    loop {
        if word != 0 {
            return Some(w * 64 + 63 - word.leading_zeros() as usize);
        }
        if w == 0 {
            return None;
        }
        w -= 1;
        word = map[w];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time bit searches of the purge agree with a page-at-a-time
    /// look, from every start page, on maps with empty, full and mixed words.
    #[test]
    fn bitmap_searches_match_a_page_by_page_look() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..64 {
            let mut map = [0u64; PAGES_PER_SEG / 64];
            for (w, word) in map.iter_mut().enumerate() {
                *word = match (round + w) % 4 {
                    0 => 0,
                    1 => !0,
                    _ => next() & next(),
                };
            }
            for from in 0..=PAGES_PER_SEG {
                for set in [true, false] {
                    let naive = (from..PAGES_PER_SEG).find(|&p| bit_set(&map, p) == set);
                    assert_eq!(next_bit(&map, from, set), naive, "round {round} from {from} set {set}");
                }
                let naive = (0..from).rev().find(|&p| bit_set(&map, p));
                assert_eq!(last_bit_below(&map, from), naive, "round {round} below {from}");
            }
        }
    }

    #[test]
    fn segment_arithmetic() {
        let base = 0x7f00_0000_0000usize;
        let p = base + 3 * SEG_SIZE + 5 * PAGE_SIZE + 48;
        assert_eq!(seg_base(p), base + 3 * SEG_SIZE);
        assert_eq!(page_index(p), 5);
        let id = page_id(base, seg_base(p), page_index(p));
        assert_eq!(id as usize, 3 * PAGES_PER_SEG + 5);
        assert_eq!(from_page_id(base, id), (base + 3 * SEG_SIZE, 5));
        assert_eq!(slot_index(base, seg_base(p)), 3);
    }

    #[test]
    fn runs_are_found_and_marked() {
        let mem = crate::os::map_rw(SEG_SIZE);
        assert!(!mem.is_null());
        // SAFETY: `mem` is a fresh read/write mapping of a whole segment.
        let hdr = unsafe { SegHdr::of(mem as usize) };
        // SAFETY: the mapping is this test's alone.
        unsafe { hdr.init_runs(3, true) };
        assert_eq!(hdr.magic.load(Ordering::Relaxed), SEG_MAGIC);
        // SAFETY: as above.
        let h = unsafe { hdr.runs() };
        assert_eq!(h.find_run(1), Some(HDR_PAGES));
        assert_eq!(h.find_run(USABLE_PAGES), Some(HDR_PAGES));
        assert_eq!(h.find_run(USABLE_PAGES + 1), None);
        h.mark(HDR_PAGES, 60, true);
        h.mark(70, 1, true);
        assert_eq!(h.find_run(8), Some(HDR_PAGES + 60)); // pages 62..70 are free
        assert_eq!(h.find_run(9), Some(71));
        h.mark(71, PAGES_PER_SEG - 71, true);
        assert_eq!(h.find_run(9), None);
        assert_eq!(h.find_run(8), Some(62));
        h.mark(62, 8, true);
        assert_eq!(h.n_free, 0);
        assert_eq!(h.find_run(1), None);
        h.mark(100, 3, false);
        assert_eq!(h.find_run(3), Some(100));
        // Runs that cross word boundaries.
        h.mark(60, 8, false);
        assert_eq!(h.find_run(8), Some(60));
        assert_eq!(h.find_run(4), Some(60));
        h.mark(60, 8, true);
        h.mark(120, 80, false);
        assert_eq!(h.find_run(80), Some(120));
        assert_eq!(h.find_run(81), None);
        h.mark(120, 80, true);
        h.mark(100, 3, true);
        h.mark(PAGES_PER_SEG - 5, 5, false);
        assert_eq!(h.find_run(5), Some(PAGES_PER_SEG - 5));
        assert_eq!(h.find_run(6), None);
        // Aligned runs: only starts at multiples of the alignment count.
        assert_eq!(h.find_run_aligned(4, 4), Some(PAGES_PER_SEG - 4));
        assert_eq!(h.find_run_aligned(5, 4), None);
        assert_eq!(h.find_run_aligned(2, 1), Some(PAGES_PER_SEG - 5));
        h.mark(PAGES_PER_SEG - 5, 5, true);
        h.mark(HDR_PAGES, 30, false);
        assert_eq!(h.find_run_aligned(16, 16), Some(16));
        assert_eq!(h.find_run_aligned(8, 8), Some(8));
        assert_eq!(h.find_run_aligned(2, 2), Some(HDR_PAGES));
        assert_eq!(h.find_run_aligned(17, 16), None);
        // SAFETY: the mapping was made above and is no longer used.
        unsafe { crate::os::unmap(mem, SEG_SIZE) };
    }

    #[test]
    fn warm_runs_are_found_and_purged_a_stretch_at_a_time() {
        // A segment-aligned segment: the purge finds its segment from the
        // header's address, as the engine's segments are aligned.
        let map = crate::os::map_rw(2 * SEG_SIZE);
        assert!(!map.is_null());
        let mem = seg_base(map as usize + SEG_SIZE - 1) as *mut u8;
        // SAFETY: `mem` is a read/write, segment-aligned whole segment inside `map`.
        let hdr = unsafe { SegHdr::of(mem as usize) };
        // SAFETY: the mapping is this test's alone.
        unsafe { hdr.init_runs(0, true) };
        // SAFETY: as above.
        let h = unsafe { hdr.runs() };
        h.mark(HDR_PAGES, USABLE_PAGES, true);
        assert_eq!(h.find_warm_run(1, 1), None, "no dirty page yet");
        // Free pages 10..20 (dirty 10..13 and 16..20, 13..16 clean) and 40..41 (dirty).
        h.mark(10, 10, false);
        h.mark_dirty(10, 3, true);
        h.mark_dirty(16, 4, true);
        h.mark(40, 1, false);
        h.mark_dirty(40, 1, true);
        assert_eq!(h.find_warm_run(3, 1), Some(10));
        assert_eq!(h.find_warm_run(4, 1), Some(16), "the first dirty stretch is 3 pages");
        assert_eq!(h.find_warm_run(2, 2), Some(10));
        assert_eq!(h.find_warm_run(4, 4), Some(16));
        assert_eq!(h.find_warm_run(5, 1), None, "clean pages do not count as warm");
        // Write the free pages so a purge can be seen (they read zero after it).
        for p in [10usize, 14, 19, 40] {
            // SAFETY: page `p` lies in the mapping.
            unsafe { *mem.add(p * PAGE_SIZE) = 7 };
        }
        // Only stretches of at least 8 pages: 10..20 (ending at its last dirty page).
        // SAFETY: the free pages hold no data.
        assert_eq!(unsafe { h.purge_dirty_stretches(8, &mut crate::os::PurgeBatch::new()) }, 7);
        // SAFETY: as above.
        unsafe {
            assert_eq!(*mem.add(10 * PAGE_SIZE), 0);
            assert_eq!(*mem.add(14 * PAGE_SIZE), 0, "the clean page inside the stretch went with it");
            assert_eq!(*mem.add(19 * PAGE_SIZE), 0);
            assert_eq!(*mem.add(40 * PAGE_SIZE), 7, "the short stretch was kept");
        }
        assert_eq!(h.find_warm_run(1, 1), Some(40));
        // SAFETY: as above.
        assert_eq!(unsafe { h.purge_dirty(&mut crate::os::PurgeBatch::new()) }, 1);
        // SAFETY: as above.
        assert_eq!(unsafe { *mem.add(40 * PAGE_SIZE) }, 0);
        assert_eq!(h.find_warm_run(1, 1), None);
        // SAFETY: the mapping was made above and is no longer used.
        unsafe { crate::os::unmap(map, 2 * SEG_SIZE) };
    }
    /// Runs longer than 64 pages are placed last fit, in the free map and in
    /// the dirty map alike, and are found across word boundaries; shorter
    /// runs stay first fit.
    #[test]
    fn long_runs_are_placed_from_the_segment_end() {
        let mut free = [0u64; PAGES_PER_SEG / 64];
        let set = |m: &mut [u64; PAGES_PER_SEG / 64], from: usize, n: usize| {
            for p in from..from + n {
                m[p / 64] |= 1 << (p % 64);
            }
        };
        assert_eq!(last_run(&free, 1), None);
        set(&mut free, HDR_PAGES, USABLE_PAGES);
        assert_eq!(last_run(&free, USABLE_PAGES), Some(HDR_PAGES));
        assert_eq!(last_run(&free, USABLE_PAGES + 1), None);
        assert_eq!(last_run(&free, 80), Some(PAGES_PER_SEG - 80));
        assert_eq!(last_run(&free, 1), Some(PAGES_PER_SEG - 1));
        // Free 10..110 and 150..240: the highest window that fits wins.
        let mut free = [0u64; PAGES_PER_SEG / 64];
        set(&mut free, 10, 100);
        set(&mut free, 150, 90);
        assert_eq!(last_run(&free, 90), Some(150));
        assert_eq!(last_run(&free, 91), Some(110 - 91), "the upper stretch is 90 pages");
        assert_eq!(last_run(&free, 100), Some(10));
        assert_eq!(last_run(&free, 101), None);
        assert_eq!(last_run(&free, 65), Some(240 - 65));
        // Through the segment's run state: long runs last fit, short ones first fit.
        let mem = crate::os::map_rw(SEG_SIZE);
        assert!(!mem.is_null());
        // SAFETY: `mem` is a fresh read/write mapping of a whole segment.
        let hdr = unsafe { SegHdr::of(mem as usize) };
        // SAFETY: the mapping is this test's alone.
        unsafe { hdr.init_runs(0, true) };
        // SAFETY: as above.
        let h = unsafe { hdr.runs() };
        assert_eq!(h.find_run_aligned(80, 1), Some(PAGES_PER_SEG - 80));
        assert_eq!(h.find_run_aligned(64, 1), Some(HDR_PAGES));
        h.mark(HDR_PAGES, USABLE_PAGES, true);
        h.mark(20, 100, false);
        h.mark_dirty(20, 90, true);
        assert_eq!(h.find_warm_run(80, 1), Some(30));
        assert_eq!(h.find_warm_run(91, 1), None, "clean pages do not count as warm");
        assert_eq!(h.find_run_aligned(91, 1), Some(29));
        // SAFETY: the mapping was made above and is no longer used.
        unsafe { crate::os::unmap(mem, SEG_SIZE) };
    }
}
