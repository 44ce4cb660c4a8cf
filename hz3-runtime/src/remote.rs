//! Remote free: blocks freed by a thread that is not on their owner shard.
//!
//! Owns: the thread-local buffer of pending remote frees (a direct-mapped
//! table keyed by (owner, bin), each slot a carrier list; one owner's bins
//! never share a slot), the carrier format of remote-freed batches,
//! publishing a batch to the owner's inbox with one CAS, and collecting
//! inbox bins that stay long (so memory freed for an owner that never comes
//! back for it is returned). Must never: write another shard's central
//! without its lock, publish a chain to the wrong (owner, bin) inbox, or
//! write into a freed block other than a carrier.
//!
//! Carriers: a batch is a list of carrier blocks linked through their first
//! word; a carrier's second word counts the blocks it carries and the words
//! after it point to them (`carrier_cap`). The freeing thread writes only
//! into carriers, so a block it frees without reading (a consumer that frees
//! what a producer filled) stays in the owner's cache: the owner unpacks the
//! batch, linking each block on its own side. With a link written into every
//! block, each block's cache line moved to the freeing core and back
//! (measured: the walks of inbox chains were a third of an mt_remote
//! profile).

use crate::shard::{self, set_next, Chain};
use crate::size_class::{BINS, BUDGET_FIRST, NBINS};
use crate::stats::{Counters, Ctr};
use crate::{Config, State};
use core::sync::atomic::Ordering;

/// Slots in the remote buffer (power of two, above `NBINS`).
pub const RSLOTS: usize = 256;
const _: () = assert!(NBINS < RSLOTS && RSLOTS.is_power_of_two());

/// Pending remote frees for one (owner, bin): a carrier list.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RemoteSlot {
    /// `(owner << 8 | bin) + 1`, or 0 when the slot is empty.
    pub key: u32,
    /// Blocks still to come before the list is a full batch (the bin's
    /// `remote_batch` minus the blocks held): a free decrements it and
    /// publishes at zero, with no look at the bin table.
    pub left: u32,
    /// The newest carrier (its count word is written when it is sealed).
    pub head: *mut u8,
    /// The oldest carrier (the list's last).
    pub tail: *mut u8,
    /// Blocks `head` carries so far.
    pub k: u32,
    /// Blocks a carrier of the bin carries at most (`carrier_cap`).
    pub cap: u32,
}

impl RemoteSlot {
    /// An empty slot.
    pub const EMPTY: RemoteSlot =
        RemoteSlot { key: 0, left: 0, head: core::ptr::null_mut(), tail: core::ptr::null_mut(), k: 0, cap: 0 };
}

/// Blocks a carrier of `bin` carries besides itself: the words after its
/// link and count, at most what one batch needs (16-byte blocks carry none:
/// their lists are plain linked lists with a zero count).
#[inline]
pub fn carrier_cap(bin: usize) -> u32 {
    let words = BINS[bin].size / 8;
    (words - 2).min(BINS[bin].remote_batch as u32 - 1)
}

/// The word of carrier `c` that points to its `i`-th carried block.
#[inline(always)]
fn carried(c: *mut u8, i: u32) -> *mut u8 {
    c.wrapping_add(16 + 8 * i as usize)
}

/// Write the count of carrier `c`.
///
/// # Safety
/// `c` is a free block of at least 16 bytes owned by the caller.
#[inline(always)]
unsafe fn seal(c: *mut u8, k: u32) {
    // SAFETY: `c` has a second word and is the caller's (contract).
    unsafe { *(c as *mut usize).add(1) = k as usize };
}

/// A one-block carrier list holding `p` (tests publish single blocks).
///
/// # Safety
/// `p` is a free block of at least 16 bytes that nothing else references.
#[cfg(test)]
pub unsafe fn carrier_of_one<C: Config>(p: *mut u8) -> Chain {
    // SAFETY: `p` is a free block nothing else references (contract).
    unsafe {
        set_next::<C>(p, core::ptr::null_mut());
        seal(p, 0);
    }
    Chain { head: p, tail: p, n: 1 }
}

/// Visit the blocks of the carrier list `c` (null-terminated through the
/// carriers' links), whole carriers at a time — each carrier's carried
/// blocks, then the carrier — until at least `want` blocks were visited or
/// the list ends. `f` may write the first word of the blocks it is given (to
/// link them), nothing else. Returns the rest of the list (whole carriers,
/// untouched; null when none) and the blocks visited. With `harden` the
/// carried pointers are stored encoded and checked like links, and a count
/// above `cap` (the bin's `carrier_cap`) aborts.
///
/// # Safety
/// `c` starts a carrier list of free blocks of a bin whose carriers carry at
/// most `cap` blocks, detached from its inbox, buffer or stash: the caller's
/// alone.
#[inline]
pub unsafe fn unpack<C: Config>(mut c: *mut u8, cap: u32, want: u32, mut f: impl FnMut(*mut u8)) -> (*mut u8, u32) {
    let mut n = 0;
    while !c.is_null() && n < want {
        // SAFETY: `c` is a carrier of the caller's list (contract): its link
        // and count are readable, and `f` has not written it yet.
        let (next, k) = unsafe { (shard::next_of::<C>(c), count_of::<C>(c, cap)) };
        for i in 0..k {
            // SAFETY: words 2..2+k of the carrier point to its carried
            // blocks (written by `free`); `f` only writes other blocks'
            // first words, so they are intact.
            f(unsafe { shard::next_of::<C>(carried(c, i)) });
        }
        f(c);
        n += k + 1;
        c = next;
    }
    (c, n)
}

/// The count of carrier `c` (checked against `cap` with `harden`).
///
/// # Safety
/// `c` is a sealed carrier of the caller's.
#[inline(always)]
unsafe fn count_of<C: Config>(c: *mut u8, cap: u32) -> u32 {
    // SAFETY: `c` is a sealed carrier (contract): its second word is its count.
    let k = unsafe { *(c as *const usize).add(1) };
    if C::HARDEN && k > cap as usize {
        crate::failfast::fail::<C>("free", c as usize, "a freed block was written to (corrupted remote-free batch)");
    }
    k as u32
}

/// Cut the carrier list `c` after its first whole carriers holding at least
/// `max` blocks: returns the cut-off rest (null when the list holds fewer)
/// and the blocks kept. Reads only the kept carriers (their links and
/// counts), not the blocks they carry.
///
/// # Safety
/// As [`unpack`].
pub unsafe fn split_carriers<C: Config>(c: *mut u8, cap: u32, max: u32) -> (*mut u8, u32) {
    let mut n = 0;
    let mut last = c;
    while !last.is_null() {
        // SAFETY: `last` is a sealed carrier of the caller's list (contract).
        n += unsafe { count_of::<C>(last, cap) } + 1;
        // SAFETY: as above.
        let next = unsafe { shard::next_of::<C>(last) };
        if n >= max && !next.is_null() {
            // SAFETY: as above: the link of `last` is the caller's to cut.
            unsafe { set_next::<C>(last, core::ptr::null_mut()) };
            return (next, n);
        }
        last = next;
    }
    (core::ptr::null_mut(), n)
}

/// A thread's buffer of pending remote frees (a part of its cache).
#[repr(C)]
pub struct RemoteBuffer {
    /// Slots holding blocks.
    pub pending: u32,
    /// Buffered remote frees, by (owner, bin).
    pub slots: [RemoteSlot; RSLOTS],
}

impl RemoteBuffer {
    /// Empty every slot (the blocks they held are someone else's now).
    pub fn reset(&mut self) {
        self.pending = 0;
        for r in self.slots.iter_mut() {
            *r = RemoteSlot::EMPTY;
        }
    }
}

#[inline(always)]
fn key(owner: usize, bin: usize) -> u32 {
    ((owner as u32) << 8 | bin as u32) + 1
}

/// The slot of (owner, bin): an owner's bins take `NBINS` consecutive slots
/// (mod `RSLOTS`), so frees for one other owner — the common case of a
/// producer/consumer pair — never evict each other before their batch is
/// full (with 64 hashed slots two bins in every slot did, and batches
/// averaged under two blocks).
#[inline(always)]
fn slot_of(owner: usize, bin: usize) -> usize {
    (owner.wrapping_mul(NBINS + 1) + bin) & (RSLOTS - 1)
}

/// Buffer a free of block `p` (bin `bin`) owned by shard `owner`; publish the
/// slot's chain when it reaches the bin's batch size or the slot is needed for
/// another (owner, bin).
///
/// # Safety
/// `buf` and `ctr` are this thread's live cache's; `p` is a live block of
/// `bin` owned by `owner`.
#[inline]
pub unsafe fn free<C: Config>(buf: &mut RemoteBuffer, ctr: &Counters, p: *mut u8, bin: usize, owner: usize) {
    if bin >= BUDGET_FIRST {
        // SAFETY: as this function's contract.
        unsafe { publish_now::<C>(ctr, p, bin, owner) };
        return;
    }
    let k = key(owner, bin);
    let idx = slot_of(owner, bin);
    let slot = &mut buf.slots[idx];
    if slot.key != k {
        if slot.key != 0 {
            // SAFETY: slot `idx` is non-empty; `buf` and `ctr` are this
            // thread's (contract).
            unsafe { publish_slot::<C>(C::state(), buf, ctr, idx) };
        } else {
            buf.pending += 1;
        }
        let slot = &mut buf.slots[idx];
        slot.key = k;
        // `remote_batch >= 2`: the slot is not full yet.
        slot.left = BINS[bin].remote_batch as u32 - 1;
        slot.cap = carrier_cap(bin);
        slot.head = p;
        slot.tail = p;
        slot.k = 0;
        // SAFETY: `p` is a block being freed by its holder (contract): free,
        // and ours to link.
        unsafe { set_next::<C>(p, core::ptr::null_mut()) };
        return;
    }
    if slot.k < slot.cap {
        // SAFETY: `slot.head` is a carrier of this slot (a free block of
        // `bin`, ours) with room for `cap` pointers after its two words.
        unsafe { set_next::<C>(carried(slot.head, slot.k), p) };
        slot.k += 1;
    } else {
        // SAFETY: the full head carrier and `p` (being freed by its holder,
        // contract) are free blocks of `bin` that this thread alone holds.
        unsafe {
            seal(slot.head, slot.k);
            set_next::<C>(p, slot.head);
        }
        slot.head = p;
        slot.k = 0;
    }
    slot.left -= 1;
    if slot.left == 0 {
        // SAFETY: the slot holds `p`; `buf` and `ctr` are this thread's.
        unsafe { publish_slot::<C>(C::state(), buf, ctr, idx) };
        buf.pending -= 1;
    }
}

/// Publish the free of block `p` of a class above 256 KiB at once, as a
/// one-block carrier: a buffered one would stay with the freeing thread
/// until its batch fills, the slot is needed or the next heartbeat, up to
/// 1016 KiB per (owner, class) (measured: 1 to 4 MiB held by the long-lived
/// thread of `reliability_purge`'s thread waves). One CAS per block of
/// 320 KiB or more costs nothing beside the block's own pages.
///
/// # Safety
/// As [`free`].
#[cold]
unsafe fn publish_now<C: Config>(ctr: &Counters, p: *mut u8, bin: usize, owner: usize) {
    if C::STATS {
        ctr.bump_owned(Ctr::RemoteBatches);
    }
    // SAFETY: `p` is being freed by its holder (contract): a free block of
    // `bin`, at least 16 bytes, ours to write until it is published.
    unsafe {
        set_next::<C>(p, core::ptr::null_mut());
        seal(p, 0);
        publish::<C>(C::state(), owner, bin, Chain { head: p, tail: p, n: 1 });
    }
}

/// Publish slot `idx` (non-empty) and mark it empty; the pending count is the
/// caller's to adjust.
///
/// # Safety
/// `buf` and `ctr` are this thread's cache's; slot `idx` is non-empty.
#[cold]
unsafe fn publish_slot<C: Config>(st: &State<C>, buf: &mut RemoteBuffer, ctr: &Counters, idx: usize) {
    let slot = buf.slots[idx];
    buf.slots[idx] = RemoteSlot::EMPTY;
    let owner = ((slot.key - 1) >> 8) as usize;
    let bin = ((slot.key - 1) & 0xff) as usize;
    if C::STATS {
        ctr.bump_owned(Ctr::RemoteBatches);
    }
    let n = BINS[bin].remote_batch as u32 - slot.left;
    // SAFETY: the head carrier is a free block this thread holds.
    unsafe { seal(slot.head, slot.k) };
    // SAFETY: a slot keyed (owner, bin) holds a carrier list of `n` free
    // blocks of `bin` owned by `owner` (only `free` fills it, under that key).
    unsafe { publish::<C>(st, owner, bin, Chain { head: slot.head, tail: slot.tail, n }) };
}

/// An inbox bin holding more than this many bytes is "long": once it has
/// been long for `INBOX_AGE_MS`, any thread may give it to its central.
pub const INBOX_LONG_BYTES: usize = 1 << 20;
/// How long a long inbox bin waits for its owner before others collect it.
pub const INBOX_AGE_MS: u64 = 50;
/// A publish into a bin already marked long checks its age when the bin's
/// count crosses a multiple of this many bytes.
const AGE_CHECK_BYTES: usize = 256 << 10;
/// `collect_long` runs at most once per this many milliseconds.
const COLLECT_EVERY_MS: u64 = 10;

/// Hand a carrier list of `owner`'s blocks back (`n` blocks, `tail` its last
/// carrier): to its inbox while a thread holds the shard, else (after the
/// push) to its central (so an abandoned shard's runs can be
/// released). A publish that leaves the inbox bin long marks it (for
/// `collect_long`), and gives it to the central itself once it has been long
/// for `INBOX_AGE_MS`: memory freed by other threads comes back even when
/// its owner never allocates that class again.
///
/// # Safety
/// The chain is a sealed carrier list of free blocks of `bin` owned by shard
/// `owner`, the caller's alone.
pub unsafe fn publish<C: Config>(st: &State<C>, owner: usize, bin: usize, chain: Chain) {
    let sh = shard::shard(st, owner);
    // No look at `live` first: the push re-checks it (one load of a line the
    // owner's lock shares, instead of two) and gives the inbox bin to the
    // central itself when the shard is unheld.
    // SAFETY: the chain holds free blocks of `bin` owned by `owner` (contract).
    let n = unsafe { crate::thread::publish_to_inbox::<C>(st, owner, bin, chain) };
    let size = BINS[bin].size as usize;
    let bytes = n as usize * size;
    // Once the bin is marked long, its age is looked at each time another
    // `AGE_CHECK_BYTES` arrive, not at every publish: a bulk of medium
    // frees (two blocks a batch) read the clock and ran a locked CAS on
    // the mark at every batch.
    let before = bytes.saturating_sub(chain.n as usize * size);
    if bytes >= INBOX_LONG_BYTES
        && (sh.inbox.long_since(bin) == 0 || before / AGE_CHECK_BYTES != bytes / AGE_CHECK_BYTES)
    {
        let now = crate::os::now_ms();
        let since = sh.inbox.mark_long(bin, now);
        if crate::os::ms_since(now, since) >= INBOX_AGE_MS {
            // SAFETY: the inbox holds free blocks of `bin` owned by `owner`.
            unsafe { shard::give_inbox::<C>(st, owner, bin) };
        } else {
            let bit = 1u64 << (owner % 64);
            if st.long_inboxes.load(Ordering::Relaxed) & bit == 0 {
                st.long_inboxes.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }
}

/// From any thread's slow path: give the inbox bins that have been long for
/// `INBOX_AGE_MS` to their centrals (their runs can then be released and
/// purged, and reused by any thread). One relaxed load when no inbox is long;
/// otherwise at most once per `COLLECT_EVERY_MS` for all threads, visiting
/// the bins of the marked shards (a bounded number).
pub fn collect_long<C: Config>(st: &State<C>) {
    if st.long_inboxes.load(Ordering::Relaxed) == 0 {
        return;
    }
    collect_long_slow::<C>(st);
}

#[cold]
#[inline(never)]
fn collect_long_slow<C: Config>(st: &State<C>) {
    let now = crate::os::now_ms().max(1);
    let last = st.last_collect.load(Ordering::Relaxed);
    // 0: never ran (the clock may be past half its range, where `elapsed`
    // from 0 reads as 0).
    if (last != 0 && crate::os::ms_since(now, last) < COLLECT_EVERY_MS)
        || st.last_collect.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    // Clear the marks first: a bin marked meanwhile is seen by the next run.
    let mask = st.long_inboxes.swap(0, Ordering::Relaxed);
    let mut still = 0u64;
    for low in 0..64usize {
        if mask & (1 << low) == 0 {
            continue;
        }
        let mut si = low;
        while si < C::SHARDS {
            let inbox = &shard::shard(st, si).inbox;
            for bin in 0..crate::size_class::NBINS {
                let since = inbox.long_since(bin);
                if since == 0 || inbox.is_empty(bin) {
                    continue;
                }
                if crate::os::ms_since(now, since) >= INBOX_AGE_MS {
                    // SAFETY: the blocks of the taken chain are free blocks
                    // of `bin` owned by shard `si`.
                    unsafe { shard::give_inbox::<C>(st, si, bin) };
                } else {
                    still |= 1 << low;
                }
            }
            si += 64;
        }
    }
    if still != 0 {
        st.long_inboxes.fetch_or(still, Ordering::Relaxed);
    }
}

/// Publish every buffered remote free.
///
/// # Safety
/// `buf` and `ctr` are this thread's cache's.
pub unsafe fn publish_all<C: Config>(st: &State<C>, buf: &mut RemoteBuffer, ctr: &Counters) {
    for idx in 0..RSLOTS {
        if buf.slots[idx].key != 0 {
            // SAFETY: slot `idx` is non-empty; `buf` and `ctr` are this
            // thread's (contract).
            unsafe { publish_slot::<C>(st, buf, ctr, idx) };
        }
    }
    buf.pending = 0;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::api::{alloc, free};
    use crate::size_class::bin_of;
    use crate::{Config, Ptag, State};
    use std::vec::Vec;

    macro_rules! remote_config {
        ($m:ident, $shards:expr, $harden:expr) => {
            mod $m {
                use super::*;
                std::thread_local! {
                    static SLOT: core::cell::Cell<*mut u8> = const { core::cell::Cell::new(core::ptr::null_mut()) };
                }
                pub struct T;
                impl Config for T {
                    const NAME: &'static str = stringify!($m);
                    const S110_META: bool = true;
                    const FREE_FAST: bool = false;
                    const PTAG: Ptag = Ptag::Late;
                    const STATS: bool = true;
                    const FAILFAST: bool = true;
                    const SHARDS: usize = $shards;
                    const ARENA_SIZE: usize = 4 << 30;
                    const PURGE: bool = true;
                    const HARDEN: bool = $harden;
                    fn state() -> &'static State<Self> {
                        static S: State<T> = State::new();
                        &S
                    }
                    fn tls_get() -> *mut u8 {
                        SLOT.with(|c| c.get())
                    }
                    fn tls_set(p: *mut u8) {
                        SLOT.with(|c| c.set(p))
                    }
                }
            }
        };
    }
    remote_config!(rbeat, 8, false);
    remote_config!(rcap, 8, false);
    remote_config!(rexit, 4, false);
    remote_config!(rexith, 4, true);
    remote_config!(rcar, 8, false);

    /// Fill `size` bytes at `p` with a pattern of `seed`.
    fn fill(p: usize, size: usize, seed: u64) {
        for i in (0..size).step_by(8) {
            // SAFETY: `p` is a live block of at least `size` bytes (callers), 16-aligned.
            unsafe { ((p + i) as *mut u64).write(seed ^ (i as u64).wrapping_mul(0x9e37_79b9)) };
        }
    }

    /// Whether the pattern `fill` wrote is intact.
    fn intact(p: usize, size: usize, seed: u64) -> bool {
        // SAFETY: as in `fill`.
        (0..size).step_by(8).all(|i| unsafe { ((p + i) as *const u64).read() } == seed ^ (i as u64).wrapping_mul(0x9e37_79b9))
    }

    /// Check the pattern `fill` wrote.
    fn check(p: usize, size: usize, seed: u64) {
        for i in (0..size).step_by(8) {
            // SAFETY: as in `fill`.
            let v = unsafe { ((p + i) as *const u64).read() };
            assert_eq!(v, seed ^ (i as u64).wrapping_mul(0x9e37_79b9), "block {p:#x} byte {i} overwritten");
        }
    }

    /// A remote free that leaves its slot short of a full batch is published
    /// by the freeing thread's heartbeat (it no longer publishes at every
    /// refill): the blocks reach their owner's inbox after at most
    /// `HEARTBEAT_REFILLS` refills of the freeing thread, and come back to
    /// the owner with their contents intact until it reuses them.
    #[test]
    fn part_full_slots_reach_the_inbox_at_the_heartbeat() {
        type T = rbeat::T;
        let (to_owner, from_freer) = std::sync::mpsc::channel::<()>();
        let (to_freer, from_owner) = std::sync::mpsc::channel::<(Vec<usize>, usize)>();
        let owner = std::thread::spawn(move || {
            // SAFETY: align 16 is a power of two.
            let ps: Vec<usize> = (0..3).map(|_| unsafe { alloc::<T>(64, 16) } as usize).collect();
            // SAFETY: the thread's cache is live after its first allocation.
            let si = unsafe { (*crate::thread::raw::<T>()).shard } as usize;
            to_freer.send((ps, si)).unwrap();
            // Hold the shard until the freer is done.
            from_freer.recv().unwrap();
        });
        let (ps, si) = from_owner.recv().unwrap();
        let bin = bin_of(64);
        assert!(BINS[bin].remote_batch > 3);
        std::thread::spawn(move || {
            let st = T::state();
            let inbox = &shard::shard(st, si).inbox;
            for &p in &ps {
                // SAFETY: each p is live; its owner holds its shard.
                unsafe { free::<T>(p as *mut u8) };
            }
            assert!(inbox.is_empty(bin), "three blocks of a 32-block batch were published at once");
            let tc = crate::thread::raw::<T>();
            let refills = || {
                // SAFETY: `tc` is this thread's live cache; counters are atomics.
                unsafe { (*tc).ctr.of(crate::stats::Ctr::Refills).load(Ordering::Relaxed) }
            };
            let start = refills();
            let mut mine = Vec::new();
            while inbox.is_empty(bin) && refills() - start <= crate::tcache::HEARTBEAT_REFILLS as u64 + 1 {
                for k in 1..=128 {
                    // SAFETY: align 16 is a power of two.
                    mine.push(unsafe { alloc::<T>(16 * k, 16) } as usize);
                }
            }
            assert!(!inbox.is_empty(bin), "a part-full slot stayed in the buffer past the heartbeat");
            for p in mine {
                // SAFETY: each p is live.
                unsafe { free::<T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        to_owner.send(()).unwrap();
        owner.join().unwrap();
    }

    /// A remote free writes only into the batch's carriers: of one batch of
    /// 256-byte blocks freed by another thread, only the carriers were
    /// written (one per `carrier_cap + 1` blocks) and the others read as the
    /// owner left them, until the owner unpacks the batch; then every block
    /// comes back to the owner.
    #[test]
    fn remote_frees_write_only_into_carriers() {
        type T = rcar::T;
        let size = 256;
        let bin = bin_of(size);
        let batch = BINS[bin].remote_batch as usize;
        let carriers = batch.div_ceil(carrier_cap(bin) as usize + 1);
        assert!(carriers < batch, "256-byte carriers carry nothing");
        let (to_owner, from_freer) = std::sync::mpsc::channel::<()>();
        let (to_freer, from_owner) = std::sync::mpsc::channel::<Vec<usize>>();
        let owner = std::thread::spawn(move || {
            // SAFETY: align 16 is a power of two.
            let ps: Vec<usize> = (0..batch).map(|_| unsafe { alloc::<T>(size, 16) } as usize).collect();
            for (i, &p) in ps.iter().enumerate() {
                fill(p, size, i as u64);
            }
            to_freer.send(ps.clone()).unwrap();
            from_freer.recv().unwrap();
            let intact = ps.iter().enumerate().filter(|&(i, &p)| intact(p, size, i as u64)).count();
            assert_eq!(intact, batch - carriers, "blocks the remote frees left unwritten (all but the carriers)");
            // SAFETY: align 16 is a power of two.
            // (What the bin still holds from its first refill comes first.)
            let again: Vec<usize> = (0..4 * batch).map(|_| unsafe { alloc::<T>(size, 16) } as usize).collect();
            let new: std::collections::HashSet<usize> = again.iter().copied().collect();
            assert!(ps.iter().all(|p| new.contains(p)), "a block of the batch did not come back");
            for p in again {
                // SAFETY: each p is live.
                unsafe { free::<T>(p as *mut u8) };
            }
        });
        let ps = from_owner.recv().unwrap();
        std::thread::spawn(move || {
            for p in ps {
                // SAFETY: each p is live; its owner holds its shard.
                unsafe { free::<T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        to_owner.send(()).unwrap();
        owner.join().unwrap();
    }

    /// Blocks of a small class freed in bulk by another thread: the refill
    /// that takes the inbox chain keeps at most `STASH_SMALL_BYTES` of them
    /// in the stash and gives the rest to the central; the owner's next
    /// allocations reuse them at a bounded number of link steps each.
    #[test]
    fn small_class_stash_is_capped_and_blocks_come_back() {
        type T = rcap::T;
        std::thread::spawn(|| {
            let (n, size) = (6000usize, 64usize);
            let bin = bin_of(size);
            // SAFETY: align 16 is a power of two.
            let first: Vec<usize> = (0..n).map(|_| unsafe { alloc::<T>(size, 16) } as usize).collect();
            let to_free = first.clone();
            std::thread::spawn(move || {
                for p in to_free {
                    // SAFETY: each p is live; the owner is alive.
                    unsafe { free::<T>(p as *mut u8) };
                }
            })
            .join()
            .unwrap();
            let tc = crate::thread::raw::<T>();
            let before = shard::walks::get();
            let mut second = Vec::new();
            // Empty the bin, then one refill takes the whole inbox chain.
            // SAFETY: `tc` is this thread's live cache.
            while unsafe { (*tc).stash[bin] }.is_null() && second.len() < 1000 {
                // SAFETY: align 16 is a power of two.
                second.push(unsafe { alloc::<T>(size, 16) } as usize);
            }
            // SAFETY: `tc` is this thread's live cache; the stash is a
            // carrier list of its free blocks, counted and not changed (no
            // cut with `max` = all).
            let (_, stashed) = unsafe { split_carriers::<T>((*tc).stash[bin], carrier_cap(bin), u32::MAX) };
            let stashed = stashed as usize;
            assert!(stashed > 0, "the refill stashed nothing");
            assert!(stashed <= (crate::tcache::STASH_SMALL_BYTES as usize / size).max(2), "stash of {stashed} blocks");
            while second.len() < n {
                // SAFETY: align 16 is a power of two.
                second.push(unsafe { alloc::<T>(size, 16) } as usize);
            }
            let steps = shard::walks::get() - before;
            let old: std::collections::HashSet<usize> = first.into_iter().collect();
            let reused = second.iter().filter(|p| old.contains(p)).count();
            assert!(reused * 10 >= n * 9, "only {reused} of {n} blocks came back");
            assert!(steps <= 3 * n as u64, "{steps} link steps for {n} blocks");
            for p in second {
                // SAFETY: each p is live.
                unsafe { free::<T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
    }

    /// Many threads on few shards hand blocks (patterned) to each other and
    /// exit at staggered times, so remote frees race the exit of their
    /// owner shard's last thread: every block arrives intact, and once all
    /// threads are gone no unheld shard keeps anything in its inbox (the
    /// publisher's re-check and the exit drain of `thread::publish_to_inbox`
    /// and `retire`).
    #[test]
    fn remote_frees_racing_owner_exit_leave_no_inbox_behind() {
        racing_owner_exit::<rexit::T>();
    }

    /// The same with `harden` (carried pointers stored encoded and checked
    /// like links).
    #[test]
    fn remote_frees_racing_owner_exit_hardened() {
        racing_owner_exit::<rexith::T>();
    }

    fn racing_owner_exit<T: Config>() {
        const THREADS: usize = 12;
        const ROUNDS: usize = 40;
        for wave in 0..3u64 {
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| std::sync::mpsc::channel::<Vec<(usize, usize, u64)>>()).unzip();
            let hs: Vec<_> = rxs
                .into_iter()
                .enumerate()
                .map(|(me, rx)| {
                    let txs = txs.clone();
                    std::thread::spawn(move || {
                        let mut seed = (wave * 1000 + me as u64) | 1;
                        let mut next = || {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            seed
                        };
                        let free_all = |v: Vec<(usize, usize, u64)>| {
                            for (p, size, tag) in v {
                                check(p, size, tag);
                                // SAFETY: each block is live and handed to us alone.
                                unsafe { free::<T>(p as *mut u8) };
                            }
                        };
                        // Threads leave after different numbers of rounds.
                        for _ in 0..ROUNDS / 2 + me * ROUNDS / THREADS {
                            let v: Vec<(usize, usize, u64)> = (0..48)
                                .map(|_| {
                                    let size = [24, 64, 200, 1000, 2048, 5000, 70_000][(next() % 7) as usize];
                                    // SAFETY: align 16 is a power of two.
                                    let p = unsafe { alloc::<T>(size, 16) } as usize;
                                    assert!(p != 0);
                                    let tag = next();
                                    fill(p, size, tag);
                                    (p, size, tag)
                                })
                                .collect();
                            let to = (me + 1 + (next() as usize % (THREADS - 1))) % THREADS;
                            // A receiver that has left drops the blocks back to us.
                            if let Err(e) = txs[to].send(v) {
                                free_all(e.0);
                            }
                            while let Ok(v) = rx.try_recv() {
                                free_all(v);
                            }
                        }
                        drop(txs);
                        // Blocks still queued for us are freed by the exiting thread.
                        while let Ok(v) = rx.try_recv() {
                            free_all(v);
                        }
                    })
                })
                .collect();
            drop(txs);
            for h in hs {
                h.join().unwrap();
            }
        }
        // Blocks sent to a thread after it left stay in its closed channel:
        // dropped with it (never freed; they belong to the arena still).
        let st = T::state();
        for si in 0..T::SHARDS {
            let sh = shard::shard(st, si);
            assert_eq!(sh.live.load(Ordering::SeqCst), 0, "shard {si} still held");
            for bin in 0..NBINS {
                assert!(sh.inbox.is_empty(bin), "shard {si} bin {bin}: an unheld shard's inbox keeps blocks");
            }
        }
    }

    /// A slot's first block leaves it short of a full batch (`RemoteSlot::left`
    /// starts at `remote_batch - 1` and a free publishes when it reaches 0).
    #[test]
    fn every_remote_batch_holds_two_blocks_or_more() {
        for (bin, info) in BINS.iter().enumerate() {
            assert!(info.remote_batch >= 2, "bin {bin}: remote batch {}", info.remote_batch);
        }
    }

    /// A refill unpacks whole carriers until it has half a bin plus the block
    /// it returns (`max / 2 + 1`): at most one carrier more, which holds
    /// `carrier_cap + 1` blocks, so the bin gets at most `max / 2 + cap`
    /// blocks, within its threshold `max` when `cap <= max / 2`. A refill
    /// from the inbox therefore never over-fills a bin. (The classes above
    /// 256 KiB are cached by bytes, threshold 0: the one block a carrier
    /// brings more stays only within the thread's budget, see
    /// `tcache::refill_from`.)
    #[test]
    fn remote_batch_fits_a_refill() {
        for (bin, info) in BINS.iter().enumerate().take(crate::size_class::BUDGET_FIRST) {
            assert!(info.max_cached >= 2 * info.batch, "bin {bin}");
            assert!(carrier_cap(bin) < info.remote_batch as u32, "bin {bin}");
            assert!(
                carrier_cap(bin) <= info.max_cached as u32 / 2,
                "bin {bin}: a carrier of {} blocks over-fills a bin of {}",
                carrier_cap(bin) + 1,
                info.max_cached
            );
        }
    }

    /// One owner's bins take distinct slots.
    #[test]
    fn one_owners_bins_never_share_a_slot() {
        for owner in [0usize, 1, 7, 63, 200] {
            let mut seen = [false; RSLOTS];
            for bin in 0..NBINS {
                let i = slot_of(owner, bin);
                assert!(!seen[i], "owner {owner}: bin {bin} shares slot {i}");
                seen[i] = true;
            }
        }
    }
}
