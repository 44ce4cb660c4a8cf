//! Remote free: blocks freed by a thread that is not on their owner shard.
//!
//! Owns: the thread-local buffer of pending remote frees (a small direct-mapped
//! table keyed by (owner, bin), each slot a chain) and publishing a chain to the
//! owner's inbox with one CAS. Must never: write another shard's central without
//! its lock, or publish a chain to the wrong (owner, bin) inbox.

use crate::shard::{self, set_next, Chain};
use crate::size_class::BINS;
use crate::stats::Ctr;
use crate::tcache::{self, ThreadCache};
use crate::{Config, State};
use core::sync::atomic::Ordering;

/// Slots in the remote buffer (power of two).
pub const RSLOTS: usize = 64;

/// Pending remote frees for one (owner, bin).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RemoteSlot {
    /// `(owner << 8 | bin) + 1`, or 0 when the slot is empty.
    pub key: u32,
    /// Blocks in `chain`.
    pub n: u32,
    /// First block.
    pub head: *mut u8,
    /// Last block.
    pub tail: *mut u8,
}

impl RemoteSlot {
    /// An empty slot.
    pub const EMPTY: RemoteSlot = RemoteSlot { key: 0, n: 0, head: core::ptr::null_mut(), tail: core::ptr::null_mut() };
}

#[inline(always)]
fn key(owner: usize, bin: usize) -> u32 {
    ((owner as u32) << 8 | bin as u32) + 1
}

/// Buffer a free of block `p` (bin `bin`) owned by shard `owner`; publish the
/// slot's chain when it reaches the bin's batch size or the slot is needed for
/// another (owner, bin).
///
/// # Safety
/// `tc` is this thread's live cache; `p` is a live block of `bin` owned by `owner`.
#[inline(never)]
pub unsafe fn free<C: Config>(tc: *mut ThreadCache, p: *mut u8, bin: usize, owner: usize) {
    let tcr = &mut *tc;
    let k = key(owner, bin);
    let idx = (owner.wrapping_mul(0x9e37) ^ bin) & (RSLOTS - 1);
    let slot = &mut tcr.remote[idx];
    if slot.key != k {
        if slot.n != 0 {
            publish_slot::<C>(C::state(), tcr, idx);
        } else {
            tcr.remote_pending += 1;
        }
        let slot = &mut tcr.remote[idx];
        slot.key = k;
        slot.n = 1;
        slot.head = p;
        slot.tail = p;
        set_next::<C>(p, core::ptr::null_mut());
        return;
    }
    set_next::<C>(p, slot.head);
    slot.head = p;
    slot.n += 1;
    if slot.n >= BINS[bin].remote_batch as u32 {
        publish_slot::<C>(C::state(), tcr, idx);
        tcr.remote_pending -= 1;
    }
}

/// Publish slot `idx` (non-empty) and mark it empty; the pending count is the
/// caller's to adjust.
#[cold]
unsafe fn publish_slot<C: Config>(st: &State<C>, tcr: &mut ThreadCache, idx: usize) {
    let slot = tcr.remote[idx];
    tcr.remote[idx] = RemoteSlot::EMPTY;
    let owner = ((slot.key - 1) >> 8) as usize;
    let bin = ((slot.key - 1) & 0xff) as usize;
    tcr.count::<C>(Ctr::RemoteBatches);
    publish::<C>(st, owner, bin, Chain { head: slot.head, tail: slot.tail, n: slot.n });
}

/// Hand a chain of `owner`'s blocks back: to its inbox while a thread holds the
/// shard, else straight to its central (so an abandoned shard's runs can be
/// released).
///
/// # Safety
/// The chain holds free blocks of `bin` owned by shard `owner`.
pub unsafe fn publish<C: Config>(st: &State<C>, owner: usize, bin: usize, chain: Chain) {
    let sh = shard::shard(st, owner);
    if sh.live.load(Ordering::Acquire) == 0 {
        tcache::give_chain::<C>(st, owner, bin, chain);
    } else {
        crate::thread::publish_to_inbox::<C>(st, owner, bin, chain);
    }
}

/// Publish every buffered remote free.
///
/// # Safety
/// `tcr` is this thread's cache.
pub unsafe fn publish_all<C: Config>(st: &State<C>, tcr: &mut ThreadCache) {
    for idx in 0..RSLOTS {
        if tcr.remote[idx].n != 0 {
            publish_slot::<C>(st, tcr, idx);
        }
    }
    tcr.remote_pending = 0;
}
