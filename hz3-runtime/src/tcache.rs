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
use crate::size_class::{BINS, BUDGET_FIRST, CACHE_BUDGET_BYTES, NBINS};
use crate::stats::{Counters, Ctr, Events};
use crate::{Config, State};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// One bin of a thread cache: pops take from `head`, the thread's own frees
/// go onto `freed`, and a pop that finds `head` empty takes the whole `freed`
/// list (mimalloc's `free` / `local_free` split). With one LIFO list a pop's
/// load of the head waits for the previous free's store to it, whose address
/// waits for the free's tag load: a chain through memory from one pair to the
/// next (measured: ~15% of a malloc/free pair).
///
/// 32 bytes: a small request's bin offset in the cache is `(size - 1) & !15`
/// scaled by 2 in the address, with no multiply; the rest of the line holds
/// what a hardened free tests (`start`), so the hot paths touch one line per bin.
#[repr(C, align(32))]
pub struct Bin {
    /// The list pops take from (null when empty).
    pub head: *mut u8,
    /// Blocks freed by this thread since `head` last ran empty.
    pub freed: *mut u8,
    /// The cache's `max[bin]` minus the blocks cached in both lists, below
    /// zero as an `i32` when the bin is over-full: a push is one decrement
    /// whose sign says "flush". Written only by the owning thread (relaxed
    /// load and store, the same instructions as a plain field); atomic so a
    /// stats snapshot on another thread may read it: `allocs` is derived
    /// from the cached count.
    room: AtomicU32,
    /// The exact block-start test of this bin's blocks (`harden`), copied
    /// from `harden::START` so a free finds it on the bin's line.
    pub start: crate::harden::StartTest,
}

/// A thread's cache for one generated type (lives in its own mapping, recycled).
#[repr(C)]
pub struct ThreadCache {
    /// Bins, indexed like `size_class::BINS`.
    pub bins: [Bin; NBINS],
    /// Per bin, the flush threshold: starts at `BINS[bin].max_cached`,
    /// doubles (up to `max_limit`) each time the bin fills up, so a bin whose
    /// working set is larger stops trading blocks with the central. Atomic for
    /// the same reason as `Bin::room`; read only on slow paths.
    max: [AtomicU32; NBINS],
    /// The owner shard this thread holds.
    pub shard: u32,
    /// `tagmap::owner_half(shard)`: a tag xor this is the bin + 1 of a block
    /// this thread's shard owns (the free hot path's local test). A word, so
    /// the xor with a zero-extended tag is a full word whose shift into a bin
    /// offset needs no extension.
    pub owner_half: usize,
    /// The hardened hot paths' keys and arena bounds (`harden`; unused otherwise).
    pub keys: crate::harden::CacheKeys,
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
    /// Per bin: the rest of the last carrier list taken from the shard's
    /// inbox (`remote::unpack`), which later refills unpack from. Taking
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
        for (bin, info) in BINS.iter().enumerate() {
            let b = &mut self.bins[bin];
            b.head = core::ptr::null_mut();
            b.freed = core::ptr::null_mut();
            b.start = crate::harden::START[bin];
            self.max[bin].store(info.max_cached as u32, Relaxed);
            self.set_cached(bin, 0);
        }
        self.shard = shard as u32;
        self.owner_half = crate::tagmap::owner_half(shard) as usize;
        self.remote.reset();
        self.stash = [core::ptr::null_mut(); NBINS];
        self.fresh = [FreshRun::EMPTY; NBINS];
        self.beat = 0;
        self.touched = [0; NBINS.div_ceil(64)];
    }

    /// Blocks cached in both lists of bin `bin`.
    #[inline]
    pub fn cached(&self, bin: usize) -> u32 {
        self.max(bin).wrapping_sub(self.bins[bin].room.load(Relaxed))
    }

    /// The flush threshold of bin `bin`.
    #[inline]
    pub fn max(&self, bin: usize) -> u32 {
        self.max[bin].load(Relaxed)
    }

    /// Record that bin `bin`'s lists hold `n` blocks.
    #[inline]
    fn set_cached(&self, bin: usize, n: u32) {
        self.bins[bin].room.store(self.max(bin).wrapping_sub(n), Relaxed);
    }

    /// Change bin `bin`'s flush threshold, keeping its cached count.
    fn set_max(&self, bin: usize, max: u32) {
        let n = self.cached(bin);
        self.max[bin].store(max, Relaxed);
        self.set_cached(bin, n);
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
        (0..NBINS).map(|bin| self.cached(bin) as u64).sum()
    }

    /// Whether bin `bin` is one of the classes cached by bytes and the
    /// blocks of those classes the bins hold fit the budget
    /// (`size_class::CACHE_BUDGET_BYTES`): then a free into it keeps its
    /// block. Eight bins to add up, on the free path of blocks above 256 KiB
    /// only (their threshold is 0, so every such free comes through `flush`).
    #[inline]
    pub fn within_budget(&self, bin: usize) -> bool {
        bin >= BUDGET_FIRST && (BUDGET_FIRST..NBINS).map(|b| self.cached(b) as usize * BINS[b].size as usize).sum::<usize>() <= CACHE_BUDGET_BYTES
    }

    /// Count the events of one free (one bump) when stats are on.
    #[inline(always)]
    pub fn count_events<C: Config>(&self, e: Events) {
        if C::STATS {
            crate::stats::add_owned(self.ctr.of_events(e));
        }
    }
}

/// Bytes of one [`Bin`]: bin `i` starts `i * BIN_BYTES` bytes into the cache.
pub const BIN_BYTES: usize = core::mem::size_of::<Bin>();
const _: () = assert!(BIN_BYTES == 32 && core::mem::offset_of!(ThreadCache, bins) == 0);

/// The bin `off` bytes into cache `tc` (`off` a multiple of [`BIN_BYTES`]).
/// Hot paths compute the offset, not the index: a small request's offset is
/// `((size - 1) & !15) * 2`, and a free's `(bin + 1) * 32` with the `- 32`
/// folded into the addresses.
#[inline(always)]
fn bin_at(tc: *mut ThreadCache, off: usize) -> *mut Bin {
    (tc as *mut u8).wrapping_add(off) as *mut Bin
}

/// The block-start test of the bin that ends `end` bytes into the cache
/// (as [`push_end`]).
///
/// # Safety
/// `tc` is a live cache and `end` as in [`push_end`].
#[inline(always)]
pub unsafe fn start_test(tc: *mut ThreadCache, end: usize) -> crate::harden::StartTest {
    // SAFETY: the bin is one of `tc`'s (contract).
    unsafe { (*bin_at(tc, end).wrapping_sub(1)).start }
}

/// Hot pop; null when the bin is empty.
///
/// # Safety
/// `tc` is this thread's live cache and `bin < NBINS`.
#[inline(always)]
pub unsafe fn pop<C: Config>(tc: *mut ThreadCache, bin: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { pop_at::<C>(tc, bin * BIN_BYTES, true) }
}

/// [`pop`] from the bin `off` bytes into the cache. With `harden` the popped
/// block's link is decoded and checked before it becomes the bin's head
/// (null, or an aligned arena address other than the block: a write into a
/// freed block that does not know the key fails this), and its freed-block
/// mark is cleared. (Every block entered the bin through a free, whose route
/// tested its exact start, or a refill, which tests the blocks it admits.) A
/// bad link aborts when `abort`; otherwise the pop answers null and changes
/// nothing, so the caller's slow path pops the same block again and aborts
/// there: the hot path makes no call and needs no stack frame.
///
/// # Safety
/// `tc` is this thread's live cache and `off = bin * BIN_BYTES` of a `bin < NBINS`.
#[inline(always)]
pub unsafe fn pop_at<C: Config>(tc: *mut ThreadCache, off: usize, abort: bool) -> *mut u8 {
    // SAFETY: `tc` is this thread's live cache, so no other reference to it
    // exists, and `off` is the offset of one of its bins (caller's contract).
    let b = unsafe { &mut *bin_at(tc, off) };
    let mut p = b.head;
    let from_freed = p.is_null();
    if from_freed {
        p = b.freed;
        if p.is_null() {
            return p;
        }
        b.freed = core::ptr::null_mut();
    }
    let next = if C::HARDEN {
        if abort {
            // The slow pop: refresh the bounds (an arena reserved after this
            // cache was set up fails every quick test until then).
            // SAFETY: `tc` is this thread's live cache; `b` covers only the bin.
            unsafe { (*tc).keys = crate::harden::CacheKeys::of::<C>() };
        }
        // SAFETY: as above, a field apart from the bin.
        let keys = unsafe { (*tc).keys };
        // SAFETY: `p` is a free block of this bin (every block entered it
        // through a checked free or a refill), so its first word is its link.
        let next = keys.keys().decode(p, unsafe { *(p as *mut usize) });
        // The hot pop takes the quick test (a stale copy fails it), and
        // admits null: a list's last block popped by the slow path cost 15%
        // of the hardened overhead where bins hold a few blocks each
        // (random_mixed_small: 3.5M of 22M extra instructions). The slow
        // pop takes the whole test.
        let ok = if abort { crate::harden::link_ok::<C>(p, next) } else { next.is_null() || keys.link_in_arena(next) };
        if !ok {
            if abort {
                crate::harden::corrupted::<C>(p);
            }
            if from_freed {
                b.freed = p;
            }
            return core::ptr::null_mut();
        }
        // SAFETY: `p` is a free block of this bin, now taken by this thread.
        unsafe { crate::harden::clear_mark(p) };
        next
    } else {
        // SAFETY: `p` is a free block of this bin, so its link is readable.
        unsafe { next_of::<C>(p) }
    };
    b.head = next;
    b.room.store(b.room.load(Relaxed).wrapping_add(1), Relaxed);
    p
}

/// Hot push of a block owned by this thread's shard into the bin that ends
/// `end` bytes into the cache, `(bin + 1) * BIN_BYTES`: what a free computes
/// from its tag test (the bin + 1) with one shift; the `- 1` folds into the
/// addresses. With `harden`, a block that carries the freed-block mark (a
/// double free) is not pushed and the push answers false (the caller
/// aborts, or takes the slow path that does); otherwise true.
///
/// # Safety
/// `tc` is this thread's live cache; `p` is a free block of bin
/// `end / BIN_BYTES - 1` (< NBINS, `end > 0`) owned by its shard.
#[inline(always)]
pub unsafe fn push_end<C: Config>(tc: *mut ThreadCache, end: usize, p: *mut u8) -> bool {
    // SAFETY: `tc` is this thread's live cache, so no other reference to it
    // exists, and the bin is one of its bins (caller's contract).
    let b = unsafe { &mut *bin_at(tc, end).wrapping_sub(1) };
    if C::HARDEN {
        // SAFETY: `p` is a free block of the bin owned by this thread's shard
        // (caller's contract): its first words are ours to read and write;
        // the mark and the encoded link both go there.
        unsafe {
            let keys = (*tc).keys;
            if !keys.mark_freed(p) {
                return false;
            }
            *(p as *mut usize) = keys.keys().encode(p, b.freed);
        }
    } else {
        // SAFETY: `p` is a free block of the bin (caller's contract): its link is ours to write.
        unsafe { set_next::<C>(p, b.freed) };
    }
    b.freed = p;
    let room = b.room.load(Relaxed).wrapping_sub(1);
    b.room.store(room, Relaxed);
    // A sign test (not the borrow): the bin is over-full below zero.
    if (room as i32) < 0 {
        // SAFETY: `tc` is this thread's live cache and the bin now holds
        // more than `max` blocks.
        unsafe { flush_bin::<C>(tc, b) };
    }
    true
}

/// [`flush`] of the bin at `b` (its index found here, off the hot path).
///
/// # Safety
/// `tc` is this thread's live cache and `b` one of its bins, over-full.
#[cold]
#[inline(never)]
unsafe fn flush_bin<C: Config>(tc: *mut ThreadCache, b: *mut Bin) {
    // SAFETY: the caller's contract; the index of a bin of `tc`.
    unsafe { flush::<C>(tc, (b as usize - tc as usize) / BIN_BYTES) };
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
    remote::collect_long::<C>(st);
    tcr.touched[bin / 64] |= 1 << (bin % 64);
    tcr.beat += 1;
    if tcr.beat >= HEARTBEAT_REFILLS {
        // SAFETY: `tcr` is this thread's live cache.
        unsafe { heartbeat::<C>(st, tcr) };
    }
    let si = tcr.shard as usize;
    let sh = shard::shard(st, si);
    let want = (BINS[bin].batch as u32).max(tcr.max(bin) / 2);
    let mut head = core::mem::replace(&mut tcr.stash[bin], core::ptr::null_mut());
    let from_inbox = head.is_null();
    if from_inbox {
        head = sh.inbox.take(bin);
    }
    let n;
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
        // The inbox and the stash hold carrier lists (`remote::unpack`).
        // Whole carriers are unpacked until half a bin (plus the block
        // returned) is linked, on this thread's side; the rest stays in
        // carrier form, unread, in the stash for the next refills (each
        // block is touched once, when a refill takes it, as the program is
        // about to use it). Not more than half a bin (and at most one
        // carrier more, see `remote_batch_fits_a_refill`), so the thread's
        // own frees do not overflow the bin at once (that would grow its
        // threshold). Through the central each block would cost a give and
        // a take under the shard lock, and its run might be released and
        // carved again (a medium run purged and faulted in again). A small
        // class's stash holds at most `STASH_SMALL_BYTES` when it is filled
        // from the inbox; the rest goes to the central (measured: an uncapped
        // stash of 128 classes raised mt_remote's peak RSS 19%: blocks idle
        // beside the bins whose runs the central would release for other
        // classes). The heartbeat gives the stash of a class the thread
        // stopped refilling to the central.
        let keep = tcr.max(bin) / 2 + 1;
        let cap = remote::carrier_cap(bin);
        let mut mine = Chain::EMPTY;
        // SAFETY: `unpack` hands each block of the list below to us once: a
        // free block of `bin` nothing else references.
        let put = |b: *mut u8| unsafe { mine.push_back::<C>(b) };
        // SAFETY: `head` is a carrier list of free blocks of `bin` owned by
        // shard `si`, detached from the stash or (whole) from the inbox: this
        // thread's alone; `put` links each block it visits once.
        let (rest, _) = unsafe { remote::unpack::<C>(head, cap, keep, put) };
        shard::walks::add(mine.n as u64);
        if from_inbox && !rest.is_null() && BINS[bin].blocks != 1 {
            let stash_max = (STASH_SMALL_BYTES / BINS[bin].size).max(2);
            // SAFETY: `rest` is the untouched rest of that list.
            let (over, kept) = unsafe { remote::split_carriers::<C>(rest, cap, stash_max) };
            shard::walks::add(kept as u64);
            if !over.is_null() {
                let mut more = Chain::EMPTY;
                // SAFETY: as `put`.
                let put = |b: *mut u8| unsafe { more.push_back::<C>(b) };
                // SAFETY: `over` is the cut-off rest of that list.
                unsafe { remote::unpack::<C>(over, cap, u32::MAX, put) };
                shard::walks::add(more.n as u64);
                // SAFETY: `more` holds free blocks of `bin` owned by shard `si`.
                unsafe { shard::give_chain::<C>(st, si, bin, more) };
            }
        }
        tcr.stash[bin] = rest;
        head = mine.head;
        n = mine.n;
    }
    if head.is_null() {
        return (head, false);
    }
    // The returned block is an allocation that never enters the bin; the
    // rest is counted in (see `StatsSnapshot::allocs`).
    tcr.count::<C>(Ctr::Allocs);
    tcr.add::<C>(Ctr::CacheIn, n as u64 - 1);
    // SAFETY: `head` is the first block of the `n` just taken, a free block
    // of `bin` this thread alone holds.
    tcr.bins[bin].head = unsafe { next_of::<C>(head) };
    // The classes cached by bytes take one block per refill (batch 1, and
    // their remote frees come one block per carrier: `remote::publish_now`),
    // so a refill never puts one of them into the bin past the budget.
    debug_assert!(n == 1 || bin < BUDGET_FIRST);
    tcr.set_cached(bin, n - 1);
    // SAFETY: `tc` is this thread's live cache; bin `bin` now holds the
    // refilled blocks after `head`.
    unsafe { crate::harden::admit_refill::<C>(tc, bin, head) };
    (head, false)
}

/// Bytes of blocks a small class's stash holds at most after a refill from
/// the inbox; the rest goes to the central (see `refill_from`). Measured (mt_remote, 4 threads,
/// 16–2048 B, R=50%): peak RSS 30.7 MiB with no small-class stash, 36.3
/// MiB uncapped (blocks of 128 classes idle beside the bins, where the
/// central would have released their runs for other classes), 32.2 MiB at
/// 16 KiB; callgrind instructions per op of a 16–256 B producer/consumer
/// pair 140 (no stash), 96 (uncapped), 118 (16 KiB).
pub const STASH_SMALL_BYTES: u32 = 16 << 10;

/// Every `HEARTBEAT_REFILLS` refills: give the blocks of bins this thread
/// has not refilled since the last heartbeat — its stash, fresh run and the
/// shard's inbox bin — to the central, where empty runs are released (and
/// purged) for any class and thread. Bounded: one look per bin, and one walk
/// and one give per block handed back. (A thread that stops allocating a
/// class would otherwise keep what other threads freed for it.) It also
/// publishes the thread's buffered remote frees: a slot publishes itself
/// when its batch is full, and the heartbeat bounds how long a part-full one
/// waits (publishing them at every refill, as before, made batches average
/// under two blocks in a thread that both allocates and frees remotely).
///
/// # Safety
/// `tcr` is the calling thread's live cache.
#[cold]
unsafe fn heartbeat<C: Config>(st: &State<C>, tcr: &mut ThreadCache) {
    tcr.beat = 0;
    if tcr.remote.pending != 0 {
        // SAFETY: the buffer is this thread's and holds only blocks it freed.
        unsafe { remote::publish_all::<C>(st, &mut tcr.remote, &tcr.ctr) };
    }
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
        shard::purge_parked(st, false);
    }
}

/// A bin over-filled by the thread's own frees: raise its threshold while
/// below the limit; otherwise move blocks back to the shard central until it
/// is half full. (Inbox drains never over-fill a bin: see `refill`.) A bin
/// of the classes cached by bytes keeps its blocks while they fit the budget
/// (`ThreadCache::within_budget`), and is emptied otherwise.
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
    if tcr.within_budget(bin) {
        return;
    }
    let limit = BINS[bin].max_limit as u32;
    if tcr.max(bin) < limit {
        tcr.set_max(bin, (tcr.max(bin) * 2).min(limit));
        if tcr.cached(bin) <= tcr.max(bin) {
            return;
        }
    }
    tcr.count::<C>(Ctr::Flushes);
    let n = tcr.cached(bin) - tcr.max(bin) / 2;
    tcr.add::<C>(Ctr::CacheOut, n as u64);
    // SAFETY: `tcr` is this thread's cache and the bin holds `cached() > n` blocks.
    unsafe { give_front::<C>(st, tcr, bin, n) };
}

/// Give the first `n` blocks of bin `bin` — the most recently freed first:
/// `freed`, then `head` — back to their runs, under one take of the shard
/// lock. Each of them is visited once, by the give itself (its link read,
/// then rewritten onto its run's list); the blocks that stay in the bin are
/// not read at all. (Cutting the chain off first walked the whole `freed`
/// list to its end and the `n` blocks again before the give's own walk:
/// measured 58 instructions and 2.6 simulated L1 misses per flushed block
/// on `live_build_free_random`, where the bin then held 1024 blocks.)
///
/// # Safety
/// `tcr` is the calling thread's cache (its lists hold free blocks of `bin`
/// owned by its shard, linked by this thread only) and `n <= tcr.cached(bin)`.
unsafe fn give_front<C: Config>(st: &State<C>, tcr: &mut ThreadCache, bin: usize, n: u32) {
    let si = tcr.shard as usize;
    let mut cen = shard::shard(st, si).lock();
    let b = &mut tcr.bins[bin];
    let mut left = n;
    for list in [&mut b.freed, &mut b.head] {
        if left == 0 {
            break;
        }
        // SAFETY: `cen` is shard `si`'s locked central; the list holds free
        // blocks of `bin` owned by shard `si`, which `take` handed out, and
        // the bin's lists are this thread's alone; what is given is cut off
        // the list by storing the rest as its new start.
        let (rest, given) = unsafe { shard::give_list::<C>(st, si, &mut cen, bin, *list, left) };
        *list = rest;
        left -= given;
    }
    drop(cen);
    shard::walks::add((n - left) as u64);
    tcr.set_cached(bin, tcr.cached(bin) - (n - left));
}

/// Give all but the first `keep` blocks of bin `bin` (the most recently freed
/// first: `freed`, then `head`) back to their runs, under one take of the
/// shard lock: the older blocks, whose runs the central may then release, go;
/// the ones the thread touched last stay. The kept blocks are walked once to
/// find the cut; the given ones are visited once, by [`shard::give_list`].
/// Returns how many were given.
///
/// # Safety
/// `tcr` is the calling thread's cache (its lists hold free blocks of `bin`
/// owned by its shard, linked by this thread only).
unsafe fn give_back<C: Config>(st: &State<C>, tcr: &mut ThreadCache, bin: usize, keep: u32) -> u32 {
    let si = tcr.shard as usize;
    let mut cen = shard::shard(st, si).lock();
    let b = &mut tcr.bins[bin];
    let mut left = keep;
    let mut given = 0;
    for list in [&mut b.freed, &mut b.head] {
        let mut rest = *list;
        if left > 0 && !rest.is_null() {
            // Walk to the last kept block of this list (or its end).
            let mut last = rest;
            left -= 1;
            // SAFETY: `last` is a block of the bin's list (contract).
            rest = unsafe { next_of::<C>(last) };
            while left > 0 && !rest.is_null() {
                last = rest;
                left -= 1;
                // SAFETY: as above.
                rest = unsafe { next_of::<C>(last) };
            }
            if !rest.is_null() {
                // SAFETY: `last` is this thread's block of the list: its link is ours to cut.
                unsafe { set_next::<C>(last, core::ptr::null_mut()) };
            }
        } else {
            *list = core::ptr::null_mut();
        }
        if !rest.is_null() {
            // SAFETY: `cen` is shard `si`'s locked central; `rest` is a
            // null-terminated list of free blocks of `bin` owned by shard
            // `si`, cut off the bin above.
            let (_, n) = unsafe { shard::give_list::<C>(st, si, &mut cen, bin, rest, u32::MAX) };
            given += n;
        }
    }
    drop(cen);
    shard::walks::add(given as u64);
    tcr.set_cached(bin, tcr.cached(bin) - given);
    given
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
        let n = tcr.cached(bin);
        if n > 0 {
            tcr.add::<C>(Ctr::CacheOut, n as u64);
            // SAFETY: `tcr` is the exiting thread's cache and `n` is bin
            // `bin`'s cached count.
            unsafe { give_front::<C>(st, tcr, bin, n) };
        }
    }
}

/// Bytes of blocks each bin of a cache parked with its shard keeps (see
/// [`shed_for_park`]), and one block at least: 16 KiB is 1,024 blocks of 16
/// bytes, 16 of 1 KiB, 4 of 4 KiB, one of each class above 16 KiB.
pub const PARK_BIN_BYTES: u32 = 16 << 10;

/// Before a cache is parked with its shard (the exit of the shard's last
/// thread, see `shard::leave`): give each bin's blocks beyond `bin_bytes`
/// bytes of them ([`PARK_BIN_BYTES`]), one block at least, to the central,
/// and the stash of the classes of whole pages. The next thread on the
/// shard allocates what is kept without a refill; what it is unlikely to use
/// (the older tail of a bin its threshold grew for) goes back, where empty
/// runs are released for any class. The one block kept of each class above
/// 16 KiB (a whole run of 5 to 254 pages, at most ~1.9 MiB for all of them
/// up to 256 KiB, and the classes above within the cache's byte budget) is
/// there for the next thread's first block of the class: given back, its
/// run was released, purged at the exit, and faulted in again by the next
/// thread (threads re-created in waves, each holding 2,000 blocks of 16
/// B–1 KiB and 1% up to 100 KiB, faulted in ~26,000 pages a run of 660
/// threads, ~19,000 with one block kept). Bounded: one look per bin and one
/// give per block handed back (the bins' thresholds bound them).
///
/// # Safety
/// `tc` is the exiting thread's cache, its remote frees published.
pub unsafe fn shed_for_park<C: Config>(tc: *mut ThreadCache, bin_bytes: u32) {
    let st = C::state();
    // SAFETY: `tc` is the exiting thread's cache (caller's contract): no
    // other reference to it exists while this call runs.
    let tcr = unsafe { &mut *tc };
    for (bin, info) in BINS.iter().enumerate() {
        let size = info.size;
        if size as usize >= crate::os::PAGE_SIZE {
            // SAFETY: `tcr` is the exiting thread's cache.
            unsafe { give_stash::<C>(st, tcr, bin) };
        }
        let n = tcr.cached(bin);
        let keep = (bin_bytes / size).max(1);
        if n > keep {
            // SAFETY: `tcr` is the exiting thread's cache.
            let given = unsafe { give_back::<C>(st, tcr, bin, keep) };
            tcr.add::<C>(Ctr::CacheOut, given as u64);
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
        let mut chain = Chain::EMPTY;
        // SAFETY: `unpack` hands each block of the list below to us once: a
        // free block of `bin` nothing else references.
        let put = |b: *mut u8| unsafe { chain.push_back::<C>(b) };
        // SAFETY: the stash is a carrier list of free blocks of `bin` owned
        // by the cache's shard, now detached.
        unsafe { remote::unpack::<C>(head, remote::carrier_cap(bin), u32::MAX, put) };
        shard::walks::add(chain.n as u64);
        // SAFETY: the chain holds those blocks.
        unsafe { shard::give_chain::<C>(st, tcr.shard as usize, bin, chain) };
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
    // SAFETY: the guard is `sh`'s locked central, `sh` shard `si` of `st`.
    unsafe { shard::trim(st, sh, &mut sh.lock()) };
}
