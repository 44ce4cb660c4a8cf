//! The arena: one segment-aligned reservation holding every segment.
//!
//! Owns: the reservation (reserved `PROT_NONE`, committed a segment at a time),
//! the per-slot state table with its free count and used-slot bitmap (an
//! exhausted arena answers at once, a single slot is found without a scan),
//! contiguous slot runs for segments and large blocks (which leave a reserve
//! of slots to segments),
//! the purge queue of freed dirty runs (delayed purging), and the tag map that
//! sits right below the arena in the same reservation (so the hot path reaches
//! it from the arena base alone). Must never: hand out a slot twice, or touch
//! slot memory outside the arena lock except through the segment that owns it.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::os::{self, PAGE_SHIFT};
use crate::sync::SpinMutex;

/// 1 MiB segments.
pub const SEG_SHIFT: usize = 20;
/// Segment size.
pub const SEG_SIZE: usize = 1 << SEG_SHIFT;
/// Pages per segment.
pub const PAGES_PER_SEG: usize = SEG_SIZE >> PAGE_SHIFT;
/// Base value before the arena exists: `p - NO_ARENA` is never below the arena length.
pub const NO_ARENA: usize = 1 << 63;
/// Smallest arena we accept when the address space is limited.
const MIN_ARENA: usize = 64 << 20;
/// Slots per 2 MiB granule, the size of a transparent huge page: the arena
/// starts on a granule boundary and commits whole granules, so a granule can
/// be backed by one huge page.
pub const GRANULE_SLOTS: usize = 2;
/// A fresh granule committed for a segment may get the huge-page advice
/// (`os::advise_huge`: one fault brings in 2 MiB instead of 4 KiB) only once
/// this many slots (MiB) of the arena are in use: a small program keeps 4 KiB
/// pages, where a huge page's untouched rest would be a large share of its
/// memory (measured with 8: four threads of small blocks, 25-30 MiB in all,
/// grew their peak RSS by 10%). See [`Arena::alloc_segment`] for the rest of
/// the rule.
pub const HUGE_AFTER_SLOTS: usize = 32;
/// Pages of the granule below that must be resident (of 512) for a fresh
/// granule to get the advice: a huge page makes all of its 2 MiB resident at
/// the first touch, which costs nothing only where the program touches
/// (nearly) every page anyway. Measured: with the advice on every granule,
/// 30,000 small blocks aligned to 8-64 KiB (each in a block of its alignment,
/// touched once) took 933 MiB instead of 150.
pub const HUGE_DENSE_PAGES: usize = 448;
/// Every this many granules one is left to 4 KiB pages even after a dense
/// one, so that its density can be measured again (a granule backed by a
/// huge page reads as wholly resident).
pub const HUGE_PROBE_EVERY: usize = 8;

/// Which fresh granules committed for a request may get the huge-page advice.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugeAdvice {
    /// Never: zeroed large blocks, often touched in a few places only (a
    /// `calloc`'d buffer), where a huge page would make untouched memory
    /// resident.
    Never,
    /// Once `HUGE_AFTER_SLOTS` slots are in use: a large block allocated
    /// without zeroing, which the program fills (it holds garbage until
    /// written). A huge page makes at most the last 2 MiB touched of such a
    /// block resident beyond what the program wrote, and the bound keeps a
    /// small program on 4 KiB pages (measured: a word count whose hash
    /// tables are large blocks grew its peak RSS from 21 to 25 MiB without it).
    Large,
    /// Once `HUGE_AFTER_SLOTS` slots are in use, if the granule below was
    /// measured densely resident (`HUGE_DENSE_PAGES`, `HUGE_PROBE_EVERY`): a
    /// segment for a run of blocks larger than a page (such a block may be
    /// written in one page of many), or for a shard still small.
    IfDenseBelow,
    /// Always: a segment for a run of blocks of at most a page that go out
    /// through the thread caches' lists, asked for by a shard that already
    /// holds `shard::HUGE_SHARD_SEGMENTS` segments. Each such block is
    /// written where it starts (its link) before the program gets it, and a
    /// block of at most a page starts in every page of its run (or in one of
    /// the two of a sub-4 KiB class's run), so these runs are touched nearly
    /// everywhere and no measure is needed; and a heap of small blocks past
    /// that size is one whose random reads miss the 4 KiB-page
    /// address-translation cache (about 6 MiB of reach here).
    Dense,
}

/// Dirty slots remembered for reuse.
const RECENT_DIRTY: usize = 256;

/// Freed dirty runs above the kept floor are purged this long after their free.
pub const PURGE_DELAY_MS: u64 = 50;
/// Entries of the purge queue (a full queue first drops entries of reused
/// slots; it purges its oldest entry only when more runs than this are dirty).
pub const PURGE_QUEUE: usize = 256;

/// One freed dirty run in the purge queue; `at` is the free time, also stamped
/// on each of its slots (a slot re-freed later carries a newer stamp, so an old
/// entry never purges it early).
#[derive(Clone, Copy)]
struct Freed {
    first: u32,
    n: u32,
    at: u64,
}

/// The purge queue: a ring of freed runs, oldest at `head` (under the lock).
struct PurgeQueue {
    runs: [Freed; PURGE_QUEUE],
    head: usize,
    len: usize,
}

/// Slot never committed (no access).
pub const SLOT_RESERVED: u8 = 0;
/// Slot committed and free; its memory reads as zero (fresh or purged).
pub const SLOT_CLEAN: u8 = 1;
/// Slot committed and free; its memory may hold old data.
pub const SLOT_DIRTY: u8 = 2;
/// Slot in use as a segment (small/medium) or the first slot of a large block.
pub const SLOT_HEAD: u8 = 3;
/// Slot in use as a continuation of a large block.
pub const SLOT_TAIL: u8 = 4;

/// The arena of one generated type.
pub struct Arena {
    /// First byte of the arena (segment-aligned); `NO_ARENA` until initialised.
    pub base: AtomicUsize,
    /// Bytes in the arena (0 until initialised).
    pub len: AtomicUsize,
    /// Tag map: one `AtomicU32` per arena page.
    pub tags: AtomicUsize,
    /// One state byte per slot, then the free stamps, the used-slot bitmap
    /// and its summary (`slot_table_bytes`).
    slots: AtomicUsize,
    /// Free slots (state below `SLOT_HEAD`): a request for more than are
    /// free fails at once, without the lock.
    free_n: AtomicUsize,
    /// Smallest run of slots a search found no room for since the last free
    /// (`usize::MAX`: none): a repeated request that cannot succeed fails at
    /// once instead of scanning the arena again.
    no_run_of: AtomicUsize,
    /// Free slots in the `SLOT_DIRTY` state.
    dirty: AtomicUsize,
    /// Entries in `recent_dirty`.
    recent_len: AtomicUsize,
    /// Free time of the oldest queued run (valid while `queued` is non-zero):
    /// lets threads check for due purges without the lock.
    oldest_at: AtomicU64,
    /// Entries in the purge queue.
    queued: AtomicUsize,
    /// Slots held by live large blocks (kept by `large`; sizes the cap on
    /// freed large slots kept resident).
    pub large_live: AtomicUsize,
    /// Serialises slot-table changes; holds the lists only its holder reaches.
    pub lock: SpinMutex<ArenaLocked>,
}

/// What the arena lock protects besides the slot table's atomics (whose
/// writers it serialises): reachable only through the lock's guard.
pub struct ArenaLocked {
    /// Recently freed dirty slots, most recent last: a single-slot
    /// allocation reuses warm memory instead of the lowest slot.
    recent_dirty: [u32; RECENT_DIRTY],
    /// Freed dirty runs in free order (delayed purging).
    queue: PurgeQueue,
}

impl Arena {
    /// An arena with nothing reserved.
    pub const fn new() -> Self {
        Arena {
            base: AtomicUsize::new(NO_ARENA),
            len: AtomicUsize::new(0),
            tags: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            free_n: AtomicUsize::new(0),
            no_run_of: AtomicUsize::new(usize::MAX),
            dirty: AtomicUsize::new(0),
            recent_len: AtomicUsize::new(0),
            oldest_at: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            large_live: AtomicUsize::new(0),
            lock: SpinMutex::new(ArenaLocked {
                recent_dirty: [0; RECENT_DIRTY],
                queue: PurgeQueue { runs: [Freed { first: 0, n: 0, at: 0 }; PURGE_QUEUE], head: 0, len: 0 },
            }),
        }
    }

    /// Reserve the arena (at most `want` bytes; halved until the OS agrees, down to
    /// 64 MiB). Returns false when no arena could be had, or when the OS pages
    /// are not [`os::PAGE_SIZE`] bytes (everything then goes to direct
    /// mappings). Called at initialisation, before any other thread can
    /// see the arena, or later (`State::retry_arena`) under the arena lock.
    pub fn init(&self, want: usize) -> bool {
        if !os::page_size_is_ours() {
            return false;
        }
        let mut len = want.max(MIN_ARENA) & !(SEG_SIZE - 1);
        while len >= MIN_ARENA {
            if self.try_init(len) {
                return true;
            }
            len /= 2;
        }
        false
    }

    fn try_init(&self, len: usize) -> bool {
        let pages = len >> PAGE_SHIFT;
        let tag_bytes = (pages * 4 + SEG_SIZE - 1) & !(SEG_SIZE - 1);
        let granule = GRANULE_SLOTS << SEG_SHIFT;
        let total = tag_bytes + len + granule;
        let raw = os::reserve(total);
        if raw.is_null() {
            return false;
        }
        let slots = os::map_rw(slot_table_bytes(len >> SEG_SHIFT));
        if slots.is_null() {
            // SAFETY: `raw` is the reservation just made, of `total` bytes, unused.
            unsafe { os::unmap(raw, total) };
            return false;
        }
        // Arena start: granule-aligned (so is every segment pair), with the tag
        // map right below it.
        let base = ((raw as usize + tag_bytes + granule - 1) & !(granule - 1)) as *mut u8;
        let tags = base.wrapping_sub(tag_bytes);
        // SAFETY: [tags, base) lies inside the reservation (base - tag_bytes >= raw).
        if unsafe { !os::commit(tags, tag_bytes) } {
            // SAFETY: both mappings were made above and hold nothing.
            unsafe {
                os::unmap(raw, total);
                os::unmap(slots, slot_table_bytes(len >> SEG_SHIFT));
            }
            return false;
        }
        self.slots.store(slots as usize, Ordering::Relaxed);
        self.tags.store(tags as usize, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.free_n.store(len >> SEG_SHIFT, Ordering::Relaxed);
        // Release: a thread that sees the base sees the tag map and slot table.
        self.base.store(base as usize, Ordering::Release);
        true
    }

    /// Free-time stamp of slot `i` (written under the lock when it turns dirty).
    fn stamp(&self, i: usize) -> &AtomicU64 {
        let states = self.slots.load(Ordering::Relaxed);
        // SAFETY: the stamps follow the state bytes in the slot table mapping
        // (`slot_table_bytes`), 8-aligned, one per slot; `i < slot_count()`.
        unsafe { &*((states + stamps_offset(self.slot_count())) as *const AtomicU64).add(i) }
    }

    /// Free slots whose memory is still resident (not purged).
    #[inline]
    pub fn dirty_slots(&self) -> usize {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Number of slots.
    #[inline]
    pub fn slot_count(&self) -> usize {
        self.len.load(Ordering::Relaxed) >> SEG_SHIFT
    }

    /// Address of slot `i`.
    #[inline]
    pub fn slot_addr(&self, i: usize) -> *mut u8 {
        (self.base.load(Ordering::Relaxed) + (i << SEG_SHIFT)) as *mut u8
    }

    /// Slot index of an address inside the arena.
    #[inline]
    pub fn slot_of(&self, p: usize) -> usize {
        (p - self.base.load(Ordering::Relaxed)) >> SEG_SHIFT
    }

    /// The tag array.
    #[inline(always)]
    pub fn tag_array(&self) -> *const AtomicU32 {
        self.tags.load(Ordering::Relaxed) as *const AtomicU32
    }

    /// State byte of slot `i` (relaxed read; exact only under the lock).
    ///
    /// # Safety
    /// `i < slot_count()` on an initialised arena: the free route derives
    /// `i` from an address it checked is in the arena (it calls this per
    /// free, so there is no check here; debug builds assert it).
    #[inline]
    pub unsafe fn slot_state(&self, i: usize) -> u8 {
        debug_assert!(i < self.slot_count(), "slot index beyond the arena");
        // SAFETY: `i < slot_count()` (contract); the table has one byte per
        // slot.
        unsafe { (*(self.slots.load(Ordering::Relaxed) as *const AtomicU8).add(i)).load(Ordering::Acquire) }
    }

    /// [`Self::slot_state`] for any index: a slot past the arena's end (or
    /// any slot before the arena exists) reads as `SLOT_TAIL`, in use and no
    /// block's head, so no search takes it and no free trusts it.
    #[inline]
    pub fn slot_state_checked(&self, i: usize) -> u8 {
        if i < self.slot_count() {
            // SAFETY: just checked; `slot_count()` is 0 until the arena and
            // its state table exist.
            unsafe { self.slot_state(i) }
        } else {
            SLOT_TAIL
        }
    }

    /// Under the lock: set slot `i`'s state, keeping the free count and the
    /// used-slot bitmap (a bit per slot, set = used) and its summary (a bit
    /// per bitmap word, set = every slot of the word used) in step.
    fn set_state(&self, i: usize, s: u8) {
        let was_free = self.slot_state_checked(i) < SLOT_HEAD;
        // SAFETY: as in `slot_state`; the arena lock is held by the caller.
        unsafe { (*(self.slots.load(Ordering::Relaxed) as *const AtomicU8).add(i)).store(s, Ordering::Release) }
        let free = s < SLOT_HEAD;
        if free == was_free {
            return;
        }
        if free {
            self.free_n.fetch_add(1, Ordering::Relaxed);
            // Room may exist again for any run length.
            self.no_run_of.store(usize::MAX, Ordering::Relaxed);
        } else {
            self.free_n.fetch_sub(1, Ordering::Relaxed);
        }
        let count = self.slot_count();
        let (used, summary) = (self.used_map(count), self.used_summary(count));
        let bit = 1u64 << (i % 64);
        let w = if free { used[i / 64].fetch_and(!bit, Ordering::Relaxed) & !bit } else { used[i / 64].fetch_or(bit, Ordering::Relaxed) | bit };
        let sbit = 1u64 << ((i / 64) % 64);
        if w == !0 {
            summary[i / 4096].fetch_or(sbit, Ordering::Relaxed);
        } else {
            summary[i / 4096].fetch_and(!sbit, Ordering::Relaxed);
        }
    }

    /// The used-slot bitmap (one bit per slot, set = used).
    fn used_map(&self, count: usize) -> &[core::sync::atomic::AtomicU64] {
        let base = self.slots.load(Ordering::Relaxed) + bitmap_offset(count);
        // SAFETY: the slot table mapping holds `bitmap_words(count)` 8-aligned
        // words at this offset (`slot_table_bytes`); zero (all free) is valid.
        unsafe { core::slice::from_raw_parts(base as *const core::sync::atomic::AtomicU64, bitmap_words(count)) }
    }

    /// The bitmap's summary (one bit per bitmap word, set = word full).
    fn used_summary(&self, count: usize) -> &[core::sync::atomic::AtomicU64] {
        let base = self.slots.load(Ordering::Relaxed) + summary_offset(count);
        // SAFETY: as in `used_map`, for `summary_words(count)` words.
        unsafe { core::slice::from_raw_parts(base as *const core::sync::atomic::AtomicU64, summary_words(count)) }
    }

    /// The bitmap of granules given the huge-page advice (one bit per granule).
    fn huge_map(&self, count: usize) -> &[core::sync::atomic::AtomicU64] {
        let base = self.slots.load(Ordering::Relaxed) + huge_offset(count);
        // SAFETY: as in `used_map`, for `huge_words(count)` words.
        unsafe { core::slice::from_raw_parts(base as *const core::sync::atomic::AtomicU64, huge_words(count)) }
    }

    /// Whether granule `g` was given the huge-page advice.
    fn advised(&self, g: usize) -> bool {
        self.huge_map(self.slot_count())[g / 64].load(Ordering::Relaxed) & (1 << (g % 64)) != 0
    }

    /// Under the lock: whether the fresh granule starting at slot `g0` gets the
    /// huge-page advice: always for [`HugeAdvice::Dense`]; for
    /// [`HugeAdvice::Large`] when the arena holds `HUGE_AFTER_SLOTS` slots in
    /// use; for [`HugeAdvice::IfDenseBelow`] when the arena holds `HUGE_AFTER_SLOTS`
    /// slots in use, both slots of the granule below are in use, and that granule is densely
    /// resident (`HUGE_DENSE_PAGES`, one `mincore` call), or was advised itself
    /// (then it reads as resident whatever the program touched) and this
    /// granule is not one of the `HUGE_PROBE_EVERY` left to 4 KiB pages to be
    /// measured. A program growing over memory it touches everywhere (many
    /// small or page-sized blocks) gets huge pages; one that touches its blocks
    /// in a few places (big aligned or zeroed blocks) keeps 4 KiB pages.
    fn wants_huge(&self, g0: usize, advice: HugeAdvice) -> bool {
        match advice {
            HugeAdvice::Never => return false,
            HugeAdvice::Dense => return true,
            HugeAdvice::Large | HugeAdvice::IfDenseBelow => {}
        }
        let count = self.slot_count();
        let past_floor = count - self.free_n.load(Ordering::Relaxed) >= HUGE_AFTER_SLOTS;
        if advice == HugeAdvice::Large || !past_floor {
            return past_floor;
        }
        if g0 < GRANULE_SLOTS {
            return false;
        }
        let below = g0 - GRANULE_SLOTS;
        if (below..g0).any(|j| self.slot_state_checked(j) < SLOT_HEAD) {
            return false;
        }
        let g = g0 / GRANULE_SLOTS;
        if self.advised(g - 1) {
            return !g.is_multiple_of(HUGE_PROBE_EVERY);
        }
        // SAFETY: the granule below is committed (its slots are in use) and
        // page-aligned; `mincore` only reads the page tables.
        unsafe { os::resident_pages(self.slot_addr(below), GRANULE_SLOTS << SEG_SHIFT) >= HUGE_DENSE_PAGES }
    }

    /// Under the lock: the lowest free slot, if any. Reads one summary word
    /// per 4096 slots (16 for a 64 GiB arena) and one bitmap word.
    fn lowest_free(&self) -> Option<usize> {
        let count = self.slot_count();
        let (used, summary) = (self.used_map(count), self.used_summary(count));
        for (sw, s) in summary.iter().enumerate() {
            let s = s.load(Ordering::Relaxed);
            if s == !0 {
                continue;
            }
            let w = sw * 64 + s.trailing_ones() as usize;
            if w >= used.len() {
                return None;
            }
            let i = w * 64 + used[w].load(Ordering::Relaxed).trailing_ones() as usize;
            return if i < count { Some(i) } else { None };
        }
        None
    }

    /// Slots large blocks leave free for small and medium segments (1/64 of
    /// the arena, at least 8): a program whose large or aligned blocks fill
    /// the arena keeps its small allocations in size classes.
    pub fn runs_reserve(&self) -> usize {
        let count = self.slot_count();
        (count / 64).max(8).min(count / 4)
    }

    /// Take `n` contiguous free slots, commit them and mark them used (first as
    /// head, the rest as tails), leaving at least `leave` slots free. Returns
    /// the first index and whether every slot was clean (reads as zero), or
    /// `None` when the arena has no such run or the OS refuses to commit. An
    /// exhausted arena answers without a lock or a scan. Its wholly fresh
    /// granules may get the huge-page advice as `advice` says ([`HugeAdvice`]).
    pub fn alloc_slots(&self, n: usize, leave: usize, advice: HugeAdvice) -> Option<(usize, bool)> {
        self.alloc_run(n, leave, advice)
    }

    /// One slot for a small/medium segment (as `alloc_slots(1, 0, advice)`). A fresh
    /// granule committed for it may be advised to be backed by a huge page as
    /// `advice` says ([`HugeAdvice`]): a segment's pages are carved for runs
    /// front to back and reused warm first, so a growing program touches most
    /// of them.
    pub fn alloc_segment(&self, advice: HugeAdvice) -> Option<(usize, bool)> {
        self.alloc_run(1, 0, advice)
    }

    fn alloc_run(&self, n: usize, leave: usize, advice: HugeAdvice) -> Option<(usize, bool)> {
        let count = self.slot_count();
        if n == 0 || n > count || self.free_n.load(Ordering::Relaxed) < n + leave || n >= self.no_run_of.load(Ordering::Relaxed) {
            return None;
        }
        let held = self.lock.lock();
        if self.free_n.load(Ordering::Relaxed) < n + leave {
            drop(held);
            return None;
        }
        if n == 1 {
            let r = match self.pop_recent_dirty(&held.recent_dirty).or_else(|| self.lowest_free()) {
                Some(j) => self.claim(j, 1, advice),
                None => None,
            };
            drop(held);
            return r;
        }
        // A large run: first fit from the lowest free slot (a request that
        // finds none is remembered until a slot is freed).
        let mut i = self.lowest_free().unwrap_or(count);
        let mut found = None;
        while i + n <= count {
            let mut run = 0;
            while run < n && self.slot_state_checked(i + run) < SLOT_HEAD {
                run += 1;
            }
            if run == n {
                found = Some(i);
                break;
            }
            i += run + 1;
        }
        let result = match found {
            Some(first) => self.claim(first, n, advice),
            None => {
                if n < self.no_run_of.load(Ordering::Relaxed) {
                    self.no_run_of.store(n, Ordering::Relaxed);
                }
                None
            }
        };
        drop(held);
        result
    }

    /// Under the lock: commit and mark `[first, first+n)`; a fresh granule may
    /// get the huge-page advice as `advice` says (see `alloc_segment`).
    fn claim(&self, first: usize, n: usize, advice: HugeAdvice) -> Option<(usize, bool)> {
        let mut clean = true;
        let mut uncommitted = false;
        for j in first..first + n {
            match self.slot_state_checked(j) {
                SLOT_RESERVED => uncommitted = true,
                SLOT_DIRTY => clean = false,
                _ => {}
            }
        }
        let dirty = (first..first + n).filter(|&j| self.slot_state_checked(j) == SLOT_DIRTY).count();
        if uncommitted && !self.commit_granules(first, n, advice) {
            return None;
        }
        self.dirty.fetch_sub(dirty, Ordering::Relaxed);
        self.set_state(first, SLOT_HEAD);
        for j in first + 1..first + n {
            self.set_state(j, SLOT_TAIL);
        }
        Some((first, clean))
    }

    /// Under the lock: commit the slots `[first, first+n)`, some of them still
    /// reserved, with the rest of their granules: the other slot of a granule
    /// turns clean (committed, reads as zero), so the granule is one mapping
    /// the kernel can back with a huge page. A granule that was wholly
    /// reserved gets the huge-page advice when [`Self::wants_huge`] says so
    /// for `advice`. Falls back to the run alone when
    /// the kernel refuses the granules. Returns false when it refuses the run.
    fn commit_granules(&self, first: usize, n: usize, advice: HugeAdvice) -> bool {
        let count = self.slot_count();
        let g0 = first & !(GRANULE_SLOTS - 1);
        let g1 = (first + n).next_multiple_of(GRANULE_SLOTS).min(count);
        // SAFETY: `[g0, g1)` lies inside the arena reservation; its slots
        // outside the run are free (reserved or committed and unused: making
        // them writable again changes nothing for them).
        if unsafe { !os::commit(self.slot_addr(g0), (g1 - g0) << SEG_SHIFT) } {
            // SAFETY: the run is inside the reservation and free.
            return unsafe { os::commit(self.slot_addr(first), n << SEG_SHIFT) };
        }
        // Each wholly fresh granule of the run may get the advice (a large block's run
        // spans several).
        for g0 in (g0..g1).step_by(GRANULE_SLOTS) {
            let fresh = g0 + GRANULE_SLOTS <= g1 && (g0..g0 + GRANULE_SLOTS).all(|j| self.slot_state_checked(j) == SLOT_RESERVED);
            if fresh && self.wants_huge(g0, advice) {
                // SAFETY: as above; nothing in the granule was ever touched.
                unsafe { os::advise_huge(self.slot_addr(g0), GRANULE_SLOTS << SEG_SHIFT) };
                let g = g0 / GRANULE_SLOTS;
                self.huge_map(count)[g / 64].fetch_or(1 << (g % 64), Ordering::Relaxed);
            }
        }
        for j in (g0..first).chain(first + n..g1) {
            if self.slot_state_checked(j) == SLOT_RESERVED {
                self.set_state(j, SLOT_CLEAN);
            }
        }
        true
    }

    /// Grow the used run `[first, first+n)` to `m > n` slots in place when the
    /// following slots are free, leaving at least `leave` slots free. Returns
    /// whether every added slot was clean.
    #[inline(never)]
    pub fn extend_slots(&self, first: usize, n: usize, m: usize, leave: usize) -> Option<bool> {
        if first + m > self.slot_count() || self.free_n.load(Ordering::Relaxed) < (m - n) + leave {
            return None;
        }
        let held = self.lock.lock();
        let free = self.free_n.load(Ordering::Relaxed) >= (m - n) + leave
            && (first + n..first + m).all(|j| self.slot_state_checked(j) < SLOT_HEAD);
        let result = if free {
            let mut clean = true;
            let mut ok = true;
            for j in first + n..first + m {
                match self.slot_state_checked(j) {
                    // SAFETY: slot j is inside the arena and free.
                    SLOT_RESERVED => ok &= unsafe { os::commit(self.slot_addr(j), SEG_SIZE) },
                    SLOT_DIRTY => clean = false,
                    _ => {}
                }
            }
            if ok {
                let dirty = (first + n..first + m).filter(|&j| self.slot_state_checked(j) == SLOT_DIRTY).count();
                self.dirty.fetch_sub(dirty, Ordering::Relaxed);
                for j in first + n..first + m {
                    self.set_state(j, SLOT_TAIL);
                }
                Some(clean)
            } else {
                None
            }
        } else {
            None
        };
        drop(held);
        result
    }

    /// Return `[first, first+n)` to the free set. The run stays resident (dirty)
    /// while the arena's dirty slots stay within `dirty_limit`; beyond it the
    /// memory is given back to the OS first (the slots then read as zero). The
    /// decision is made under the lock so concurrent frees cannot overshoot.
    ///
    /// # Safety
    /// The slots must be a run handed out by `alloc_slots` holding no live data.
    pub unsafe fn free_slots(&self, first: usize, n: usize, dirty_limit: usize) {
        let mut held = self.lock.lock();
        let purge = self.dirty.load(Ordering::Relaxed) + n > dirty_limit;
        if purge {
            // SAFETY: the slots are a run of ours holding no live data
            // (contract); the batch is flushed at the end of the statement.
            unsafe { self.purge_slots(first, n, &mut os::PurgeBatch::new()) };
        } else {
            self.dirty.fetch_add(n, Ordering::Relaxed);
        }
        let s = if purge { SLOT_CLEAN } else { SLOT_DIRTY };
        for j in first..first + n {
            self.set_state(j, s);
        }
        if !purge && n == 1 {
            self.push_recent_dirty(&mut held.recent_dirty, first);
        }
        drop(held);
    }

    /// Return the large run `[first, first+n)` to the free set, resident: it is
    /// purged once it has been free for `PURGE_DELAY_MS` while more than `floor`
    /// slots are dirty, at once (oldest runs first) when dirty slots would
    /// exceed `cap`. Also purges whatever else is due at `now`.
    ///
    /// # Safety
    /// The slots must be a run handed out by `alloc_slots` holding no live data.
    pub unsafe fn free_slots_delayed(&self, first: usize, n: usize, floor: usize, cap: usize, now: u64) {
        let mut held = self.lock.lock();
        let ArenaLocked { recent_dirty, queue: q } = &mut *held;
        // What this free purges, the runs now due included, goes back in one
        // call (flushed below, under the lock).
        let mut batch = os::PurgeBatch::new();
        // A run too big to keep beside the floor goes at once; otherwise the
        // oldest runs make room for it.
        while n + floor <= cap && self.dirty.load(Ordering::Relaxed) + n > cap && q.len > 0 {
            self.purge_oldest(q, &mut batch);
        }
        if n + floor > cap || self.dirty.load(Ordering::Relaxed) + n > cap {
            // SAFETY: the caller hands over a run of ours with no live data;
            // the lock is held until the batch is flushed.
            unsafe { self.purge_slots(first, n, &mut batch) };
            for j in first..first + n {
                self.set_state(j, SLOT_CLEAN);
            }
        } else {
            if q.len == PURGE_QUEUE {
                // Entries of reused slots are dead weight: drop them. Live ones
                // number at most the dirty slots (`cap`), so room is made
                // without purging unless `cap` exceeds the queue.
                self.drop_stale(q);
                if q.len == PURGE_QUEUE {
                    self.purge_oldest(q, &mut batch);
                }
            }
            for j in first..first + n {
                self.stamp(j).store(now, Ordering::Relaxed);
                self.set_state(j, SLOT_DIRTY);
            }
            self.dirty.fetch_add(n, Ordering::Relaxed);
            q.runs[(q.head + q.len) % PURGE_QUEUE] = Freed { first: first as u32, n: n as u32, at: now };
            q.len += 1;
            self.sync_queue(q);
            if n == 1 {
                self.push_recent_dirty(recent_dirty, first);
            }
        }
        self.purge_due(q, floor, now, false, &mut batch);
        batch.flush();
        drop(held);
    }

    /// Under the lock: give back the pages of the free slots `[first,
    /// first+n)`, with the other slot of an advised granule at either end
    /// when it is free and clean: the huge page that backed the granule made
    /// that slot resident too, though it reads as zero and nothing counts it
    /// dirty (purging it changes nothing it holds).
    ///
    /// The pages go into `batch`, given back by its next flush.
    ///
    /// # Safety
    /// The slots are committed, free, and hold no live data; the lock is held
    /// until `batch` is flushed.
    unsafe fn purge_slots(&self, first: usize, n: usize, batch: &mut os::PurgeBatch) {
        let partner_clean = |j: usize| self.advised(j / GRANULE_SLOTS) && self.slot_state_checked(j) == SLOT_CLEAN;
        let lo = if !first.is_multiple_of(GRANULE_SLOTS) && partner_clean(first - 1) { first - 1 } else { first };
        let end = first + n;
        let hi = if !end.is_multiple_of(GRANULE_SLOTS) && end < self.slot_count() && partner_clean(end) { end + 1 } else { end };
        // SAFETY: `[first, end)` is the caller's free run; the slots added at
        // either end are committed (clean), free, and hold nothing; the lock
        // keeps them so until the batch is flushed (contract).
        unsafe { batch.push(self.slot_addr(lo), (hi - lo) << SEG_SHIFT) };
    }

    /// Whether a queued run may be due for purging at `now` while more than
    /// `floor` slots are dirty (lock-free hint; `purge_queued` decides).
    #[inline]
    pub fn purge_pending(&self, floor: usize, now: u64) -> bool {
        self.queued.load(Ordering::Relaxed) != 0
            && self.dirty.load(Ordering::Relaxed) > floor
            && os::ms_since(now, self.oldest_at.load(Ordering::Relaxed)) >= PURGE_DELAY_MS
    }

    /// Purge queued runs down to `floor` dirty slots: the ones free for
    /// `PURGE_DELAY_MS` at `now`, or all of them (oldest first) with `all`.
    pub fn purge_queued(&self, floor: usize, now: u64, all: bool) {
        let mut held = self.lock.lock();
        let mut batch = os::PurgeBatch::new();
        self.purge_due(&mut held.queue, floor, now, all, &mut batch);
        batch.flush();
        drop(held);
    }

    /// Under the lock: the body of `purge_queued`. The runs go into `batch`
    /// (`os::PurgeBatch`: one call for all of them), which the caller flushes
    /// before it lets go of the lock.
    fn purge_due(&self, q: &mut PurgeQueue, floor: usize, now: u64, all: bool, batch: &mut os::PurgeBatch) {
        while q.len > 0
            && self.dirty.load(Ordering::Relaxed) > floor
            && (all || os::ms_since(now, q.runs[q.head].at) >= PURGE_DELAY_MS)
        {
            self.purge_oldest(q, batch);
        }
    }

    /// Under the lock: pop the oldest queued run and purge those of its slots
    /// that are still free, dirty and stamped with its free time (the others
    /// were reused, purged, or freed again later), in contiguous stretches.
    fn purge_oldest(&self, q: &mut PurgeQueue, batch: &mut os::PurgeBatch) {
        let r = q.runs[q.head];
        q.head = (q.head + 1) % PURGE_QUEUE;
        q.len -= 1;
        self.sync_queue(q);
        let (first, end) = (r.first as usize, (r.first + r.n) as usize);
        let mut j = first;
        while j < end {
            let stale = |k: usize| self.slot_state_checked(k) != SLOT_DIRTY || self.stamp(k).load(Ordering::Relaxed) != r.at;
            if stale(j) {
                j += 1;
                continue;
            }
            let start = j;
            while j < end && !stale(j) {
                j += 1;
            }
            // SAFETY: [start, j) are free dirty slots of this arena: committed,
            // no live data, and nobody else touches them while the lock is held
            // (the caller's, over the batch's life).
            unsafe { self.purge_slots(start, j - start, batch) };
            for k in start..j {
                self.set_state(k, SLOT_CLEAN);
            }
            self.dirty.fetch_sub(j - start, Ordering::Relaxed);
        }
    }

    /// Under the lock: remove the queued runs none of whose slots is still
    /// free, dirty and stamped with the run's free time (order kept).
    fn drop_stale(&self, q: &mut PurgeQueue) {
        let live = |r: &Freed| {
            (r.first..r.first + r.n).any(|k| {
                let k = k as usize;
                self.slot_state_checked(k) == SLOT_DIRTY && self.stamp(k).load(Ordering::Relaxed) == r.at
            })
        };
        let mut kept = 0;
        for i in 0..q.len {
            let r = q.runs[(q.head + i) % PURGE_QUEUE];
            if live(&r) {
                q.runs[(q.head + kept) % PURGE_QUEUE] = r;
                kept += 1;
            }
        }
        q.len = kept;
        self.sync_queue(q);
    }

    /// Under the lock: publish the queue's length and oldest free time for
    /// `purge_pending` (relaxed: a stale hint only delays or repeats a check
    /// that is redone under the lock).
    fn sync_queue(&self, q: &PurgeQueue) {
        if q.len > 0 {
            self.oldest_at.store(q.runs[q.head].at, Ordering::Relaxed);
        }
        self.queued.store(q.len, Ordering::Relaxed);
    }

    /// Under the lock: remember dirty slot `j` (the oldest entry is dropped when full).
    fn push_recent_dirty(&self, stack: &mut [u32; RECENT_DIRTY], j: usize) {
        let mut len = self.recent_len.load(Ordering::Relaxed);
        if len == RECENT_DIRTY {
            stack.copy_within(1.., 0);
            len -= 1;
        }
        stack[len] = j as u32;
        self.recent_len.store(len + 1, Ordering::Relaxed);
    }

    /// Under the lock: the most recently freed slot that is still dirty and free.
    fn pop_recent_dirty(&self, stack: &[u32; RECENT_DIRTY]) -> Option<usize> {
        let mut len = self.recent_len.load(Ordering::Relaxed);
        let mut found = None;
        while len > 0 {
            len -= 1;
            let j = stack[len] as usize;
            if self.slot_state_checked(j) == SLOT_DIRTY {
                found = Some(j);
                break;
            }
        }
        self.recent_len.store(len, Ordering::Relaxed);
        found
    }
}

/// Offset of the stamp array in the slot table mapping (after the state bytes, 8-aligned).
fn stamps_offset(slot_count: usize) -> usize {
    (slot_count + 7) & !7
}

/// Offset of the used-slot bitmap (after the `u64` stamps, 8-aligned).
fn bitmap_offset(slot_count: usize) -> usize {
    stamps_offset(slot_count) + slot_count * 8
}

/// Words of the used-slot bitmap.
fn bitmap_words(slot_count: usize) -> usize {
    slot_count.div_ceil(64)
}

/// Offset of the bitmap's summary (after the bitmap).
fn summary_offset(slot_count: usize) -> usize {
    bitmap_offset(slot_count) + bitmap_words(slot_count) * 8
}

/// Words of the bitmap's summary.
fn summary_words(slot_count: usize) -> usize {
    bitmap_words(slot_count).div_ceil(64)
}

/// Offset of the bitmap of advised granules (after the summary).
fn huge_offset(slot_count: usize) -> usize {
    summary_offset(slot_count) + summary_words(slot_count) * 8
}

/// Words of the bitmap of advised granules.
fn huge_words(slot_count: usize) -> usize {
    slot_count.div_ceil(GRANULE_SLOTS).div_ceil(64)
}

/// Bytes of the slot table mapping: a state byte, a `u64` free stamp and a
/// used bit per slot, the bitmap's summary, and a bit per granule.
fn slot_table_bytes(slot_count: usize) -> usize {
    huge_offset(slot_count) + huge_words(slot_count) * 8
}


#[cfg(test)]
mod tests {
    use super::*;

    /// A run freed more than 2^31 ms (24.8 days) before the next clock reading
    /// is due for purging (a 32-bit millisecond age read it as freed in the
    /// future, so the queue stalled).
    #[test]
    fn purge_is_due_after_more_than_24_days() {
        let a = Arena::new();
        assert!(a.init(MIN_ARENA));
        let (first, _) = a.alloc_slots(1, 0, HugeAdvice::Never).expect("one slot");
        let t0: u64 = 1000;
        // SAFETY: the slot was just handed out and holds no data.
        unsafe { a.free_slots_delayed(first, 1, 0, 8, t0 as _) };
        assert_eq!(a.dirty_slots(), 1);
        let later = t0 + (1u64 << 31) + 5;
        assert!(a.purge_pending(0, later as _), "a run freed 2^31 ms ago is not due");
        a.purge_queued(0, later as _, false);
        assert_eq!(a.dirty_slots(), 0, "the run freed 2^31 ms ago was not purged");
    }


    /// Single slots come lowest first from the bitmap, every slot once; an
    /// exhausted arena refuses at once; a freed slot is found again; the
    /// reserve left by a caller holds; a failed long run is remembered until
    /// a free.
    #[test]
    fn slots_come_from_the_bitmap_and_exhaustion_is_remembered() {
        let a = Arena::new();
        assert!(a.init(MIN_ARENA));
        let count = a.slot_count();
        assert_eq!(count, MIN_ARENA >> SEG_SHIFT);
        let reserve = a.runs_reserve();
        assert!(reserve >= 8 && reserve < count);
        // Large-style requests stop `reserve` slots short of the end.
        let mut got = 0;
        while let Some((i, clean)) = a.alloc_slots(1, reserve, HugeAdvice::Never) {
            assert_eq!(i, got, "lowest free slot first");
            assert!(clean);
            got += 1;
        }
        assert_eq!(got, count - reserve);
        // Segments may take the rest.
        while let Some((i, _)) = a.alloc_slots(1, 0, HugeAdvice::Never) {
            assert_eq!(i, got);
            got += 1;
        }
        assert_eq!(got, count);
        assert!(a.alloc_slots(1, 0, HugeAdvice::Never).is_none());
        assert!(a.alloc_slots(2, 0, HugeAdvice::Never).is_none());
        // SAFETY: slots 5, 6 and 40 were handed out above and hold nothing.
        unsafe {
            a.free_slots(40, 1, 0);
            a.free_slots(5, 1, 0);
            a.free_slots(6, 1, 0);
        }
        assert_eq!(a.alloc_slots(3, 0, HugeAdvice::Never), None);
        assert_eq!(a.no_run_of.load(Ordering::Relaxed), 3);
        assert_eq!(a.alloc_slots(2, 0, HugeAdvice::Never), Some((5, true)));
        assert_eq!(a.alloc_slots(1, 0, HugeAdvice::Never), Some((40, true)));
        assert!(a.alloc_slots(1, 0, HugeAdvice::Never).is_none());
    }
}
