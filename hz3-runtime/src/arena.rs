//! The arena: one segment-aligned reservation holding every segment.
//!
//! Owns: the reservation (reserved `PROT_NONE`, committed a segment at a time),
//! the per-slot state table, contiguous slot runs for segments and large blocks,
//! and the tag map that sits right below the arena in the same reservation (so
//! the hot path reaches it from the arena base alone). Must never: hand out a
//! slot twice, or touch slot memory outside the arena lock except through the
//! segment that owns it.

use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::os::{self, PAGE_SHIFT};
use crate::sync::SpinLock;

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

/// Dirty slots remembered for reuse.
const RECENT_DIRTY: usize = 256;

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
    /// One state byte per slot.
    slots: AtomicUsize,
    /// Lowest slot index that may be free.
    hint: AtomicUsize,
    /// Free slots in the `SLOT_DIRTY` state.
    dirty: AtomicUsize,
    /// Recently freed dirty slots, most recent last (under the lock): a
    /// single-slot allocation reuses warm memory instead of the lowest slot.
    recent_dirty: core::cell::UnsafeCell<[u32; RECENT_DIRTY]>,
    /// Entries in `recent_dirty`.
    recent_len: AtomicUsize,
    /// Serialises slot-table changes.
    pub lock: SpinLock,
}

// SAFETY: `recent_dirty` is read and written only with `lock` held; every
// other field is atomic.
unsafe impl Sync for Arena {}

impl Arena {
    /// An arena with nothing reserved.
    pub const fn new() -> Self {
        Arena {
            base: AtomicUsize::new(NO_ARENA),
            len: AtomicUsize::new(0),
            tags: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            hint: AtomicUsize::new(0),
            dirty: AtomicUsize::new(0),
            recent_dirty: core::cell::UnsafeCell::new([0; RECENT_DIRTY]),
            recent_len: AtomicUsize::new(0),
            lock: SpinLock::new(),
        }
    }

    /// Reserve the arena (at most `want` bytes; halved until the OS agrees, down to
    /// 64 MiB). Returns false when no arena could be had (everything then goes to
    /// direct mappings). Called once, before any other thread can see the arena.
    pub fn init(&self, want: usize) -> bool {
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
        let total = tag_bytes + len + SEG_SIZE;
        let raw = os::reserve(total);
        if raw.is_null() {
            return false;
        }
        let slots = os::map_rw(len >> SEG_SHIFT);
        if slots.is_null() {
            // SAFETY: `raw` is the reservation just made, of `total` bytes, unused.
            unsafe { os::unmap(raw, total) };
            return false;
        }
        // Arena start: segment-aligned, with the tag map right below it.
        let base = ((raw as usize + tag_bytes + SEG_SIZE - 1) & !(SEG_SIZE - 1)) as *mut u8;
        let tags = base.wrapping_sub(tag_bytes);
        // SAFETY: [tags, base) lies inside the reservation (base - tag_bytes >= raw).
        if unsafe { !os::commit(tags, tag_bytes) } {
            // SAFETY: both mappings were made above and hold nothing.
            unsafe {
                os::unmap(raw, total);
                os::unmap(slots, len >> SEG_SHIFT);
            }
            return false;
        }
        self.slots.store(slots as usize, Ordering::Relaxed);
        self.tags.store(tags as usize, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        // Release: a thread that sees the base sees the tag map and slot table.
        self.base.store(base as usize, Ordering::Release);
        true
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
    #[inline]
    pub fn slot_state(&self, i: usize) -> u8 {
        // SAFETY: `i < slot_count()` (callers derive it from an in-arena address);
        // the table has one byte per slot.
        unsafe { (*(self.slots.load(Ordering::Relaxed) as *const AtomicU8).add(i)).load(Ordering::Acquire) }
    }

    fn set_state(&self, i: usize, s: u8) {
        // SAFETY: as in `slot_state`; the arena lock is held by the caller.
        unsafe { (*(self.slots.load(Ordering::Relaxed) as *const AtomicU8).add(i)).store(s, Ordering::Release) }
    }

    /// Take `n` contiguous free slots, commit them and mark them used (first as
    /// head, the rest as tails). Returns the first index and whether every slot was
    /// clean (reads as zero), or `None` when the arena has no such run or the OS
    /// refuses to commit.
    pub fn alloc_slots(&self, n: usize) -> Option<(usize, bool)> {
        let count = self.slot_count();
        if n == 0 || n > count {
            return None;
        }
        self.lock.lock();
        if n == 1 {
            if let Some(j) = self.pop_recent_dirty() {
                let r = self.claim(j, 1);
                self.lock.unlock();
                return r;
            }
        }
        let mut i = self.hint.load(Ordering::Relaxed);
        let mut found = None;
        while i + n <= count {
            let mut run = 0;
            while run < n && self.slot_state(i + run) < SLOT_HEAD {
                run += 1;
            }
            if run == n {
                found = Some(i);
                break;
            }
            i += run + 1;
        }
        let result = match found {
            Some(first) => self.claim(first, n),
            None => None,
        };
        self.lock.unlock();
        result
    }

    /// Under the lock: commit and mark `[first, first+n)`.
    fn claim(&self, first: usize, n: usize) -> Option<(usize, bool)> {
        let mut clean = true;
        let mut uncommitted = false;
        for j in first..first + n {
            match self.slot_state(j) {
                SLOT_RESERVED => uncommitted = true,
                SLOT_DIRTY => clean = false,
                _ => {}
            }
        }
        let dirty = (first..first + n).filter(|&j| self.slot_state(j) == SLOT_DIRTY).count();
        // SAFETY: the range is inside the arena reservation and free.
        if uncommitted && unsafe { !os::commit(self.slot_addr(first), n << SEG_SHIFT) } {
            return None;
        }
        self.dirty.fetch_sub(dirty, Ordering::Relaxed);
        self.set_state(first, SLOT_HEAD);
        for j in first + 1..first + n {
            self.set_state(j, SLOT_TAIL);
        }
        if self.hint.load(Ordering::Relaxed) == first {
            self.hint.store(first + n, Ordering::Relaxed);
        }
        Some((first, clean))
    }

    /// Grow the used run `[first, first+n)` to `m > n` slots in place when the
    /// following slots are free. Returns whether every added slot was clean.
    pub fn extend_slots(&self, first: usize, n: usize, m: usize) -> Option<bool> {
        if first + m > self.slot_count() {
            return None;
        }
        self.lock.lock();
        let free = (first + n..first + m).all(|j| self.slot_state(j) < SLOT_HEAD);
        let result = if free {
            let mut clean = true;
            let mut ok = true;
            for j in first + n..first + m {
                match self.slot_state(j) {
                    // SAFETY: slot j is inside the arena and free.
                    SLOT_RESERVED => ok &= unsafe { os::commit(self.slot_addr(j), SEG_SIZE) },
                    SLOT_DIRTY => clean = false,
                    _ => {}
                }
            }
            if ok {
                let dirty = (first + n..first + m).filter(|&j| self.slot_state(j) == SLOT_DIRTY).count();
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
        self.lock.unlock();
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
        self.lock.lock();
        let purge = self.dirty.load(Ordering::Relaxed) + n > dirty_limit;
        if purge {
            os::purge(self.slot_addr(first), n << SEG_SHIFT);
        } else {
            self.dirty.fetch_add(n, Ordering::Relaxed);
        }
        let s = if purge { SLOT_CLEAN } else { SLOT_DIRTY };
        for j in first..first + n {
            self.set_state(j, s);
        }
        if !purge && n == 1 {
            self.push_recent_dirty(first);
        }
        if first < self.hint.load(Ordering::Relaxed) {
            self.hint.store(first, Ordering::Relaxed);
        }
        self.lock.unlock();
    }

    /// Under the lock: remember dirty slot `j` (the oldest entry is dropped when full).
    fn push_recent_dirty(&self, j: usize) {
        // SAFETY: the arena lock is held by the caller.
        let stack = unsafe { &mut *self.recent_dirty.get() };
        let mut len = self.recent_len.load(Ordering::Relaxed);
        if len == RECENT_DIRTY {
            stack.copy_within(1.., 0);
            len -= 1;
        }
        stack[len] = j as u32;
        self.recent_len.store(len + 1, Ordering::Relaxed);
    }

    /// Under the lock: the most recently freed slot that is still dirty and free.
    fn pop_recent_dirty(&self) -> Option<usize> {
        // SAFETY: the arena lock is held by the caller.
        let stack = unsafe { &*self.recent_dirty.get() };
        let mut len = self.recent_len.load(Ordering::Relaxed);
        let mut found = None;
        while len > 0 {
            len -= 1;
            let j = stack[len] as usize;
            if self.slot_state(j) == SLOT_DIRTY {
                found = Some(j);
                break;
            }
        }
        self.recent_len.store(len, Ordering::Relaxed);
        found
    }
}
