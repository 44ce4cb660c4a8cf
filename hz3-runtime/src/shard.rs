//! Owner shards: the central structures behind the thread caches.
//!
//! Owns: per-(shard, bin) lists of partial runs with per-run free lists (the
//! only place that knows how many blocks of a run are out), carving new runs
//! from the shard's segments, releasing empty runs and segments, and the
//! lock-free per-(shard, bin) inbox that remote frees are published to.
//! Runs carved from pages that read as zero are marked (`ZERO_RUN`) so zeroed
//! allocations can take their untouched ends (`take_zero_tail`). Dirty free
//! pages are carved first (warm reuse) and purged when they have stayed
//! above a threshold for the purge delay (half of them at a time, long
//! stretches first), or when the shard's last thread leaves beyond a small
//! parked reserve, which goes after the delay or with the type's last thread.
//! The shard's last thread parks its thread cache with the shard ([`leave`]);
//! the next thread to take the shard adopts it, bins intact
//! ([`take_parked_cache`]); [`purge_parked`] empties it after the delay.
//! Must never: be entered on the hot path; every function here except the inbox
//! push and take (and the parked-cache take, which locks) runs under the shard
//! lock (the parked-shard purges take each lock in turn), and takes the lock's guard (the
//! central, reachable only through [`Shard::lock`]) as the proof. The shard's
//! segment headers are written by the same lock holder (`SegHdr::runs`,
//! `PageDesc::run`).
//!
//! Block accounting: a run's `used` counts blocks outside the central (in thread
//! caches, inboxes, remote buffers, or live in the program). A run whose `used`
//! drops to zero is released unless it is the bin's only partial run.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arena::{HugeAdvice, SEG_SIZE};
use crate::large::LARGE_CACHE_SLOTS;
use crate::os::PAGE_SIZE;
use crate::segment::{self, SegHdr, SegRuns, IN_PARTIAL, USABLE_PAGES, ZERO_RUN};
use crate::size_class::{run_align, BINS, BUDGET_FIRST, CACHE_BUDGET_BYTES, NBINS};
use crate::sync::{SpinGuard, SpinLock, SpinMutex};
use crate::{tagmap, Config, State};

/// A singly linked chain of free blocks (link in the first word of each block).
#[derive(Clone, Copy)]
pub struct Chain {
    /// First block (null when empty).
    pub head: *mut u8,
    /// Last block.
    pub tail: *mut u8,
    /// Number of blocks.
    pub n: u32,
}

impl Chain {
    /// The empty chain.
    pub const EMPTY: Chain = Chain { head: core::ptr::null_mut(), tail: core::ptr::null_mut(), n: 0 };

    /// Append `b` (its link is overwritten).
    ///
    /// # Safety
    /// `b` is a free block of at least 8 bytes that nothing else references.
    #[inline]
    pub unsafe fn push_back<C: Config>(&mut self, b: *mut u8) {
        // SAFETY: `b` is a free block nothing else references (contract).
        unsafe { set_next::<C>(b, core::ptr::null_mut()) };
        if self.head.is_null() {
            self.head = b;
        } else {
            // SAFETY: the chain is non-empty, so `tail` is one of its blocks,
            // free and held by the chain's owner alone.
            unsafe { set_next::<C>(self.tail, b) };
        }
        self.tail = b;
        self.n += 1;
    }

    /// Append the `k` blocks linked from `first` to `last` (`last`'s link
    /// is overwritten with null).
    ///
    /// # Safety
    /// `first..=last` is a list of `k >= 1` free blocks, linked by
    /// [`set_next`], that nothing else references.
    #[inline]
    pub unsafe fn append<C: Config>(&mut self, first: *mut u8, last: *mut u8, k: u32) {
        // SAFETY: `last` is a free block nothing else references (contract).
        unsafe { set_next::<C>(last, core::ptr::null_mut()) };
        if self.head.is_null() {
            self.head = first;
        } else {
            // SAFETY: the chain is non-empty, so `tail` is one of its blocks,
            // free and held by the chain's owner alone.
            unsafe { set_next::<C>(self.tail, first) };
        }
        self.tail = last;
        self.n += k;
    }
}

/// Link-walk steps taken by this thread on the refill, flush and drain paths,
/// and stretches spliced onto runs by `give_list` (tests only: they check
/// that a block costs a bounded number of steps whatever the length of the
/// chain it arrived in, and that blocks freed run by run go back a stretch
/// at a time).
pub mod walks {
    #[cfg(test)]
    extern crate std;
    #[cfg(test)]
    std::thread_local! {
        static STEPS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
        static SPLICES: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    }

    /// Count `n` steps (compiled out outside tests).
    #[inline(always)]
    pub fn add(n: u64) {
        #[cfg(test)]
        STEPS.with(|c| c.set(c.get() + n));
        let _ = n;
    }

    /// Steps counted on this thread so far.
    #[cfg(test)]
    pub fn get() -> u64 {
        STEPS.with(|c| c.get())
    }

    /// Count one stretch of blocks spliced onto a run's free list (compiled
    /// out outside tests).
    #[inline(always)]
    pub fn splice() {
        #[cfg(test)]
        SPLICES.with(|c| c.set(c.get() + 1));
    }

    /// Splices counted on this thread so far.
    #[cfg(test)]
    pub fn splices() -> u64 {
        SPLICES.with(|c| c.get())
    }
}

/// Read the link of a free block. With `harden` the stored word is decoded
/// with the type's key and the result checked (null, or an aligned arena
/// address; else abort); without it this is one load.
///
/// # Safety
/// `b` is a free block whose first word holds a link written by [`set_next`].
#[inline(always)]
pub unsafe fn next_of<C: Config>(b: *mut u8) -> *mut u8 {
    if C::HARDEN {
        // SAFETY: `b` is a free block whose first word holds its link (contract).
        let next = crate::harden::decode::<C>(b, unsafe { *(b as *mut usize) });
        crate::harden::check_link::<C>(b, next);
        next
    } else {
        // SAFETY: `b` is a free block whose first word holds its link (contract).
        unsafe { *(b as *mut *mut u8) }
    }
}

/// Write the link of a free block (encoded with the type's key under `harden`).
///
/// # Safety
/// `b` is a free block owned by the caller.
#[inline(always)]
pub unsafe fn set_next<C: Config>(b: *mut u8, next: *mut u8) {
    if C::HARDEN {
        // SAFETY: `b` is a free block owned by the caller (contract): its
        // first word is the caller's to write.
        unsafe { *(b as *mut usize) = crate::harden::encode::<C>(b, next) };
    } else {
        // SAFETY: as above.
        unsafe { *(b as *mut *mut u8) = next };
    }
}

/// Lock-protected part of a shard: reachable only through its guard
/// ([`Shard::lock`]), which the functions here take as the proof that the
/// lock is held.
pub struct Central {
    /// Head of each bin's partial-run list (global page id, 0 = empty).
    partial: [u32; NBINS],
    /// Head of the list of this shard's segments with free pages (slot + 1).
    segs: u32,
    /// Segments this shard owns.
    nsegs: u32,
    /// Free pages of this shard's segments still resident (purge candidates).
    dirty: u32,
    /// Empty runs kept on each bin's partial list (`used == 0`).
    empty: [u16; NBINS],
    /// When `dirty` was first seen above `PURGE_THRESHOLD_PAGES` (ms, never
    /// 0) since it last was at or below it, or 0.
    dirty_since: u64,
}

/// A shard purges half of its dirty free pages (down to half this many at
/// least) once they have stayed above this many (4 MiB) for
/// `arena::PURGE_DELAY_MS` (checked when runs are released and at the
/// owner's heartbeat), or at once beyond `PURGE_CAP_PAGES`: a program that
/// frees in bulk and allocates as much again reuses warm pages, and pages
/// left unused decay away, half per delay.
pub const PURGE_THRESHOLD_PAGES: u32 = 1024;
/// A long run (a class above 256 KiB) released while the shard keeps this
/// many dirty pages (8 MiB) is purged at once (see `release_run`). Measured
/// in `reliability_purge`'s thread waves (later waves' peak RSS; main with
/// those blocks in arena slots: 50-53 MiB): 56-58 MiB without it, 55-57 at
/// 8 MiB, 43-49 at 4 MiB; and CPU time of calloc_large against main: +5%,
/// +4%, +10% (each purged run is faulted in again when reused).
pub const LONG_RUN_PURGE_PAGES: u32 = 2 * PURGE_THRESHOLD_PAGES;
/// Dirty free pages a shard keeps at most (128 MiB); beyond it, it purges at
/// once down to half of them, `PURGE_CAP_PAGES / 2` at most. A program that
/// frees a big heap in random order and allocates as much again (a million
/// 16-128 B blocks, `live_build_free_random`) has most of its pages free
/// before its segments empty: with a 64 MiB cap the shard purged about half
/// of a 70 MiB free, which the next build faulted in again (18,200 faults a
/// run against 9,900 at 128 MiB, 12% of the row's time). Pages the program
/// does not take again still go by the time rule (half per delay, at the
/// owner's next release or heartbeat). Peak RSS of `aligned_many` (freed
/// aligned runs touched in one page of several): 150 MiB with a 64 MiB cap,
/// 155 at 128, 161 at 192, 183 without a cap.
pub const PURGE_CAP_PAGES: u32 = 32768;
/// Dirty free pages a shard whose last thread left keeps for the next
/// thread (512 KiB), for at most `arena::PURGE_DELAY_MS`; the rest is purged
/// when it is parked.
pub const PARK_KEEP_PAGES: u32 = 128;
/// Free pages a shard parked warm keeps at most (1 MiB; see [`leave`]),
/// for the next thread that takes it or, if none does, for
/// `arena::PURGE_DELAY_MS`. Measured on `churn_thread_waves` (waves of 4
/// threads of ~1 MiB each; `hz3-bench run`, 3 x 5 runs, jemalloc's peak RSS
/// 13.8-14.3 MiB beside): keeping 128 pages less those that stayed unused
/// through the leaving thread's whole life, 29.4-29.9 Mops/s and 14.6-15.1
/// MiB; keeping up to 256 pages whatever their age, 33.3-34.9 Mops/s and
/// 15.6-16.0 MiB; up to 384, 34.6-37.0 and 16.1-16.9 MiB. With at most
/// [`PARK_WARM_SHARDS`] warm parks, 1 MiB more than 128 pages at most.
pub const PARK_WARM_PAGES: u32 = 256;
/// Pages above the keep a park purges at least (fewer are not worth the
/// system call; see [`leave`]).
pub const PARK_PURGE_MIN_PAGES: u32 = 16;
/// Free stretches of at least this many pages are purged first.
const PURGE_LONG_STRETCH: usize = 8;
/// Freed segments (with large blocks' slots) the arena keeps resident at
/// most, each for `arena::PURGE_DELAY_MS` (192 MiB): a program that frees
/// that much in bulk and allocates as much again within the delay (phases,
/// bulk frees by another thread) reuses warm pages instead of faulting in
/// new ones. It never raises the peak: the memory was in use just before.
pub const SEG_DIRTY_CAP: usize = 192;
const _: () = assert!(SEG_DIRTY_CAP < crate::arena::PURGE_QUEUE);

/// One owner shard.
#[repr(C, align(64))]
pub struct Shard {
    /// Live threads holding this shard.
    pub live: AtomicU32,
    /// When the shard's last thread left while other threads lived on (ms,
    /// never 0), its dirty pages kept resident for the next thread; 0 = none
    /// waiting (see [`purge_parked`]). Written under the lock.
    parked_at: AtomicU64,
    /// The thread cache the shard's last thread left with it (a
    /// `*mut ThreadCache`, 0 = none): bins, stash and fresh runs intact, for
    /// the next thread that takes the shard ([`take_parked_cache`]), or
    /// emptied by [`purge_parked`] after the purge delay. Written under the lock.
    parked_cache: AtomicUsize,
    /// Whether the parked cache holds one of the warm parks (see [`leave`]).
    /// Written under the lock.
    parked_warm: AtomicBool,
    /// The central, behind the shard lock.
    central: SpinMutex<Central>,
    /// Remote frees per bin, pushed lock-free by any thread, drained by a holder.
    pub inbox: Inbox,
}

/// The inbox heads, on their own cache lines (written by other threads).
#[repr(C, align(64))]
pub struct Inbox {
    bins: [InboxBin; NBINS],
}

/// One bin of an inbox: its head and, on the same cache line (which a
/// publish already holds for its CAS), the count hint and long-since stamp.
#[repr(C)]
struct InboxBin {
    head: AtomicPtr<u8>,
    /// Blocks published since the bin was last taken (a hint: a publish
    /// racing a take may be counted on either side of it).
    count: AtomicU32,
    /// When the bin was first seen holding more than
    /// `remote::INBOX_LONG_BYTES` (ms, never 0), or 0.
    since: AtomicU64,
}

impl Inbox {
    /// Publish `chain` (non-empty) for `bin`: one CAS splices the whole chain.
    /// Returns the blocks now counted in the bin (a hint).
    ///
    /// # Safety
    /// The chain's blocks belong to this shard's runs of `bin` and to nobody else.
    pub unsafe fn push<C: Config>(&self, bin: usize, chain: Chain) -> u32 {
        let head = &self.bins[bin].head;
        let mut old = head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the chain's blocks are ours alone until the CAS below
            // publishes them (contract), so its tail's link is ours to write.
            unsafe { set_next::<C>(chain.tail, old) };
            // Release: the links written above are visible to the drainer.
            // SeqCst: the publisher's re-check of the shard's `live` count
            // after this push relies on it (see `thread::publish_to_inbox`;
            // on x86 the same locked instruction as a release CAS).
            match head.compare_exchange_weak(old, chain.head, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(cur) => old = cur,
            }
        }
        // Relaxed: the count is only a hint for when to collect.
        self.bins[bin].count.fetch_add(chain.n, Ordering::Relaxed).wrapping_add(chain.n)
    }

    /// Take everything published for `bin`: a carrier list
    /// (`remote::unpack`), null when nothing.
    #[inline]
    pub fn take(&self, bin: usize) -> *mut u8 {
        let b = &self.bins[bin];
        // SeqCst: the last thread leaving the shard drains it after its
        // SeqCst `live` decrement, and a publisher's SeqCst push must then
        // be seen here (see `thread::publish_to_inbox`; on x86 a plain load).
        if b.head.load(Ordering::SeqCst).is_null() {
            return core::ptr::null_mut();
        }
        // Acquire pairs with the publisher's release: the links are visible.
        let head = b.head.swap(core::ptr::null_mut(), Ordering::SeqCst);
        b.count.store(0, Ordering::Relaxed);
        if b.since.load(Ordering::Relaxed) != 0 {
            b.since.store(0, Ordering::Relaxed);
        }
        head
    }

    /// Whether the bin holds anything (relaxed peek).
    #[inline]
    pub fn is_empty(&self, bin: usize) -> bool {
        self.bins[bin].head.load(Ordering::Relaxed).is_null()
    }

    /// When the bin was first seen long (0: not long).
    #[inline]
    pub fn long_since(&self, bin: usize) -> u64 {
        self.bins[bin].since.load(Ordering::Relaxed)
    }

    /// Record that the bin was seen long at `now` unless already recorded;
    /// returns the recorded time.
    pub fn mark_long(&self, bin: usize, now: u64) -> u64 {
        let now = now.max(1);
        match self.bins[bin].since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => now,
            Err(t) => t,
        }
    }
}

/// Shard `i` of a type (the array is mapped at init, zero = valid empty shard).
#[inline(always)]
pub fn shard<C: Config>(st: &State<C>, i: usize) -> &'static Shard {
    // SAFETY: `shards` points at `C::SHARDS` zero-initialised `Shard`s mapped at
    // init and never unmapped; callers pass `i < C::SHARDS`.
    unsafe { &*(st.shards.load(Ordering::Relaxed) as *const Shard).add(i) }
}

/// A locked central: the shard lock is held while it lives.
pub type CentralGuard<'a> = SpinGuard<'a, Central>;

impl Shard {
    /// Take the shard lock; the central is reachable through the guard.
    #[inline]
    pub fn lock(&self) -> CentralGuard<'_> {
        self.central.lock()
    }

    /// The bare lock, for the `fork()` handlers only (see [`SpinMutex::raw_lock`]).
    pub fn raw_lock(&self) -> &SpinLock {
        self.central.raw_lock()
    }
}

/// Take up to `want` blocks of `bin` from shard `si`'s central, carving new runs
/// when no partial run is left. Fewer (possibly none) only when out of memory.
///
/// # Safety
/// `cen` is shard `si`'s central, locked (the guard of `shard(st, si).lock()`).
pub unsafe fn take<C: Config>(st: &State<C>, si: usize, cen: &mut Central, bin: usize, want: u32) -> Chain {
    let base = st.arena.base.load(Ordering::Relaxed);
    let info = BINS[bin];
    let size = info.size as usize;
    let mut chain = Chain::EMPTY;
    while chain.n < want {
        let mut id = cen.partial[bin];
        if id == 0 && info.blocks == 1 {
            // A one-block run (every class from 4 KiB up) is handed out whole
            // as it is carved: it never goes on the partial list, so it is
            // not linked there only to be unlinked at once.
            // SAFETY: the caller holds shard `si`'s lock and `cen` is its central.
            let Some(new_id) = (unsafe { carve_run(st, si, cen, bin, false, true) }) else { break };
            let (seg, pi) = segment::from_page_id(base, new_id);
            // SAFETY: the run was just carved in a committed segment of this
            // shard, whose lock is held: its state is ours to write.
            let d = unsafe { SegHdr::of(seg).descs[pi].run() };
            d.bump = 1;
            d.used = 1;
            let b = (seg + pi * PAGE_SIZE) as *mut u8;
            // SAFETY: the run's one block was never handed out: free, ours.
            unsafe { chain.append::<C>(b, b, 1) };
            continue;
        }
        if id == 0 {
            // SAFETY: the caller holds shard `si`'s lock and `cen` is its central.
            match unsafe { carve_run(st, si, cen, bin, true, true) } {
                Some(new_id) => id = new_id,
                None => break,
            }
        }
        let (seg, pi) = segment::from_page_id(base, id);
        // SAFETY: partial-list ids name runs of committed segments of this
        // shard, whose lock is held: the run's state is ours to write.
        let d = unsafe { SegHdr::of(seg).descs[pi].run() };
        if d.used == 0 && d.bump != 0 {
            // A kept empty run goes back into use (fresh runs have bump == 0).
            cen.empty[bin] -= 1;
        }
        if chain.n < want && d.free_head != 0 {
            // The run's free list is spliced on: its first blocks are
            // already linked, so each costs one link read (to find where
            // to cut), not a read and two writes.
            let first = (seg + d.free_head as usize) as *mut u8;
            let mut last = first;
            let mut k = 1;
            // SAFETY: `last` is on the run's free list (free blocks whose
            // links only the lock holder touches).
            let mut next = unsafe { next_of::<C>(last) };
            while chain.n + k < want && !next.is_null() {
                last = next;
                k += 1;
                // SAFETY: as above.
                next = unsafe { next_of::<C>(last) };
            }
            d.free_head = if next.is_null() { 0 } else { (next as usize - seg) as u32 };
            d.used += k as u16;
            // SAFETY: `first..=last` is now off the run's list: free blocks
            // nothing else references.
            unsafe { chain.append::<C>(first, last, k) };
        }
        let run = seg + pi * PAGE_SIZE;
        if chain.n < want && d.bump < info.blocks {
            // Blocks never handed out, linked in address order: one write each.
            let k = (want - chain.n).min((info.blocks - d.bump) as u32);
            let first = run + d.bump as usize * size;
            let last = first + (k as usize - 1) * size;
            let mut b = first;
            while b < last {
                // SAFETY: blocks `bump..bump + k` of the run were never
                // handed out (`bump + k <= blocks`): free, nobody's but ours.
                unsafe { set_next::<C>(b as *mut u8, (b + size) as *mut u8) };
                b += size;
            }
            d.bump += k as u16;
            d.used += k as u16;
            // SAFETY: as above; `first..=last` are linked in order.
            unsafe { chain.append::<C>(first as *mut u8, last as *mut u8, k) };
        }
        if d.used == info.blocks {
            // SAFETY: `cen` is the central of shard `si` (lock held) and `id`
            // is on its partial list of `bin`.
            unsafe { unlink_partial(cen, base, bin, id) };
        }
    }
    chain
}

/// Return the blocks of `chain` (all of `bin`, all owned by shard `si`) to their
/// runs; release runs that became empty.
///
/// # Safety
/// `cen` is shard `si`'s central, locked (the guard of `shard(st, si).lock()`); the blocks are free and were handed out by `take`.
pub unsafe fn give<C: Config>(st: &State<C>, si: usize, cen: &mut Central, bin: usize, chain: Chain) {
    // SAFETY: the chain's first `n` blocks are such blocks (contract).
    unsafe { give_list(st, si, cen, bin, chain.head, chain.n) };
}

/// Return the first `n` blocks of the list at `head` (fewer when it ends
/// before) to their runs, releasing runs that became empty; returns the rest
/// of the list (the block after the last one given, or null) and how many
/// were given. The list is taken in stretches of consecutive blocks of one
/// run, each spliced onto its run's free list whole: its blocks' links
/// already chain them, so a block costs one link read and one address test,
/// and only a stretch's last block is written (a stretch is as long as the
/// program freed a run's blocks one after another: a tree dropped as it was
/// built, blocks freed in allocation order). A run's descriptor is read and
/// written once per stretch, and looked at again only when the run leaves
/// the full state or becomes empty (`run_gained`). No walk to cut the list
/// first: a flush reads only the blocks it gives.
///
/// # Safety
/// `cen` is shard `si`'s central, locked; the list's first `n` blocks (or
/// all of it) are free blocks of `bin` handed out by `take`, linked by
/// [`set_next`], and the caller's alone.
pub unsafe fn give_list<C: Config>(st: &State<C>, si: usize, cen: &mut Central, bin: usize, head: *mut u8, n: u32) -> (*mut u8, u32) {
    let base = st.arena.base.load(Ordering::Relaxed);
    // A shard with no thread keeps nothing in reserve.
    let keep = shard(st, si).live.load(Ordering::Relaxed) > 0;
    // A one-page run starts at the block's own page (no `run_start` load).
    let multi_page = BINS[bin].run_pages > 1;
    let run_bytes = BINS[bin].run_pages as usize * PAGE_SIZE;
    // Splice the stretch `first..=last` of `k` blocks of the run at page
    // `rs` of `seg` onto that run's free list.
    let splice = |cen: &mut Central, seg: usize, rs: usize, first: *mut u8, last: *mut u8, k: u32| {
        // SAFETY: the stretch's blocks came from `take`, so `seg` is a
        // committed runs segment of shard `si`, whose lock is held: the
        // run's state is ours to write.
        let d = unsafe { SegHdr::of(seg).descs[rs].run() };
        // SAFETY: `last` is one of the list's first `n` blocks, free and the
        // caller's alone (contract): its link is ours to rewrite.
        unsafe {
            set_next::<C>(last, if d.free_head == 0 { core::ptr::null_mut() } else { (seg + d.free_head as usize) as *mut u8 })
        };
        d.free_head = (first as usize - seg) as u32;
        d.used -= k as u16;
        walks::splice();
        if d.flags & IN_PARTIAL == 0 || d.used == 0 {
            // SAFETY: lock held; the run at `rs` of `seg` belongs to this shard.
            unsafe { run_gained(st, cen, base, bin, seg, rs, keep) };
        }
    };
    // The pending stretch: `k` blocks from `first` to `last`, of the run at
    // page `rs` of `seg`, which starts at `run` (none yet: no block lies
    // within `run_bytes` of address 0).
    let (mut seg, mut rs, mut run, mut first, mut last, mut k) = (0usize, 0usize, 0usize, head, head, 0u32);
    let mut b = head;
    let mut given = 0;
    while given < n && !b.is_null() {
        // SAFETY: `b` is one of the list's first `n` blocks: free, handed
        // out by `take` and now the caller's alone (contract).
        let next = unsafe { next_of::<C>(b) };
        if (b as usize).wrapping_sub(run) >= run_bytes {
            if k != 0 {
                splice(cen, seg, rs, first, last, k);
            }
            seg = segment::seg_base(b as usize);
            let pi = segment::page_index(b as usize);
            rs = if multi_page {
                // SAFETY: `b` came from `take`: `seg` is a committed runs
                // segment, whose descriptors stay mapped.
                unsafe { SegHdr::of(seg) }.descs[pi].run_start.load(Ordering::Relaxed) as usize
            } else {
                pi
            };
            run = seg + rs * PAGE_SIZE;
            first = b;
            k = 0;
        }
        last = b;
        k += 1;
        b = next;
        given += 1;
    }
    if k != 0 {
        splice(cen, seg, rs, first, last, k);
    }
    (b, given)
}

/// Give a chain of blocks of shard `si` back to its central (takes the lock).
///
/// # Safety
/// The blocks are free blocks of `bin` owned by shard `si`.
pub unsafe fn give_chain<C: Config>(st: &State<C>, si: usize, bin: usize, chain: Chain) {
    if chain.n == 0 {
        return;
    }
    let mut cen = shard(st, si).lock();
    // SAFETY: `cen` is shard `si`'s locked central; the blocks are free
    // blocks of `bin` owned by shard `si` (contract), so `take` handed them out.
    unsafe { give(st, si, &mut cen, bin, chain) };
}

/// Give everything published to shard `si`'s inbox bin `bin` to its central
/// (takes the lock): one unpacking step and one give per block.
///
/// # Safety
/// The state is initialised and `si` is one of its shards.
pub unsafe fn give_inbox<C: Config>(st: &State<C>, si: usize, bin: usize) {
    let head = shard(st, si).inbox.take(bin);
    if !head.is_null() {
        let mut chain = Chain::EMPTY;
        // SAFETY: `unpack` hands each block of the list below to us once: a
        // free block of `bin` nothing else references.
        let put = |b: *mut u8| unsafe { chain.push_back::<C>(b) };
        // SAFETY: the taken list is a whole inbox list of shard `si`: a
        // carrier list of free blocks of `bin` it owns, now ours alone; `put`
        // links each block once into `chain`.
        unsafe { crate::remote::unpack::<C>(head, crate::remote::carrier_cap(bin), u32::MAX, put) };
        walks::add(chain.n as u64);
        // SAFETY: the chain holds those blocks.
        unsafe { give_chain::<C>(st, si, bin, chain) };
    }
}

/// After blocks came back to the run at page `rs` of `seg`: put it on the
/// partial list, and keep or release it when it became empty.
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`; the run at
/// page `rs` of `seg` (a committed runs segment) belongs to that shard.
unsafe fn run_gained<C: Config>(st: &State<C>, cen: &mut Central, base: usize, bin: usize, seg: usize, rs: usize, keep: bool) {
    // SAFETY: `seg` is a committed runs segment of this shard and the caller
    // holds its lock (the header is ours to read and write).
    let (in_partial, empty) = unsafe {
        let d = SegHdr::of(seg).descs[rs].run();
        (d.flags & IN_PARTIAL != 0, d.used == 0)
    };
    let kept = empty && {
        let room = bin < BUDGET_FIRST || kept_big_bytes(cen) + BINS[bin].size as usize <= KEEP_EMPTY_BIG_BYTES;
        keep && cen.empty[bin] < BINS[bin].keep_empty && room
    };
    if empty && !kept && !in_partial {
        // A run that was full (a one-block run always is) and is released at
        // once does not go on the list first.
        // SAFETY: the run is empty, not on the partial list; lock held.
        unsafe { release_pages(st, cen, bin, seg, rs, keep) };
        return;
    }
    if !in_partial {
        // SAFETY: lock held; the run's first page is in a committed runs
        // segment of this shard and not on the list yet.
        unsafe { link_partial(cen, base, bin, segment::page_id(base, seg, rs)) };
    }
    if kept {
        cen.empty[bin] += 1;
    } else if empty {
        // SAFETY: the run is empty and on the partial list; lock held.
        unsafe { release_run(st, cen, bin, seg, rs, keep) };
    }
}

/// Bytes of empty runs of the classes above 256 KiB a live shard keeps at
/// most (one run of each class, while they fit): a free and an allocation
/// of such a class then do not release and carve a run each (measured,
/// calloc_large: 14% more CPU time with none kept, 5% more with 2 MiB than
/// with one run of every class), and the eight classes do not keep 4.9 MiB
/// per shard (4.5 MiB measured in `reliability_purge`'s thread waves).
pub const KEEP_EMPTY_BIG_BYTES: usize = 2 * CACHE_BUDGET_BYTES;

/// Bytes of the empty runs the shard keeps of the classes above 256 KiB.
fn kept_big_bytes(cen: &Central) -> usize {
    (BUDGET_FIRST..NBINS).map(|b| cen.empty[b] as usize * BINS[b].size as usize).sum()
}

/// For a zeroed allocation: the untouched end of the first partial run of
/// `bin` (carving one when there is none), taken whole — its first block and
/// block count — when that run has no freed blocks and its pages read as
/// zero; `None` otherwise (the caller takes an ordinary chain: freed blocks
/// are reused first). The blocks are not written (no link): a zeroed
/// allocation that takes them touches no page of theirs.
///
/// # Safety
/// `cen` is shard `si`'s central, locked (the guard of `shard(st, si).lock()`).
pub unsafe fn take_zero_tail<C: Config>(st: &State<C>, si: usize, cen: &mut Central, bin: usize) -> Option<(*mut u8, u32)> {
    let base = st.arena.base.load(Ordering::Relaxed);
    let info = BINS[bin];
    let mut id = cen.partial[bin];
    if id == 0 {
        // SAFETY: lock held.
        // Not `written`: these blocks go out zeroed, unwritten by hz3, and
        // the program may never write them (a `calloc`'d buffer).
        id = unsafe { carve_run(st, si, cen, bin, true, false) }?;
    }
    let (seg, pi) = segment::from_page_id(base, id);
    // SAFETY: partial-list ids name runs of committed segments of this
    // shard, whose lock is held.
    let d = unsafe { SegHdr::of(seg).descs[pi].run() };
    if d.free_head != 0 || d.flags & ZERO_RUN == 0 || d.bump >= info.blocks {
        return None;
    }
    if d.used == 0 && d.bump != 0 {
        // A kept empty run goes back into use.
        cen.empty[bin] -= 1;
    }
    let n = info.blocks - d.bump;
    let first = seg + pi * PAGE_SIZE + d.bump as usize * info.size as usize;
    d.bump = info.blocks;
    d.used += n;
    if d.used == info.blocks {
        // SAFETY: lock held; `id` is on the partial list of `bin`.
        unsafe { unlink_partial(cen, base, bin, id) };
    }
    Some((first as *mut u8, n as u32))
}

/// Give back the last `n` blocks of a run of `bin` taken by `take_zero_tail`
/// and not handed out, starting at `first` (they become un-carved again).
///
/// # Safety
/// `cen` is shard `si`'s central, locked (the guard of `shard(st, si).lock()`); `first` and the `n - 1` blocks after it
/// end the run and are not in use.
pub unsafe fn give_tail<C: Config>(st: &State<C>, si: usize, cen: &mut Central, bin: usize, first: *mut u8, n: u32) {
    let base = st.arena.base.load(Ordering::Relaxed);
    let keep = shard(st, si).live.load(Ordering::Relaxed) > 0;
    let seg = segment::seg_base(first as usize);
    // SAFETY: `first` is in a run of a committed segment of this shard (lock held).
    let (rs, fresh) = unsafe {
        let hdr = SegHdr::of(seg);
        let rs = hdr.descs[segment::page_index(first as usize)].run_start.load(Ordering::Relaxed) as usize;
        let d = hdr.descs[rs].run();
        d.bump -= n as u16;
        d.used -= n as u16;
        (rs, d.used == 0 && d.bump == 0)
    };
    if fresh {
        // As fresh as when carved: not a kept empty run (those have bump != 0).
        // SAFETY: as above.
        if unsafe { SegHdr::of(seg).descs[rs].run().flags } & IN_PARTIAL == 0 {
            // SAFETY: lock held; the run's first page is in a committed runs
            // segment of this shard and not on the list.
            unsafe { link_partial(cen, base, bin, segment::page_id(base, seg, rs)) };
        }
        // SAFETY: the run is empty and on the partial list; lock held.
        unsafe { release_run(st, cen, bin, seg, rs, keep) };
    } else {
        // SAFETY: lock held; the run belongs to this shard.
        unsafe { run_gained(st, cen, base, bin, seg, rs, keep) };
    }
}

/// The descriptor of arena page `id`, as a raw pointer: dereferencing it needs
/// `id` to name a page of a committed runs segment (the partial lists' ids
/// do), and writing through it the lock of the shard that owns the segment.
fn desc_of(base: usize, id: u32) -> *mut segment::PageDesc {
    let (seg, pi) = segment::from_page_id(base, id);
    // An address, no reference to the header (whose other fields others read).
    (seg + core::mem::offset_of!(SegHdr, descs) + pi * core::mem::size_of::<segment::PageDesc>()) as *mut segment::PageDesc
}

/// Push page `id` (the first page of a run of `bin`) on `cen`'s partial list.
///
/// # Safety
/// `cen` is the central of the shard whose lock the caller holds; `id` and
/// the ids on the list name first pages of runs in committed runs segments
/// that shard owns.
unsafe fn link_partial(cen: &mut Central, base: usize, bin: usize, id: u32) {
    let old = cen.partial[bin];
    // SAFETY: `id` names a page of a committed runs segment of this shard,
    // whose lock is held (contract): its descriptor is ours to write.
    let d = unsafe { (*desc_of(base, id)).run() };
    d.prev = 0;
    d.next = old;
    d.flags |= IN_PARTIAL;
    if old != 0 {
        // SAFETY: as above, for the list's head `old` (a different page).
        unsafe { (*desc_of(base, old)).run().prev = id };
    }
    cen.partial[bin] = id;
}

/// Take page `id` off `cen`'s partial list of `bin`.
///
/// # Safety
/// As [`link_partial`]; `id` is on the list.
unsafe fn unlink_partial(cen: &mut Central, base: usize, bin: usize, id: u32) {
    // SAFETY: `id` names a page of a committed runs segment of this shard,
    // whose lock is held (contract).
    let d = unsafe { (*desc_of(base, id)).run() };
    d.flags &= !IN_PARTIAL;
    let (prev, next) = (d.prev, d.next);
    d.prev = 0;
    d.next = 0;
    if prev == 0 {
        cen.partial[bin] = next;
    } else {
        // SAFETY: as above, for the neighbour `prev` on the same list.
        unsafe { (*desc_of(base, prev)).run().next = next };
    }
    if next != 0 {
        // SAFETY: as above, for the neighbour `next` on the same list.
        unsafe { (*desc_of(base, next)).run().prev = prev };
    }
}

/// Segments `carve_run` looks at before it takes a new one.
const SEG_PROBES: u32 = 16;

/// Segments a shard holds before the new ones it takes for runs of blocks
/// of at most a page get the huge-page advice without a density measure
/// ([`HugeAdvice::Dense`]; the others, smaller shards, and runs carved for
/// zeroed blocks handed out unwritten go by the arena-wide rule: 1 GiB of
/// untouched `calloc(4096)` became resident whole with the advice). 8 MiB
/// of its own: a program with that much in small blocks is past what the
/// 4 KiB-page address-translation cache reaches,
/// and a per-shard count keeps many threads with small heaps each (thread
/// churn, hand-offs) on 4 KiB pages. Measured (child runs, 7 each, against
/// the arena-wide rule alone): rust_json 0.1583 → 0.1436 s, live_random_1m
/// 0.1586 → 0.1425, live_build_free_fifo 0.0563 → 0.0514, remote_bulk 0.1283
/// → 0.1186 with its peak RSS 163.6 → 173.0 MiB (mimalloc 165.4); with an
/// arena-wide 8 MiB instead, churn_thread_waves' peak RSS grew 28% and
/// xthread_handoff's 40%.
pub const HUGE_SHARD_SEGMENTS: u32 = 8;

/// Carve a run for `bin` from the shard's segments (taking a new segment when
/// none has room), set its descriptors, S110 meta and tags, and put it on the
/// partial list when `link`. `written`: the run's blocks go out through the
/// thread caches' lists, so each one is written where it starts (its link)
/// before the program gets it; not for zeroed blocks handed out unwritten
/// (see [`HUGE_SHARD_SEGMENTS`]). Returns its page id, or `None` when out of
/// memory.
///
/// # Safety
/// The caller holds shard `si`'s lock and `cen` is its central.
unsafe fn carve_run<C: Config>(st: &State<C>, si: usize, cen: &mut Central, bin: usize, link: bool, written: bool) -> Option<u32> {
    let base = st.arena.base.load(Ordering::Relaxed);
    let info = BINS[bin];
    let k = info.run_pages as usize;
    // Runs of whole-page classes start at their natural alignment, so
    // aligned requests can use them (`size_class::bin_for`).
    let a = run_align(bin) / PAGE_SIZE;
    let mut found = None;
    // Look at a bounded number of segments: a shard whose segments all have
    // a few scattered free pages must not walk them all for each run (those
    // pages still serve shorter runs; the walk starts at the newest segment).
    // Resident (dirty) free pages first, then any free pages (a second look
    // at the same segments): reused warm pages keep the resident set
    // instead of faulting in pages that were purged or never touched.
    for warm in [true, false] {
        if found.is_some() || (warm && cen.dirty < k as u32) {
            continue;
        }
        let mut s = cen.segs;
        let mut probes = 0;
        while s != 0 && probes < SEG_PROBES {
            let seg = st.arena.slot_addr(s as usize - 1) as usize;
            // SAFETY: the shard's segment list holds committed runs segments it
            // owns (slot + 1), and its lock is held.
            let hdr = unsafe { SegHdr::of(seg).runs() };
            let pi = if !hdr.takes_run(k) {
                None
            } else if warm {
                hdr.find_warm_run(k, a)
            } else {
                hdr.find_run_aligned(k, a)
            };
            if let Some(pi) = pi {
                found = Some((seg, pi));
                break;
            }
            s = hdr.next_seg;
            probes += 1;
        }
    }
    let (seg, pi) = match found {
        Some(f) => f,
        None => {
            let advice = if written && info.size as usize <= PAGE_SIZE && cen.nsegs >= HUGE_SHARD_SEGMENTS {
                HugeAdvice::Dense
            } else {
                HugeAdvice::IfDenseBelow
            };
            let (slot, clean) = st.arena.alloc_segment(advice)?;
            let seg = st.arena.slot_addr(slot) as usize;
            // SAFETY: `alloc_slots` just handed this committed slot to us
            // alone: nobody else references its run state.
            let hdr = unsafe { SegHdr::of(seg) };
            // SAFETY: as above.
            unsafe { hdr.init_runs(si, clean) };
            // SAFETY: as above; from here the shard's lock (held) guards it.
            let runs = unsafe { hdr.runs() };
            // SAFETY: lock held; the new segment is this shard's, not listed.
            unsafe { link_seg(st, cen, seg, runs) };
            cen.nsegs += 1;
            (seg, runs.find_run_aligned(k, a)?)
        }
    };
    // SAFETY: `seg` is a committed runs segment of this shard (found on its
    // list or just initialised), and its lock is held.
    let hdr = unsafe { SegHdr::of(seg) };
    // SAFETY: as above.
    let runs = unsafe { hdr.runs() };
    runs.mark(pi, k, true);
    if k > segment::LONG_RUN_PAGES {
        runs.long_pages += k as u32;
    }
    cen.dirty -= runs.mark_dirty(pi, k, false);
    if cen.dirty <= PURGE_THRESHOLD_PAGES {
        // The delay counts from when the dirty pages last rose above the threshold.
        cen.dirty_since = 0;
    }
    let zero = runs.take_zero(pi, k);
    if runs.n_free == 0 {
        // SAFETY: lock held; the segment is this shard's and listed (it had
        // free pages).
        unsafe { unlink_seg(st, cen, runs) };
    }
    for p in pi..pi + k {
        let d = &hdr.descs[p];
        // Relaxed: the pages are free, no block of theirs is out (see `PageDesc`).
        d.run_start.store(pi as u8, Ordering::Relaxed);
        d.bin_plus1.store(0, Ordering::Relaxed);
        // SAFETY: as above; one page's run state at a time.
        unsafe { d.run().flags = 0 };
    }
    {
        // SAFETY: as above.
        let d = unsafe { hdr.descs[pi].run() };
        d.flags = if zero { ZERO_RUN } else { 0 };
        d.used = 0;
        d.bump = 0;
        d.free_head = 0;
        d.next = 0;
        d.prev = 0;
    }
    // Block-start pages get their bin in the descriptor, the S110 meta and the tag,
    // all before any block of the run is handed out (release stores).
    let tag = tagmap::encode(bin, si);
    let first_page = segment::page_id(base, seg, 0) as usize;
    // A one-block run's block starts on its first page only (no division
    // per page for the up to 64 pages of a 256 KiB run).
    let start_pages = if info.blocks == 1 { 1 } else { k };
    for j in 0..start_pages {
        if page_has_block_start(bin, j) {
            let p = pi + j;
            // Relaxed: the run's blocks are handed out later, through the
            // shard lock (see `PageDesc`).
            hdr.descs[p].bin_plus1.store(bin as u16 + 1, Ordering::Relaxed);
            if C::S110_META {
                hdr.meta[p].store(bin as u16 + 1, Ordering::Release);
            }
            if C::PTAG != crate::Ptag::Off {
                // SAFETY: `first_page + p` is a page of a committed segment of
                // the arena, so inside the tag array.
                unsafe { tagmap::store(st.arena.tag_array(), first_page + p, tag) };
            }
        }
    }
    let id = segment::page_id(base, seg, pi);
    if link {
        // SAFETY: lock held; `id` is the first page of the run just carved in a
        // committed runs segment of this shard, not on the list.
        unsafe { link_partial(cen, base, bin, id) };
    }
    Some(id)
}

/// Whether page `j` of a run of `bin` holds the start of one of its blocks:
/// the first block starting at or after the page's start is one of the
/// run's and starts before the page's end. (One test per page when a run is
/// carved, not one per block.)
fn page_has_block_start(bin: usize, j: usize) -> bool {
    let (size, blocks) = (BINS[bin].size as usize, BINS[bin].blocks as usize);
    let first = (j * PAGE_SIZE).div_ceil(size);
    first < blocks && first * size < (j + 1) * PAGE_SIZE
}

/// Release the empty run at page `pi` of `seg`: clear its block-start marks,
/// free its pages, and give the segment back to the arena when it is empty and
/// not the last one a live shard (`keep`) holds on to.
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`; the run at
/// page `pi` of `seg` is an empty run of `bin` of that shard, on its partial list.
unsafe fn release_run<C: Config>(st: &State<C>, cen: &mut Central, bin: usize, seg: usize, pi: usize, keep: bool) {
    let base = st.arena.base.load(Ordering::Relaxed);
    // SAFETY: lock held; the run is on the partial list of `bin` (contract).
    unsafe { unlink_partial(cen, base, bin, segment::page_id(base, seg, pi)) };
    // SAFETY: the run is empty and now off the list; lock held (contract).
    unsafe { release_pages(st, cen, bin, seg, pi, keep) };
}

/// [`release_run`] for an empty run that is not on the partial list.
///
/// # Safety
/// As [`release_run`], but the run is on no list.
unsafe fn release_pages<C: Config>(st: &State<C>, cen: &mut Central, bin: usize, seg: usize, pi: usize, keep: bool) {
    let base = st.arena.base.load(Ordering::Relaxed);
    // SAFETY: `seg` is a committed runs segment of this shard, lock held.
    let hdr = unsafe { SegHdr::of(seg) };
    let k = BINS[bin].run_pages as usize;
    // A run none of whose blocks was ever handed out still reads as zero.
    // SAFETY: as above: the run's state is ours to read.
    let untouched = unsafe {
        let d = hdr.descs[pi].run();
        d.flags & ZERO_RUN != 0 && d.bump == 0
    };
    let first_page = segment::page_id(base, seg, 0) as usize;
    // Only block-start pages carry the bin (`carve_run`): a one-block run
    // (every class from 4 KiB up) has one, however many pages it spans.
    let pages = if BINS[bin].blocks == 1 { 1 } else { k };
    for p in pi..pi + pages {
        if hdr.descs[p].bin_plus1.load(Ordering::Relaxed) != 0 {
            // Relaxed: the run is empty, no block of it is out (see `PageDesc`).
            hdr.descs[p].bin_plus1.store(0, Ordering::Relaxed);
            if C::S110_META {
                hdr.meta[p].store(0, Ordering::Release);
            }
            if C::PTAG != crate::Ptag::Off {
                // SAFETY: `first_page + p` is a page of a committed segment of
                // the arena, so inside the tag array.
                unsafe { tagmap::store(st.arena.tag_array(), first_page + p, 0) };
            }
        }
    }
    // SAFETY: as above.
    let runs = unsafe { hdr.runs() };
    runs.mark(pi, k, false);
    if k > segment::LONG_RUN_PAGES {
        runs.long_pages -= k as u32;
    }
    if runs.listed == 0 {
        // SAFETY: lock held; the segment is this shard's and not listed.
        unsafe { link_seg(st, cen, seg, runs) };
    }
    if untouched {
        runs.set_zero(pi, k);
    } else if C::PURGE && k > segment::LONG_RUN_PAGES && cen.dirty >= LONG_RUN_PURGE_PAGES {
        // A long run (a class above 256 KiB) freed while the shard already
        // keeps `LONG_RUN_PURGE_PAGES` dirty pages is purged at once: such
        // runs would otherwise add up to 1016 KiB each to what stays
        // resident until the delayed purge.
        // SAFETY: pages `pi..pi + k` of this committed segment are free now
        // and hold no data.
        unsafe { crate::os::purge((seg + pi * PAGE_SIZE) as *mut u8, k * PAGE_SIZE) };
        runs.set_zero(pi, k);
    } else {
        // Marked resident with purging off too (then nothing purges them):
        // the warm-first carve reuses them before untouched pages.
        cen.dirty += runs.mark_dirty(pi, k, true);
    }
    if runs.n_free as usize == USABLE_PAGES && (cen.nsegs > 1 || !keep) {
        // SAFETY: lock held; the segment is this shard's and has no page in use.
        unsafe { return_segment(st, cen, seg) };
    } else if C::PURGE && cen.dirty > PURGE_THRESHOLD_PAGES {
        // SAFETY: lock held.
        unsafe { purge_if_due(st, cen) };
    }
}

/// Give an empty segment back to the arena (purged when purging is on).
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`; `seg` is a
/// runs segment of that shard, on its segment list, with no page in use.
unsafe fn return_segment<C: Config>(st: &State<C>, cen: &mut Central, seg: usize) {
    let base = st.arena.base.load(Ordering::Relaxed);
    // SAFETY: `seg` is a committed runs segment of this shard, lock held.
    let hdr = unsafe { SegHdr::of(seg) };
    // SAFETY: as above.
    let runs = unsafe { hdr.runs() };
    // SAFETY: lock held; the segment is this shard's and listed (contract).
    unsafe { unlink_seg(st, cen, runs) };
    cen.nsegs -= 1;
    cen.dirty -= runs.mark_dirty(segment::HDR_PAGES, USABLE_PAGES, false);
    if cen.dirty <= PURGE_THRESHOLD_PAGES {
        cen.dirty_since = 0;
    }
    // Relaxed: the slot goes back to the arena under its lock (a release);
    // this only makes stray pointers into it fail the magic check.
    hdr.magic.store(0, Ordering::Relaxed);
    let slot = segment::slot_index(base, seg);
    if C::PURGE {
        // Resident for the purge delay, like a freed large block: a program
        // that frees its blocks in bulk and allocates as many again (bulk
        // remote frees, phases) reuses warm pages instead of faulting in new
        // ones; the dirty cap and the delay bound what stays resident.
        // SAFETY: the slot was handed out by `alloc_slots` for this segment,
        // which holds no live data (no page in use, contract).
        unsafe { st.arena.free_slots_delayed(slot, 1, LARGE_CACHE_SLOTS, SEG_DIRTY_CAP, crate::os::now_ms()) };
    } else {
        // SAFETY: as above.
        unsafe { st.arena.free_slots(slot, 1, usize::MAX) };
    }
}

/// Purge the shard's dirty pages when they have been above the threshold
/// for the purge delay, or are above the cap.
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`.
unsafe fn purge_if_due<C: Config>(st: &State<C>, cen: &mut Central) {
    let now = crate::os::now_ms().max(1);
    if cen.dirty_since == 0 {
        cen.dirty_since = now;
    }
    let waited = crate::os::ms_since(now, cen.dirty_since);
    if cen.dirty > PURGE_CAP_PAGES || waited >= crate::arena::PURGE_DELAY_MS {
        // Half of them (decay: what stays unused for several delays goes),
        // long stretches first: the pages the program reuses soonest (short
        // holes between its runs) stay warm.
        let keep = (cen.dirty / 2).clamp(PURGE_THRESHOLD_PAGES / 2, PURGE_CAP_PAGES / 2);
        // SAFETY: the caller holds the shard's lock (it passed its central).
        unsafe { purge_down_to(st, cen, keep) };
        cen.dirty_since = 0;
    }
}

/// At the owner's heartbeat: purge shard `si`'s dirty pages if they are due.
///
/// # Safety
/// `cen` is the locked central of one of `st`'s shards.
pub unsafe fn purge_tick<C: Config>(st: &State<C>, cen: &mut Central) {
    if C::PURGE && cen.dirty > PURGE_THRESHOLD_PAGES {
        // SAFETY: lock held.
        unsafe { purge_if_due(st, cen) };
    }
}

/// Purge the dirty free pages of every segment of the shard.
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`.
unsafe fn purge_all<C: Config>(st: &State<C>, cen: &mut Central) {
    // Given back when dropped, the lock still held: one call for the stretches
    // of several segments (see `os::PurgeBatch`).
    let mut batch = crate::os::PurgeBatch::new();
    let mut s = cen.segs;
    while s != 0 {
        // SAFETY: the shard's segment list holds committed runs segments it
        // owns (slot + 1), lock held; their dirty pages are free, holding no
        // data.
        let hdr = unsafe { SegHdr::of(st.arena.slot_addr(s as usize - 1) as usize).runs() };
        // SAFETY: as above.
        cen.dirty -= unsafe { hdr.purge_dirty(&mut batch) };
        s = hdr.next_seg;
    }
    cen.dirty_since = 0;
}

/// Return what an idle shard holds: release its empty runs and give back its
/// empty segments (the last one too), which stay resident for the purge delay
/// in the arena. Its dirty free pages are purged down to `PARK_KEEP_PAGES`
/// (long stretches first) and the shard is parked with the rest for
/// [`purge_parked`]. Called when the shard's last thread leaves without
/// parking its cache (see [`leave`]).
///
/// # Safety
/// `cen` is the locked central of `sh`, one of `st`'s shards.
pub unsafe fn trim<C: Config>(st: &State<C>, sh: &Shard, cen: &mut Central) {
    // SAFETY: `cen` is `sh`'s locked central (contract).
    unsafe { release_idle(st, cen) };
    if C::PURGE && cen.dirty != 0 {
        // SAFETY: lock held.
        unsafe { purge_down_to(st, cen, PARK_KEEP_PAGES) };
        if cen.dirty != 0 {
            // Relaxed: read under this lock by `purge_parked`; the lock-free
            // reads are hints, except the exit's (see `purge_at_exit`).
            sh.parked_at.store(crate::os::now_ms().max(1), Ordering::Relaxed);
        }
    }
}

/// Release the empty runs of an idle shard (kept ones too) and give its
/// empty segments (the last one too) back to the arena, where they stay
/// resident for the purge delay.
///
/// # Safety
/// `cen` is the locked central of one of `st`'s shards.
unsafe fn release_idle<C: Config>(st: &State<C>, cen: &mut Central) {
    let base = st.arena.base.load(Ordering::Relaxed);
    for bin in 0..NBINS {
        let mut id = cen.partial[bin];
        while id != 0 {
            let (seg, pi) = segment::from_page_id(base, id);
            // SAFETY: partial-list ids name runs of committed segments of
            // this shard, whose lock is held.
            let d = unsafe { SegHdr::of(seg).descs[pi].run() };
            let next = d.next;
            if d.used == 0 {
                if d.bump != 0 {
                    cen.empty[bin] -= 1;
                }
                // SAFETY: lock held; the run is empty and on the partial list.
                unsafe { release_run(st, cen, bin, seg, pi, false) };
            }
            id = next;
        }
    }
    let mut s = cen.segs;
    while s != 0 {
        let seg = st.arena.slot_addr(s as usize - 1) as usize;
        // SAFETY: the shard's segment list holds committed runs segments it
        // owns (slot + 1), lock held.
        let hdr = unsafe { SegHdr::of(seg).runs() };
        let next = hdr.next_seg;
        if hdr.n_free as usize == USABLE_PAGES {
            // SAFETY: lock held; the segment is on the list with no page in use.
            unsafe { return_segment(st, cen, seg) };
        }
        s = next;
    }
}

/// How a thread left its shard ([`leave`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Left {
    /// Its cache stays with the shard, blocks and all, for the next thread.
    pub parked: bool,
    /// It was the shard's last holder.
    pub last: bool,
}

/// Shards parked warm at once at most (see [`leave`]): what they keep for
/// the next thread stays bounded however many threads exit together.
pub const PARK_WARM_SHARDS: usize = 2;

/// Before a thread's exit parks its cache: reserve one of the
/// [`PARK_WARM_SHARDS`] warm parks (true), or none (false: no park). A
/// reservation the exit does not use goes back through [`leave`].
pub fn reserve_warm<C: Config>(st: &State<C>) -> bool {
    // Relaxed: a count; the shards it describes are written under their locks.
    st.parked_warm
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| if n < PARK_WARM_SHARDS { Some(n + 1) } else { None })
        .is_ok()
}

/// At a thread's exit (its remote frees published): give up shard `si`.
/// With `warm` (a warm park reserved by [`reserve_warm`], the cache shed by
/// `tcache::shed_for_park`) the shard's only holder parks its cache `tc`
/// with it and stamps the shard parked: the next thread to take the shard
/// adopts the cache ([`take_parked_cache`]); [`purge_parked`] empties it,
/// and returns the shard's free pages, once parked for
/// `arena::PURGE_DELAY_MS`. The park releases the shard's empty runs (a
/// walk of its partial lists, as every last exit made before parks kept
/// caches) and keeps up to [`PARK_WARM_PAGES`] free pages (the rest purged,
/// long stretches first).
///
/// Without `warm` (more exits at once than [`PARK_WARM_SHARDS`]), or when
/// the thread shares its shard (or finds a cache parked already), nothing is
/// parked: the caller empties its cache into the central, and the shard's
/// last holder trims it ([`trim`]). Costs one lock.
///
/// Ordering: the holder test, the park and the `live` decrement are under
/// the shard lock, and a new holder increments `live` before it takes the
/// lock to look for a parked cache: either its look comes after the park
/// (it adopts the cache), or its increment comes before the holder test
/// (which then sees a second holder and parks nothing). A parked cache is
/// never left beside a live holder. The decrement is SeqCst, as in
/// `thread::publish_to_inbox`'s protocol: remote frees pushed before it
/// stay in the inbox for the next holder or [`purge_parked`]; later ones
/// see `live == 0` and go to the central.
pub fn leave<C: Config>(st: &State<C>, si: usize, tc: usize, warm: bool) -> Left {
    let sh = shard(st, si);
    let mut cen = sh.lock();
    // Relaxed: the increments that matter are ordered by the lock (above).
    let parked = warm && sh.live.load(Ordering::Relaxed) == 1 && sh.parked_cache.load(Ordering::Relaxed) == 0;
    if parked {
        sh.parked_cache.store(tc, Ordering::Relaxed);
        sh.parked_warm.store(true, Ordering::Relaxed);
        // Relaxed: read under this lock by `purge_parked` (the lock-free
        // reads are hints, except the exit's: see `purge_at_exit`).
        sh.parked_at.store(crate::os::now_ms().max(1), Ordering::Relaxed);
        // Empty runs kept for a live thread go (their pages stay, as free
        // pages): measured, a park that kept them held ~0.7 MiB more at
        // the peak of 4-thread waves and let RSS grow ~20 MiB over 20 waves
        // of 50 threads (~100 kept runs a shard).
        // SAFETY: the guard is this shard's locked central.
        unsafe { release_idle(st, &mut cen) };
        if C::PURGE {
            // The free pages the next thread is likeliest to reuse stay warm
            // (the rest goes now; these when the next thread leaves, or after
            // the purge delay if none comes).
            let keep = cen.dirty.min(PARK_WARM_PAGES);
            if cen.dirty >= keep + PARK_PURGE_MIN_PAGES {
                // SAFETY: as above.
                unsafe { purge_down_to(st, &mut cen, keep) };
            }
        }
    } else if warm {
        st.parked_warm.fetch_sub(1, Ordering::Relaxed);
    }
    let last = sh.live.fetch_sub(1, Ordering::SeqCst) == 1;
    drop(cen);
    Left { parked, last }
}

/// Take shard `sh`'s parked cache (0 if none), giving back its warm-park
/// reservation.
fn unpark(st: &State<impl Config>, sh: &Shard, _cen: &mut Central) -> usize {
    let tc = sh.parked_cache.swap(0, Ordering::Relaxed);
    if tc != 0 && sh.parked_warm.swap(false, Ordering::Relaxed) {
        st.parked_warm.fetch_sub(1, Ordering::Relaxed);
    }
    tc
}

/// Warm parks reserved or held (a relaxed hint: every parked cache holds
/// one, see [`reserve_warm`]).
pub fn warm_parks<C: Config>(st: &State<C>) -> usize {
    st.parked_warm.load(Ordering::Relaxed)
}

/// Whether shard `sh` holds a parked cache: a relaxed peek, a hint for a new
/// thread choosing its shard (the cache is taken under the lock, see
/// [`take_parked_cache`], and may be gone by then).
pub fn has_parked_cache(sh: &Shard) -> bool {
    sh.parked_cache.load(Ordering::Relaxed) != 0
}

/// For a thread that just took shard `si` (its `live` count raised): the
/// cache the shard's last thread parked with it (a `*mut ThreadCache`), now
/// the caller's, or 0. Costs one lock.
pub fn take_parked_cache<C: Config>(st: &State<C>, si: usize) -> usize {
    let sh = shard(st, si);
    // Under the lock even to find none: a lock-free look could miss a cache
    // parked by a holder that had not seen this thread's `live` increment
    // (see `leave`), and leave it idle beside a live holder.
    let mut cen = sh.lock();
    let tc = unpark(st, sh, &mut cen);
    drop(cen);
    tc
}

/// Purge the dirty pages of the shard's segments until at most `keep` are
/// left: first the long stretches of free pages (the most pages per call),
/// then the others, a segment at a time in list order.
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`.
unsafe fn purge_down_to<C: Config>(st: &State<C>, cen: &mut Central, keep: u32) {
    // As in `purge_all`: flushed when dropped, under the lock.
    let mut batch = crate::os::PurgeBatch::new();
    for min in [PURGE_LONG_STRETCH, 1] {
        let mut s = cen.segs;
        while s != 0 && cen.dirty > keep {
            // SAFETY: the shard's segment list holds committed runs segments it
            // owns (slot + 1), lock held; their dirty pages are free, holding no
            // data.
            let hdr = unsafe { SegHdr::of(st.arena.slot_addr(s as usize - 1) as usize).runs() };
            // SAFETY: as above.
            cen.dirty -= unsafe { hdr.purge_dirty_stretches(min, &mut batch) };
            s = hdr.next_seg;
        }
    }
    if cen.dirty == 0 {
        cen.dirty_since = 0;
    }
}

/// At a thread's exit, after its shard was released (and parked by [`leave`]
/// if it was the shard's last thread): when no thread of the type holds a
/// shard any more, purge every parked shard now — nobody is coming for their
/// pages — and return true; otherwise purge those whose delay is over and
/// return false.
///
/// Ordering: parking (a store under the lock), then a SeqCst fence, then the
/// load of every shard's `live`. Of two threads leaving at once, the one
/// whose fence comes second sees the other's `live == 0` and its parked
/// stamp, so the last of them purges both shards.
pub fn purge_at_exit<C: Config>(st: &State<C>) -> bool {
    core::sync::atomic::fence(Ordering::SeqCst);
    let idle = !(0..C::SHARDS).any(|i| shard(st, i).live.load(Ordering::Relaxed) != 0);
    purge_parked(st, idle);
    idle
}

/// Empty the shards parked for the purge delay (all parked shards at once
/// with `all`): a parked cache goes back to the pool, its blocks to the
/// central; if no thread has taken the shard since, its inbox goes to the
/// central, its empty runs and segments are released and its dirty pages
/// purged. Called at thread exits and at each thread's heartbeat; costs one
/// load per shard when none is due. Takes each shard's lock in turn: the
/// caller holds none.
pub fn purge_parked<C: Config>(st: &State<C>, all: bool) {
    if !st.ready() {
        return;
    }
    let mut now = 0;
    for i in 0..C::SHARDS {
        let sh = shard(st, i);
        // Relaxed: a hint, checked again under the lock.
        let at = sh.parked_at.load(Ordering::Relaxed);
        if at == 0 {
            continue;
        }
        if now == 0 {
            now = crate::os::now_ms();
        }
        if !all && crate::os::ms_since(now, at) < crate::arena::PURGE_DELAY_MS {
            continue;
        }
        let mut cen = sh.lock();
        let at = sh.parked_at.load(Ordering::Relaxed);
        if at == 0 || !(all || crate::os::ms_since(now, at) >= crate::arena::PURGE_DELAY_MS) {
            continue;
        }
        sh.parked_at.store(0, Ordering::Relaxed);
        let tc = unpark(st, sh, &mut cen);
        let idle = sh.live.load(Ordering::Relaxed) == 0;
        drop(cen);
        if tc != 0 {
            // SAFETY: a parked cache belongs to no thread; taken off the
            // shard under its lock, it is ours alone.
            unsafe { crate::thread::recycle_parked::<C>(st, tc as *mut crate::tcache::ThreadCache) };
        }
        if idle {
            // Remote frees pushed before the last thread left (later ones
            // went to the central): the shard was parked before its last
            // `live` decrement, whose SeqCst order puts those pushes before
            // the SeqCst loads of `give_inbox` (this thread saw the park
            // through the lock).
            for bin in 0..NBINS {
                // SAFETY: shard `i` is one of this state's shards.
                unsafe { give_inbox::<C>(st, i, bin) };
            }
            let mut cen = sh.lock();
            if sh.live.load(Ordering::Relaxed) == 0 {
                // SAFETY: the guard is shard `i`'s locked central.
                unsafe { release_idle(st, &mut cen) };
                if C::PURGE {
                    // SAFETY: as above.
                    unsafe { purge_all(st, &mut cen) };
                }
            }
        }
    }
}

/// Push the runs segment at `seg` (whose run state is `hdr`) on `cen`'s list
/// of segments with free pages.
///
/// # Safety
/// The caller holds the lock of the shard whose central is `cen`; `seg` is a
/// committed runs segment of that shard, not on the list, and `hdr` its run
/// state; the segments on the list are committed runs segments of the shard.
unsafe fn link_seg<C: Config>(st: &State<C>, cen: &mut Central, seg: usize, hdr: &mut SegRuns) {
    let base = st.arena.base.load(Ordering::Relaxed);
    let me = segment::slot_index(base, seg) as u32 + 1;
    hdr.prev_seg = 0;
    hdr.next_seg = cen.segs;
    hdr.listed = 1;
    if cen.segs != 0 {
        // SAFETY: the list head is a committed runs segment of this shard
        // (lock held, contract), and not `seg`, so its run state is not `hdr`.
        unsafe { SegHdr::of(st.arena.slot_addr(cen.segs as usize - 1) as usize).runs().prev_seg = me };
    }
    cen.segs = me;
}

/// Take the runs segment whose run state is `hdr` off `cen`'s list.
///
/// # Safety
/// As [`link_seg`], with the segment on the list.
unsafe fn unlink_seg<C: Config>(st: &State<C>, cen: &mut Central, hdr: &mut SegRuns) {
    let (prev, next) = (hdr.prev_seg, hdr.next_seg);
    hdr.listed = 0;
    hdr.prev_seg = 0;
    hdr.next_seg = 0;
    if prev == 0 {
        cen.segs = next;
    } else {
        // SAFETY: list members are committed runs segments of this shard
        // (lock held, contract); `prev` is another segment than this one.
        unsafe { SegHdr::of(st.arena.slot_addr(prev as usize - 1) as usize).runs().next_seg = next };
    }
    if next != 0 {
        // SAFETY: as above, for `next`.
        unsafe { SegHdr::of(st.arena.slot_addr(next as usize - 1) as usize).runs().prev_seg = prev };
    }
}

const _: () = assert!(SEG_SIZE / PAGE_SIZE <= 256, "run_start is a u8");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_start_pages_are_those_where_a_block_starts() {
        for (bin, b) in BINS.iter().enumerate() {
            let mut starts = [false; crate::segment::USABLE_PAGES];
            for blk in 0..b.blocks as usize {
                starts[blk * b.size as usize / PAGE_SIZE] = true;
            }
            for (j, &s) in starts.iter().enumerate().take(b.run_pages as usize + 1) {
                assert_eq!(page_has_block_start(bin, j), s, "bin {bin} page {j}");
            }
        }
    }

    #[test]
    fn a_zeroed_shard_is_unlocked_and_empty() {
        // The shard array is a fresh zeroed mapping: zero must be an unlocked
        // lock and an empty central.
        let bytes = core::mem::size_of::<Shard>();
        let mem = crate::os::map_rw(bytes);
        assert!(!mem.is_null());
        // SAFETY: a fresh zeroed, aligned read/write mapping of a whole
        // `Shard`, whose fields are all valid at zero (atomics, integers).
        let sh = unsafe { &*(mem as *const Shard) };
        {
            let mut cen = sh.lock();
            assert!(cen.partial.iter().all(|&id| id == 0) && cen.segs == 0 && cen.nsegs == 0);
            cen.dirty = 7;
        }
        // The guard unlocked on drop: taking the lock again does not spin.
        assert_eq!(sh.lock().dirty, 7);
        // SAFETY: the mapping was made above and is no longer used.
        unsafe { crate::os::unmap(mem, bytes) };
    }
}
