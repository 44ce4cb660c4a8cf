//! The per-thread cache: two intrusive free lists per bin.
//!
//! Owns: the `ThreadCache` layout, the hot pop/push, the batched refill and
//! flush between a bin and its shard, the per-bin stash of inbox chains (so a
//! remote-freed block costs a bounded number of link steps), the fresh runs
//! zeroed allocations take without writing, and the heartbeat that gives
//! back what unused classes hold. Must never: take a lock on the hot path,
//! walk a list whose length the program controls except to hand each block
//! on once, or hold blocks of another shard (a remote block goes to `remote`).

use crate::remote::{self, RemoteBuffer};
use crate::shard::{self, next_of, set_next, Chain};
use crate::size_class::{BINS, NBINS};
use crate::stats::{Counters, Ctr, Events};
use crate::{Config, State};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// One bin of a thread cache: pops take from `head`, the thread's own frees
/// go onto `freed`, and a pop that finds `head` empty takes the whole `freed`
/// list (mimalloc's `free` / `local_free` split). With one LIFO list a pop's
/// load of the head waits for the previous free's store to it, whose address
/// waits for the free's tag load: a chain through memory from one pair to the
/// next (measured: ~15% of a malloc/free pair).
#[repr(C)]
pub struct Bin {
    /// The list pops take from (null when empty).
    pub head: *mut u8,
    /// Blocks freed by this thread since `head` last ran empty.
    pub freed: *mut u8,
    /// `max` minus the blocks cached in both lists, wrapping below zero when
    /// the bin is over-full: a push is one decrement whose borrow says
    /// "flush". Written only by the owning thread (relaxed load and store, the
    /// same instructions as a plain field); atomic so a stats snapshot on
    /// another thread may read it: `allocs` is derived from the cached count.
    room: AtomicU32,
    /// Flush threshold: starts at `BINS[bin].max_cached`, doubles (up to
    /// `max_limit`) each time the bin fills up, so a bin whose working set is
    /// larger stops trading blocks with the central. Atomic for the same
    /// reason as `room`.
    max: AtomicU32,
}

impl Bin {
    /// Blocks cached in both lists.
    #[inline]
    pub fn cached(&self) -> u32 {
        self.max().wrapping_sub(self.room.load(Relaxed))
    }

    /// The flush threshold.
    #[inline]
    pub fn max(&self) -> u32 {
        self.max.load(Relaxed)
    }

    /// Record that the lists hold `n` blocks.
    #[inline]
    fn set_cached(&self, n: u32) {
        self.room.store(self.max().wrapping_sub(n), Relaxed);
    }

    /// Change the flush threshold, keeping the cached count.
    fn set_max(&self, max: u32) {
        let n = self.cached();
        self.max.store(max, Relaxed);
        self.set_cached(n);
    }
}

/// A thread's cache for one generated type (lives in its own mapping, recycled).
#[repr(C)]
pub struct ThreadCache {
    /// Bins, indexed like `size_class::BINS`.
    pub bins: [Bin; NBINS],
    /// The owner shard this thread holds.
    pub shard: u32,
    /// `tagmap::owner_half(shard)`: a tag xor this is the bin + 1 of a block
    /// this thread's shard owns (the free hot path's local test).
    pub owner_half: u32,
    /// Buffered remote frees (same layout as its two fields had here).
    pub remote: RemoteBuffer,
    /// This thread's counters (cumulative over every thread that used this cache).
    pub ctr: Counters,
    /// Next cache ever created (for stats snapshots).
    pub all_next: *mut ThreadCache,
    /// Next cache in the pool of unused caches.
    pub pool_next: *mut ThreadCache,
    /// Kernel thread id of the thread using this cache; 0 while the cache is
    /// in the pool, or when it must never be reclaimed (inherited by a
    /// `fork()` child). Written under the pool lock.
    pub tid: i32,
    /// Per one-block-run bin: the rest of the last chain taken from the
    /// shard's inbox (null-terminated), which later refills pop from. Taking
    /// a whole inbox chain here, instead of splitting it and pushing the rest
    /// back, makes each block cost a bounded number of link steps however
    /// long the chain is (a re-push needs the rest's tail: a walk per refill).
    pub stash: [*mut u8; NBINS],
    /// Per bin: the untouched end of a run whose pages read as zero, taken by
    /// a zeroed allocation (`refill_zeroed`); its blocks are handed out in
    /// address order without being written, so a zeroed allocation skips
    /// the memset and touches none of their pages.
    pub fresh: [FreshRun; NBINS],
    /// Refills since the last heartbeat (see [`heartbeat`]).
    pub beat: u32,
    /// Bins refilled since the last heartbeat (bit per bin).
    pub touched: [u64; NBINS.div_ceil(64)],
}

/// A thread's slow path runs a heartbeat every this many refills.
pub const HEARTBEAT_REFILLS: u32 = 256;

/// Blocks `next`, `next + size`, ... (`left` of them) at the end of a run,
/// never handed out, reading as zero.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FreshRun {
    /// The next block (meaningless when `left == 0`).
    pub next: *mut u8,
    /// Blocks left.
    pub left: u32,
}

impl FreshRun {
    /// No blocks.
    pub const EMPTY: FreshRun = FreshRun { next: core::ptr::null_mut(), left: 0 };
}

impl ThreadCache {
    /// Prepare a freshly mapped (zeroed) or recycled cache for a thread on `shard`.
    pub fn reset(&mut self, shard: usize) {
        for (b, info) in self.bins.iter_mut().zip(BINS.iter()) {
            b.head = core::ptr::null_mut();
            b.freed = core::ptr::null_mut();
            b.max.store(info.max_cached as u32, Relaxed);
            b.set_cached(0);
        }
        self.shard = shard as u32;
        self.owner_half = crate::tagmap::owner_half(shard);
        self.remote.reset();
        self.stash = [core::ptr::null_mut(); NBINS];
        self.fresh = [FreshRun::EMPTY; NBINS];
        self.beat = 0;
        self.touched = [0; NBINS.div_ceil(64)];
    }

    /// Count an event when stats are on.
    #[inline(always)]
    pub fn count<C: Config>(&self, k: Ctr) {
        if C::STATS {
            self.ctr.bump_owned(k);
        }
    }

    /// Add `n` to counter `k` when stats are on.
    #[inline]
    pub fn add<C: Config>(&self, k: Ctr, n: u64) {
        if C::STATS {
            let c = self.ctr.of(k);
            c.store(c.load(core::sync::atomic::Ordering::Relaxed) + n, core::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Blocks held in the bins now (read by stats snapshots on any thread).
    pub fn cached_blocks(&self) -> u64 {
        self.bins.iter().map(|b| b.cached() as u64).sum()
    }

    /// Count the events of one free (one bump) when stats are on.
    #[inline(always)]
    pub fn count_events<C: Config>(&self, e: Events) {
        if C::STATS {
            crate::stats::add_owned(self.ctr.of_events(e));
        }
    }
}

/// Hot pop; null when the bin is empty. With `harden` the popped block's
/// link is decoded and checked before it becomes the bin's head (null, or an
/// aligned arena address other than the block; else abort: a write into a
/// freed block that does not know the key fails this), and its freed-block
/// mark is cleared. (Every block entered the bin through a free, whose route
/// tested its exact start, or a refill, which tests the blocks it admits.)
///
/// # Safety
/// `tc` is this thread's live cache and `bin < NBINS`.
#[inline(always)]
pub unsafe fn pop<C: Config>(tc: *mut ThreadCache, bin: usize) -> *mut u8 {
    // SAFETY: `tc` is this thread's live cache, so no other reference to it
    // exists, and `bin < NBINS` (caller's contract).
    let b = unsafe { (*tc).bins.get_unchecked_mut(bin) };
    let mut p = b.head;
    if p.is_null() {
        p = b.freed;
        if p.is_null() {
            return p;
        }
        b.freed = core::ptr::null_mut();
    }
    if C::HARDEN {
        // SAFETY: `p` is a free block of this bin (every block entered it
        // through a checked free or a refill), so its first word is its link.
        let next = crate::harden::Keys::of::<C>().decode(p, unsafe { *(p as *mut usize) });
        crate::harden::check_link::<C>(p, next);
        // SAFETY: `p` is a free block of this bin, now taken by this thread.
        unsafe { crate::harden::clear_mark(p) };
        b.head = next;
    } else {
        // SAFETY: `p` is a free block of this bin, so its link is readable.
        b.head = unsafe { next_of::<C>(p) };
    }
    b.room.store(b.room.load(Relaxed).wrapping_add(1), Relaxed);
    p
}

/// Hot push of a block owned by this thread's shard. With `harden`, a block
/// that carries the freed-block mark aborts (a double free).
///
/// # Safety
/// `tc` is this thread's live cache; `p` is a free block of `bin` owned by its shard.
#[inline(always)]
pub unsafe fn push<C: Config>(tc: *mut ThreadCache, bin: usize, p: *mut u8) {
    // SAFETY: `tc` is this thread's live cache, so no other reference to it
    // exists, and `bin < NBINS` (caller's contract).
    let b = unsafe { (*tc).bins.get_unchecked_mut(bin) };
    if C::HARDEN {
        // SAFETY: `p` is a free block of `bin` owned by this thread's shard
        // (caller's contract): its first words are ours to write; the mark
        // and the encoded link both go there.
        unsafe {
            crate::harden::mark_freed::<C>(p);
            *(p as *mut usize) = crate::harden::Keys::of::<C>().encode(p, b.freed);
        }
    } else {
        // SAFETY: `p` is a free block of `bin` (caller's contract): its link is ours to write.
        unsafe { set_next::<C>(p, b.freed) };
    }
    b.freed = p;
    let (room, over_full) = b.room.load(Relaxed).overflowing_sub(1);
    b.room.store(room, Relaxed);
    if over_full {
        // SAFETY: `tc` is this thread's live cache and the borrow says the
        // bin now holds more than `max` blocks.
        unsafe { flush::<C>(tc, bin) };
    }
}

/// Refill an empty bin and return one block: drain the shard's inbox first
/// (remote frees of our own blocks), else take a batch from the central.
/// Null when out of memory.
///
/// # Safety
/// `tc` is this thread's live cache and bin `bin` is empty.
#[cold]
#[inline(never)]
pub unsafe fn refill<C: Config>(tc: *mut ThreadCache, bin: usize) -> *mut u8 {
    // SAFETY: `tc` is this thread's live cache and the bin is empty (caller's contract).
    unsafe { refill_from::<C>(tc, bin, false).0 }
}

/// [`refill`] for a zeroed allocation: returns a block and whether it is
/// known to read as zero (then the caller writes nothing). Such blocks come
/// from the untouched end of a run whose pages were fresh or purged, kept in
/// the thread's `fresh` run between calls.
///
/// # Safety
/// As [`refill`].
#[cold]
#[inline(never)]
pub unsafe fn refill_zeroed<C: Config>(tc: *mut ThreadCache, bin: usize) -> (*mut u8, bool) {
    // SAFETY: `tc` is this thread's live cache (caller's contract).
    let tcr = unsafe { &mut *tc };
    let f = &mut tcr.fresh[bin];
    if f.left != 0 {
        let p = f.next;
        // The fresh run's blocks are consecutive in one run (the pointer
        // stays inside it, or one block past its last).
        f.next = p.wrapping_add(BINS[bin].size as usize);
        f.left -= 1;
        tcr.count::<C>(Ctr::Allocs);
        return (p, true);
    }
    // SAFETY: `tc` is this thread's live cache and the bin is empty (caller's contract).
    unsafe { refill_from::<C>(tc, bin, true) }
}

/// [`refill`] and [`refill_zeroed`]: returns a block and whether it reads as zero.
///
/// # Safety
/// `tc` is this thread's live cache and bin `bin` is empty.
unsafe fn refill_from<C: Config>(tc: *mut ThreadCache, bin: usize, zeroed: bool) -> (*mut u8, bool) {
    let st = C::state();
    // SAFETY: `tc` is this thread's live cache (caller's contract): no other
    // reference to it exists while this call runs.
    let tcr = unsafe { &mut *tc };
    tcr.count::<C>(Ctr::Refills);
    crate::large::purge_tick(st);
    if tcr.remote.pending != 0 {
        // SAFETY: the buffer is this thread's and holds only blocks it freed.
        unsafe { remote::publish_all::<C>(st, &mut tcr.remote, &tcr.ctr) };
    }
    remote::collect_long::<C>(st);
    tcr.touched[bin / 64] |= 1 << (bin % 64);
    tcr.beat += 1;
    if tcr.beat >= HEARTBEAT_REFILLS {
        // SAFETY: `tcr` is this thread's live cache.
        unsafe { heartbeat::<C>(st, tcr) };
    }
    let si = tcr.shard as usize;
    let sh = shard::shard(st, si);
    let one_block_runs = BINS[bin].blocks == 1;
    let want = (BINS[bin].batch as u32).max(tcr.bins[bin].max() / 2);
    let mut head = core::ptr::null_mut();
    if one_block_runs {
        head = core::mem::replace(&mut tcr.stash[bin], core::ptr::null_mut());
    }
    if head.is_null() {
        head = sh.inbox.take(bin);
    }
    let mut n;
    if head.is_null() && tcr.fresh[bin].left != 0 {
        // A non-zeroed refill links the blocks of the fresh run into the bin.
        let f = &mut tcr.fresh[bin];
        let size = BINS[bin].size as usize;
        let mut chain = Chain::EMPTY;
        while chain.n < want && f.left != 0 {
            // SAFETY: `f.next` is an untouched free block of the fresh run
            // (`left != 0`), owned by this thread; the next block is in the
            // same run or one block past its end.
            unsafe {
                chain.push_back::<C>(f.next);
                f.next = f.next.add(size);
            }
            f.left -= 1;
        }
        head = chain.head;
        n = chain.n;
    } else if head.is_null() {
        let mut cen = sh.lock();
        if zeroed {
            // SAFETY: `cen` is shard `si`'s locked central.
            if let Some((first, k)) = unsafe { shard::take_zero_tail(st, si, &mut cen, bin) } {
                drop(cen);
                // SAFETY: `first` starts `k` consecutive blocks of one run:
                // the next one is inside it or one block past its end.
                let next = unsafe { first.add(BINS[bin].size as usize) };
                tcr.fresh[bin] = FreshRun { next, left: k - 1 };
                tcr.count::<C>(Ctr::Allocs);
                return (first, true);
            }
        }
        // SAFETY: `cen` is shard `si`'s locked central.
        let chain = unsafe { shard::take(st, si, &mut cen, bin, want) };
        drop(cen);
        head = chain.head;
        n = chain.n;
    } else {
        // Keep at most half a bin (plus the block returned), so the thread's
        // own frees do not overflow it at once (that would grow its
        // threshold). The rest of a one-block-run bin (medium) goes to the
        // stash for the next refills (through the central its runs would be
        // released, purged and faulted in again); each of its blocks is
        // walked once, when a refill takes it. The rest of a small bin goes
        // to the central, where its pages can be released and reused by any
        // class (one walk and one give per block).
        let keep = tcr.bins[bin].max() / 2 + 1;
        let mut last = head;
        n = 1;
        // SAFETY: `head` is a null-terminated list of free blocks of `bin`
        // owned by shard `si`, detached from the stash or the inbox, so this
        // thread alone reads and writes their links; `last` is one of them.
        while n < keep && !unsafe { next_of::<C>(last) }.is_null() {
            // SAFETY: as the loop condition: `last` is a block of that list.
            last = unsafe { next_of::<C>(last) };
            n += 1;
        }
        shard::walks::add(n as u64);
        // SAFETY: as the loop condition: `last` is a block of that list.
        let rest = unsafe { next_of::<C>(last) };
        if !rest.is_null() {
            // SAFETY: as the loop condition: `last` is a block of that list.
            unsafe { set_next::<C>(last, core::ptr::null_mut()) };
            if one_block_runs {
                tcr.stash[bin] = rest;
            } else {
                // SAFETY: `rest` is the detached, null-terminated rest of
                // that list: free blocks of `bin` owned by shard `si`.
                unsafe { shard::give_chain::<C>(st, si, bin, Chain::of_list::<C>(rest)) };
            }
        }
    }
    if head.is_null() {
        return (head, false);
    }
    // The returned block is an allocation that never enters the bin; the
    // rest is counted in (see `StatsSnapshot::allocs`).
    tcr.count::<C>(Ctr::Allocs);
    tcr.add::<C>(Ctr::CacheIn, n as u64 - 1);
    let bn = &mut tcr.bins[bin];
    // SAFETY: `head` is the first block of the `n` just taken, a free block
    // of `bin` this thread alone holds.
    bn.head = unsafe { next_of::<C>(head) };
    bn.set_cached(n - 1);
    // SAFETY: `tc` is this thread's live cache; bin `bin` now holds the
    // refilled blocks after `head`.
    unsafe { crate::harden::admit_refill::<C>(tc, bin, head) };
    (head, false)
}

/// Every `HEARTBEAT_REFILLS` refills: give the blocks of bins this thread
/// has not refilled since the last heartbeat — its stash, fresh run and the
/// shard's inbox bin — to the central, where empty runs are released (and
/// purged) for any class and thread. Bounded: one look per bin, and one walk
/// and one give per block handed back. (A thread that stops allocating a
/// class would otherwise keep what other threads freed for it.)
///
/// # Safety
/// `tcr` is the calling thread's live cache.
#[cold]
unsafe fn heartbeat<C: Config>(st: &State<C>, tcr: &mut ThreadCache) {
    tcr.beat = 0;
    let si = tcr.shard as usize;
    let sh = shard::shard(st, si);
    for bin in 0..NBINS {
        if tcr.touched[bin / 64] & (1 << (bin % 64)) != 0 {
            continue;
        }
        // SAFETY: `tcr` is this thread's cache; the stash, fresh run and
        // inbox hold free blocks of `bin` owned by shard `si`.
        unsafe {
            give_stash::<C>(st, tcr, bin);
            give_fresh::<C>(st, tcr, bin);
            if !sh.inbox.is_empty(bin) {
                shard::give_inbox::<C>(st, si, bin);
            }
        }
    }
    tcr.touched = [0; NBINS.div_ceil(64)];
    if C::PURGE {
        // SAFETY: the guard is the locked central of shard `si`, one of `st`'s.
        unsafe { shard::purge_tick(st, &mut sh.lock()) };
    }
}

/// A bin over-filled by the thread's own frees: raise its threshold while
/// below the limit; otherwise move blocks back to the shard central until it
/// is half full. (Inbox drains never over-fill a bin: see `refill`.)
///
/// # Safety
/// `tc` is this thread's live cache and bin `bin` holds more than `max` blocks.
#[cold]
#[inline(never)]
pub unsafe fn flush<C: Config>(tc: *mut ThreadCache, bin: usize) {
    let st = C::state();
    // SAFETY: `tc` is this thread's live cache (caller's contract): no other
    // reference to it exists while this call runs.
    let tcr = unsafe { &mut *tc };
    let limit = BINS[bin].max_limit as u32;
    let b = &mut tcr.bins[bin];
    if b.max() < limit {
        b.set_max((b.max() * 2).min(limit));
        if b.cached() <= b.max() {
            return;
        }
    }
    tcr.count::<C>(Ctr::Flushes);
    let b = &mut tcr.bins[bin];
    let n = b.cached() - b.max() / 2;
    tcr.add::<C>(Ctr::CacheOut, n as u64);
    let b = &mut tcr.bins[bin];
    // SAFETY: the bin holds `cached() > n` blocks, all free blocks of `bin`
    // owned by this thread's shard; the detached chain goes to that shard.
    unsafe {
        let chain = split_front::<C>(b, n);
        shard::give_chain::<C>(st, tcr.shard as usize, bin, chain);
    }
}

/// Detach the first `n` blocks of a bin as a chain, the most recently freed
/// first.
///
/// # Safety
/// `b` is a bin of the calling thread's cache (its lists hold free blocks
/// only this thread links) and `1 <= n <= b.cached()`.
unsafe fn split_front<C: Config>(b: &mut Bin, n: u32) -> Chain {
    if !b.freed.is_null() {
        // One list: `freed`, then `head`.
        let mut last = b.freed;
        // SAFETY: `last` is a block of the bin's `freed` list (caller's contract).
        while !unsafe { next_of::<C>(last) }.is_null() {
            // SAFETY: as the loop condition.
            last = unsafe { next_of::<C>(last) };
        }
        // SAFETY: `last` is the last block of `freed`, a block of this bin.
        unsafe { set_next::<C>(last, b.head) };
        b.head = core::mem::replace(&mut b.freed, core::ptr::null_mut());
    }
    let head = b.head;
    let mut tail = head;
    for _ in 1..n {
        // SAFETY: the list holds at least `n` blocks (caller's contract), so
        // `tail` is one of its first `n - 1` blocks.
        tail = unsafe { next_of::<C>(tail) };
    }
    // SAFETY: `tail` is the `n`-th block of the bin's list (`n <= cached()`):
    // its link is this thread's to read and to cut.
    b.head = unsafe { next_of::<C>(tail) };
    b.set_cached(b.cached() - n);
    // SAFETY: as the read of `tail`'s link just above.
    unsafe { set_next::<C>(tail, core::ptr::null_mut()) };
    Chain { head, tail, n }
}

/// Empty every bin into the central and publish buffered remote frees
/// (thread exit).
///
/// # Safety
/// `tc` is the exiting thread's cache.
pub unsafe fn drain_all<C: Config>(tc: *mut ThreadCache) {
    let st = C::state();
    // SAFETY: `tc` is the exiting thread's cache (caller's contract): no
    // other reference to it exists while this call runs.
    let tcr = unsafe { &mut *tc };
    // SAFETY: the buffer is this thread's and holds only blocks it freed.
    unsafe { remote::publish_all::<C>(st, &mut tcr.remote, &tcr.ctr) };
    for bin in 0..NBINS {
        // SAFETY: `tcr` is the exiting thread's cache.
        unsafe {
            give_stash::<C>(st, tcr, bin);
            give_fresh::<C>(st, tcr, bin);
        }
        let b = &mut tcr.bins[bin];
        let n = b.cached();
        if n > 0 {
            // SAFETY: `b` is a bin of the exiting thread's cache and `n` is
            // its cached count (> 0).
            let chain = unsafe { split_front::<C>(b, n) };
            tcr.add::<C>(Ctr::CacheOut, n as u64);
            // SAFETY: the chain holds free blocks of `bin` owned by the
            // cache's shard, detached from the bin.
            unsafe { shard::give_chain::<C>(st, tcr.shard as usize, bin, chain) };
        }
    }
}

/// Give bin `bin`'s stash (if any) to the central: one walk and one give per block.
///
/// # Safety
/// `tcr` is the calling thread's cache (or that of a thread that is gone).
unsafe fn give_stash<C: Config>(st: &State<C>, tcr: &mut ThreadCache, bin: usize) {
    let head = core::mem::replace(&mut tcr.stash[bin], core::ptr::null_mut());
    if !head.is_null() {
        // SAFETY: the stash is a null-terminated list of free blocks of `bin`
        // owned by the cache's shard, now detached.
        unsafe { shard::give_chain::<C>(st, tcr.shard as usize, bin, Chain::of_list::<C>(head)) };
    }
}

/// Give bin `bin`'s fresh run (if any) back to the central, unwritten.
///
/// # Safety
/// As [`give_stash`].
unsafe fn give_fresh<C: Config>(st: &State<C>, tcr: &mut ThreadCache, bin: usize) {
    let f = core::mem::replace(&mut tcr.fresh[bin], FreshRun::EMPTY);
    if f.left != 0 {
        let si = tcr.shard as usize;
        let sh = shard::shard(st, si);
        // SAFETY: the guard is shard `si`'s locked central; the fresh run is
        // the untouched end of a run of `bin` of shard `si`, taken by
        // `take_zero_tail`.
        unsafe { shard::give_tail(st, si, &mut sh.lock(), bin, f.next, f.left) };
    }
}

/// Give everything waiting in shard `si`'s inbox to its central and trim the
/// shard (used when the shard's last thread leaves, so its memory is returned).
///
/// # Safety
/// Shard `si` exists.
pub unsafe fn drain_inbox<C: Config>(st: &State<C>, si: usize) {
    let sh = shard::shard(st, si);
    for bin in 0..NBINS {
        // SAFETY: shard `si` exists (contract).
        unsafe { shard::give_inbox::<C>(st, si, bin) };
    }
    // SAFETY: the guard is shard `si`'s locked central.
    unsafe { shard::trim(st, &mut sh.lock()) };
}
