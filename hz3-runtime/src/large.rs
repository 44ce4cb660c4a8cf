//! Large blocks (above 1016 KiB, the biggest size class, or aligned beyond
//! what the classes' runs give) and direct mappings.
//!
//! Owns: large blocks as runs of whole arena slots (header in the first page of
//! the first slot, data from page 1 or the requested alignment), their in-place
//! growth and shrinking (a block shrunk below half its run gives its
//! trailing slots back), the
//! bounded cache of freed-but-unpurged large slots (delayed purging), and the
//! registry of direct `mmap` blocks (huge requests, alignments above half a
//! segment, and anything the arena cannot hold). A large block holds at most
//! one slot more than its bytes need (under 25% above 4 MiB; the pages past
//! the request are never touched unless the run was reused dirty, and the
//! cap on freed slots bounds those). Must
//! never: keep more freed large slots resident than `dirty_cap` allows when
//! purging is on (more than `LARGE_CACHE_SLOTS` for longer than the purge
//! delay, give or take the next allocator activity), or look at memory it does
//! not own to decide whether a pointer is ours.

use core::sync::atomic::Ordering;

use crate::arena::{SEG_SHIFT, SEG_SIZE, SLOT_HEAD};
use crate::os::{self, PAGE_SHIFT, PAGE_SIZE};
use crate::segment::{self, SegHdr, KIND_LARGE, SEG_MAGIC};
use crate::size_class::LARGE_BIN;
use crate::sync::{SpinGuard, SpinLock, SpinMutex};
use crate::{tagmap, Config, Ptag, State};

/// Freed large slots kept resident for reuse (8 MiB) however long they stay free.
pub const LARGE_CACHE_SLOTS: usize = 8;
/// Freed large slots kept resident at most (128 MiB): above `LARGE_CACHE_SLOTS`
/// a freed run is purged `arena::PURGE_DELAY_MS` after its free (at the next
/// large operation, refill or thread exit), or at once beyond the cap
/// `dirty_cap` gives (two thirds of the large footprint, between
/// `LARGE_DIRTY_MIN` and this), so a burst of frees followed by allocations
/// reuses warm memory instead of faulting it in again, and freed large
/// slots kept resident never outnumber twice the slots of the live large
/// blocks (or the minimum).
pub const LARGE_DIRTY_CAP: usize = 128;
/// The cap on freed large slots kept resident is never below this (32 MiB).
pub const LARGE_DIRTY_MIN: usize = 32;
const _: () = assert!(LARGE_CACHE_SLOTS < LARGE_DIRTY_MIN && LARGE_DIRTY_MIN <= LARGE_DIRTY_CAP);
// Dirty runs never outnumber the purge queue, so it never purges early.
const _: () = assert!(LARGE_DIRTY_CAP < crate::arena::PURGE_QUEUE);
/// Requests of at least this share of the arena (1/16) are mapped directly.
const ARENA_SHARE_SHIFT: u32 = 4;

/// Data offset of a large block with alignment `align` (`None`: needs a direct map).
#[inline]
fn data_offset(align: usize) -> Option<usize> {
    if align <= PAGE_SIZE {
        Some(PAGE_SIZE)
    } else if align <= SEG_SIZE / 2 {
        Some(align)
    } else {
        None
    }
}

/// Allocate a large block in the arena, falling back to a direct mapping.
/// Null when out of memory.
///
/// # Safety
/// The state is initialised; `align` is a power of two.
pub unsafe fn alloc<C: Config>(st: &State<C>, size: usize, align: usize, zero: bool) -> *mut u8 {
    crate::remote::collect_long::<C>(st);
    let arena_len = st.arena.len.load(Ordering::Relaxed);
    if let Some(off) = data_offset(align) {
        if size < arena_len >> ARENA_SHARE_SHIFT {
            let n = (off + size + SEG_SIZE - 1) >> SEG_SHIFT;
            let advice = if zero { crate::arena::HugeAdvice::Never } else { crate::arena::HugeAdvice::Large };
            if let Some((slot, clean)) = st.arena.alloc_slots(n, st.arena.runs_reserve(), advice) {
                let seg = st.arena.slot_addr(slot) as usize;
                // SAFETY: the slots were just claimed (committed, ours alone
                // until the magic below is published).
                let hdr = unsafe { SegHdr::of(seg) };
                // Relaxed: published by the release store of the magic below.
                hdr.kind.store(KIND_LARGE, Ordering::Relaxed);
                hdr.owner.store(0, Ordering::Relaxed);
                hdr.large_slots.store(n as u32, Ordering::Relaxed);
                hdr.large_off.store(off as u32, Ordering::Relaxed);
                hdr.large_live.store(1, Ordering::Relaxed);
                let pi = off >> PAGE_SHIFT;
                if C::S110_META {
                    for m in hdr.meta.iter() {
                        m.store(0, Ordering::Relaxed);
                    }
                    hdr.meta[pi].store(LARGE_BIN as u16 + 1, Ordering::Release);
                }
                if C::PTAG != Ptag::Off {
                    let base = st.arena.base.load(Ordering::Relaxed);
                    // SAFETY: the page id of a page of an arena slot is below
                    // the tag array's page count.
                    unsafe { tagmap::store(st.arena.tag_array(), segment::page_id(base, seg, pi) as usize, tagmap::LARGE) };
                }
                // Release: a reader that sees the magic sees the fields above.
                hdr.magic.store(SEG_MAGIC, Ordering::Release);
                st.arena.large_live.fetch_add(n, Ordering::Relaxed);
                let p = (seg + off) as *mut u8;
                if zero && !clean {
                    // Give the old pages back instead of clearing them: the
                    // block then reads as zero, only the pages the program
                    // touches come back (resident), and nothing is written.
                    // SAFETY: `[p, end of the run)` lies in the slots just
                    // claimed, which hold no live data.
                    unsafe { os::purge(p, (n << SEG_SHIFT) - off) };
                }
                return p;
            }
        }
    }
    // SAFETY: `align` is a power of two (contract).
    unsafe { huge_alloc(st, size, align) }
}

/// Usable bytes of the live large block at `p`.
///
/// # Safety
/// `p` is a live large block of this arena.
pub unsafe fn usable(p: usize) -> usize {
    let hdr = SegHdr::ptr(segment::seg_base(p));
    // SAFETY: a live large block's header is committed; its slot count and
    // offset change only through the block's holder (the caller).
    let (slots, off) = unsafe { ((*hdr).large_slots.load(Ordering::Relaxed) as usize, (*hdr).large_off.load(Ordering::Relaxed) as usize) };
    (slots << SEG_SHIFT) - off
}

/// Whether `p` is the data pointer of a live large block (failfast check).
///
/// # Safety
/// `p` lies in a committed slot of the arena.
pub unsafe fn is_live_block<C: Config>(st: &State<C>, p: usize) -> bool {
    let seg = segment::seg_base(p);
    // SAFETY: `p` lies in a slot of the arena (contract): its slot index is
    // below `slot_count()`.
    if unsafe { st.arena.slot_state(st.arena.slot_of(seg)) } != SLOT_HEAD {
        return false;
    }
    let hdr = SegHdr::ptr(seg);
    // SAFETY: a slot in state HEAD is committed, so its header is readable;
    // read field by field in place (no reference to a header others write).
    unsafe {
        (*hdr).magic.load(Ordering::Relaxed) == SEG_MAGIC
            && (*hdr).kind.load(Ordering::Relaxed) == KIND_LARGE
            && seg + (*hdr).large_off.load(Ordering::Relaxed) as usize == p
    }
}

/// Free the large block at `p`. Returns false (and does nothing) when `p` is
/// not the block's data start (an interior pointer: freeing the block through
/// it would free memory the program still uses) or on a double free detected
/// by the live flag.
///
/// # Safety
/// `p` lies in the first slot of a large block of this arena (the free route
/// found a large header there).
pub unsafe fn free<C: Config>(st: &State<C>, p: usize) -> bool {
    let seg = segment::seg_base(p);
    // SAFETY: the first slot of a large block is committed (contract); the
    // live flag swap below makes this free the header's only writer.
    let hdr = unsafe { SegHdr::of(seg) };
    if seg + hdr.large_off.load(Ordering::Relaxed) as usize != p || hdr.large_live.swap(0, Ordering::AcqRel) == 0 {
        return false;
    }
    let pi = hdr.large_off.load(Ordering::Relaxed) as usize >> PAGE_SHIFT;
    if C::S110_META {
        hdr.meta[pi].store(0, Ordering::Release);
    }
    let base = st.arena.base.load(Ordering::Relaxed);
    if C::PTAG != Ptag::Off {
        // SAFETY: the page id of a page of an arena slot is below the tag
        // array's page count.
        unsafe { tagmap::store(st.arena.tag_array(), segment::page_id(base, seg, pi) as usize, 0) };
    }
    let n = hdr.large_slots.load(Ordering::Relaxed) as usize;
    // Relaxed: the slots go back to the arena under its lock (a release);
    // this only makes stray pointers into them fail the magic check.
    hdr.magic.store(0, Ordering::Relaxed);
    let first = segment::slot_index(base, seg);
    // SAFETY: slots `first..first + n` are this block's, now free (the live
    // flag was ours to clear).
    unsafe { give_slots(st, first, n) };
    true
}

/// Return the slots `[first, first + n)` of a large block (all of it, or its
/// end after a shrink) to the arena: kept resident under the dirty cap when
/// purging is on.
///
/// # Safety
/// The slots are a large block's run, or its trailing part, holding no live
/// data and no longer counted in the block.
unsafe fn give_slots<C: Config>(st: &State<C>, first: usize, n: usize) {
    st.arena.large_live.fetch_sub(n, Ordering::Relaxed);
    if C::PURGE {
        // SAFETY: the caller hands over slots of ours with no live data.
        unsafe { st.arena.free_slots_delayed(first, n, LARGE_CACHE_SLOTS, dirty_cap(st), os::now_ms()) };
    } else {
        // SAFETY: as above.
        unsafe { st.arena.free_slots(first, n, usize::MAX) };
    }
}

/// Freed large slots kept resident at most now: two thirds of the slots
/// that live large blocks and freed resident slots take (so at most twice
/// the live ones; half of them cost large_mixed most of its speed in page
/// faults), between
/// `LARGE_DIRTY_MIN` and `LARGE_DIRTY_CAP` (relaxed reads: a stale count
/// moves the cap by a few slots).
fn dirty_cap<C: Config>(st: &State<C>) -> usize {
    let footprint = st.arena.large_live.load(Ordering::Relaxed) + st.arena.dirty_slots();
    (footprint * 2 / 3).clamp(LARGE_DIRTY_MIN, LARGE_DIRTY_CAP)
}

/// Purge the freed large runs that are due (free for the purge delay, above
/// the kept floor); cheap when none is (no lock, one clock read only when
/// runs are queued). Called from allocation slow paths.
pub fn purge_tick<C: Config>(st: &State<C>) {
    if C::PURGE && st.arena.dirty_slots() > LARGE_CACHE_SLOTS {
        let now = os::now_ms();
        if st.arena.purge_pending(LARGE_CACHE_SLOTS, now) {
            st.arena.purge_queued(LARGE_CACHE_SLOTS, now, false);
        }
    }
}

/// At thread exit: purge freed large runs above the kept floor without
/// waiting (an exiting thread's blocks are not coming back to it).
pub fn purge_at_exit<C: Config>(st: &State<C>) {
    if C::PURGE && st.arena.dirty_slots() > LARGE_CACHE_SLOTS {
        st.arena.purge_queued(LARGE_CACHE_SLOTS, os::now_ms(), true);
    }
}

/// Resize the large block at `p` in place to `new_size` when it fits its slots
/// or the following slots are free. Returns whether it did.
///
/// # Safety
/// `p` is a live large block of this arena.
pub unsafe fn resize_in_place<C: Config>(st: &State<C>, p: usize, new_size: usize) -> bool {
    let seg = segment::seg_base(p);
    let hdr = SegHdr::ptr(seg);
    // SAFETY: a live large block's header is committed; its slot count and
    // offset change only through the block's holder (the caller).
    let (n, off) = unsafe { ((*hdr).large_slots.load(Ordering::Relaxed) as usize, (*hdr).large_off.load(Ordering::Relaxed) as usize) };
    let need = (off + new_size + SEG_SIZE - 1) >> SEG_SHIFT;
    if need <= n {
        if need * 2 > n {
            // Shrinking to more than half of the run keeps it (room to grow
            // back in place; measured +12% on large_mixed).
            return true;
        }
        if need < n {
            // Shrinking below half: the slots past the new size go back to
            // the arena.
            // SAFETY: the header is committed and its slot count is written
            // only by the block's holder, the caller.
            unsafe { (*hdr).large_slots.store(need as u32, Ordering::Relaxed) };
            let base = st.arena.base.load(Ordering::Relaxed);
            // SAFETY: slots `need..n` of the caller's block hold nothing the
            // block keeps (its data ends within the first `need`), and are no
            // longer counted in it.
            unsafe { give_slots(st, segment::slot_index(base, seg) + need, n - need) };
        }
        return true;
    }
    // SAFETY: `seg` is the first slot of the caller's live large block of
    // `n` slots.
    unsafe { grow_in_place(st, seg, n, need) }
}

/// Grow the large block whose first slot is at `seg` from `n` to `need`
/// slots when the following slots are free (leaving the segments' reserve).
///
/// # Safety
/// `seg` is the first slot of a live large block of `n` slots, held by the
/// caller.
#[cold]
#[inline(never)]
unsafe fn grow_in_place<C: Config>(st: &State<C>, seg: usize, n: usize, need: usize) -> bool {
    let base = st.arena.base.load(Ordering::Relaxed);
    if st.arena.extend_slots(segment::slot_index(base, seg), n, need, st.arena.runs_reserve()).is_some() {
        st.arena.large_live.fetch_add(need - n, Ordering::Relaxed);
        // SAFETY: the header is committed and its slot count is written only
        // by the block's holder, the caller.
        unsafe { (*SegHdr::ptr(seg)).large_slots.store(need as u32, Ordering::Relaxed) };
        return true;
    }
    false
}

/// One direct mapping.
#[derive(Clone, Copy)]
struct HugeEntry {
    /// User pointer (0 = empty, 1 = deleted).
    user: usize,
    /// Mapping start.
    map: usize,
    /// Mapping length.
    len: usize,
}

/// The registry of direct mappings: its table is reachable only through the
/// guard of the lock that protects it.
pub struct HugeRegistry {
    table: SpinMutex<HugeTable>,
}

impl HugeRegistry {
    /// Empty registry.
    pub const fn new() -> Self {
        HugeRegistry { table: SpinMutex::new(HugeTable { ptr: core::ptr::null_mut(), cap: 0, used: 0 }) }
    }

    /// Take the lock; the table is reachable through the guard.
    #[inline]
    fn lock(&self) -> SpinGuard<'_, HugeTable> {
        self.table.lock()
    }

    /// The bare lock, for the `fork()` handlers only (see [`SpinMutex::raw_lock`]).
    pub fn raw_lock(&self) -> &SpinLock {
        self.table.raw_lock()
    }
}

/// Open-addressing table of direct mappings, itself in a direct mapping.
pub struct HugeTable {
    /// `cap` entries (null when `cap` is 0).
    ptr: *mut HugeEntry,
    /// Entries (0 or a power of two).
    cap: usize,
    /// Entries not empty (live or deleted).
    used: usize,
}

// SAFETY: the table's memory is a private mapping it owns alone, not tied to
// the thread that made it.
unsafe impl Send for HugeTable {}

impl HugeTable {
    fn slots(&mut self) -> &mut [HugeEntry] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: `ptr` maps `cap` entries, owned by the table, which `&mut
        // self` borrows alone.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }

    fn find(&mut self, user: usize) -> Option<usize> {
        let t = self.slots();
        if t.is_empty() {
            return None;
        }
        let mask = t.len() - 1;
        let mut i = (user >> PAGE_SHIFT).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7 & mask;
        loop {
            match t[i].user {
                0 => return None,
                u if u == user => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Insert, growing the table first when it is half full. False on no memory.
    fn insert(&mut self, e: HugeEntry) -> bool {
        if (self.used + 1) * 2 > self.cap && !self.grow() {
            return false;
        }
        let t = self.slots();
        let mask = t.len() - 1;
        let mut i = (e.user >> PAGE_SHIFT).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7 & mask;
        while t[i].user > 1 {
            i = (i + 1) & mask;
        }
        let fresh = t[i].user == 0;
        t[i] = e;
        if fresh {
            self.used += 1;
        }
        true
    }

    fn grow(&mut self) -> bool {
        let old_cap = self.cap;
        // Capacity stays a power of two: probing masks with `cap - 1`.
        let new_cap = (old_cap * 2).max(128);
        let bytes = new_cap * core::mem::size_of::<HugeEntry>();
        let t = os::map_rw(bytes);
        if t.is_null() {
            return false;
        }
        let old_table = self.ptr;
        let old: &[HugeEntry] = if old_cap == 0 {
            &[]
        } else {
            // SAFETY: the old table maps `old_cap` entries; it is ours alone
            // (`&mut self`) until it is unmapped below.
            unsafe { core::slice::from_raw_parts(old_table as *const HugeEntry, old_cap) }
        };
        self.ptr = t as *mut HugeEntry;
        self.cap = new_cap;
        self.used = 0;
        for e in old.iter().filter(|e| e.user > 1) {
            self.insert(*e);
        }
        if old_cap != 0 {
            // SAFETY: the old table is no longer referenced.
            unsafe { os::unmap(old_table as *mut u8, old_cap * core::mem::size_of::<HugeEntry>()) };
        }
        true
    }
}

/// Map a block directly (page-aligned, or `align`-aligned inside a larger map).
///
/// # Safety
/// `align` is a power of two.
pub unsafe fn huge_alloc<C: Config>(st: &State<C>, size: usize, align: usize) -> *mut u8 {
    if st.arena.len.load(Ordering::Relaxed) == 0 {
        st.retry_arena();
    }
    let extra = if align > PAGE_SIZE { align } else { 0 };
    let len = match size.checked_add(extra + PAGE_SIZE - 1) {
        Some(l) => l & !(PAGE_SIZE - 1),
        None => return core::ptr::null_mut(),
    };
    let map = os::map_rw(len);
    if map.is_null() {
        return map;
    }
    let user = (map as usize + align - 1) & !(align - 1);
    let ok = st.huge.lock().insert(HugeEntry { user, map: map as usize, len });
    if !ok {
        // SAFETY: the mapping was made above, of `len` bytes, and is unused.
        unsafe { os::unmap(map, len) };
        return core::ptr::null_mut();
    }
    user as *mut u8
}

/// Usable size of a direct-mapped block, or `None` when `p` is not one.
pub fn huge_usable<C: Config>(st: &State<C>, p: usize) -> Option<usize> {
    let mut t = st.huge.lock();
    t.find(p).map(|i| {
        let e = t.slots()[i];
        e.map + e.len - e.user
    })
}

/// Unmap a direct-mapped block; false when `p` is not one.
pub fn huge_free<C: Config>(st: &State<C>, p: usize) -> bool {
    let e = {
        let mut t = st.huge.lock();
        t.find(p).map(|i| {
            let s = t.slots();
            let e = s[i];
            s[i].user = 1;
            e
        })
    };
    match e {
        Some(e) => {
            // SAFETY: the entry described a mapping of ours that is now unused.
            unsafe { os::unmap(e.map as *mut u8, e.len) };
            true
        }
        None => false,
    }
}
