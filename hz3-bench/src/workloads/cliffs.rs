//! Workloads shaped like the places where allocators fall off cliffs: zeroed
//! big blocks, bulk frees by another thread, many live aligned blocks, and
//! big blocks resized by two threads.
//!
//! Each runs an untimed warm-up pass, then the timed pass; helper threads and
//! slot arrays come from the harness's allocator before the clock starts.

use super::block::{alloc_small, alloc_touch, free_block, layout, realloc_touch};
use super::rng::Lcg;
use super::team::{self, wait_until, Phases, PHASES, TIMED};
use super::{Outcome, Params};
use core::alloc::{GlobalAlloc, Layout};
use std::ptr::{self, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// The workload shapes of this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `slots` live slots; an empty slot gets `calloc` of a size from `sizes`
    /// (64 KiB–1 MiB) of which the first 4 KiB and one word every 64 KiB are
    /// written; a full slot is freed.
    CallocLarge,
    /// Rounds: the main thread allocates `slots` blocks of one size, a second
    /// thread frees them all, the main thread allocates as many again (and
    /// frees them). The size cycles over 4, 16, 64 and 256 KiB with the count
    /// scaled so a round holds at most `extra` MiB.
    RemoteBulk,
    /// `slots` live blocks of 1–4 KiB aligned to 8, 16, 32 or 64 KiB; each
    /// iteration replaces one and makes 8 small malloc/free pairs.
    AlignedMany,
    /// `threads` threads, each with `slots` slots of 256 KiB–8 MiB blocks:
    /// an empty slot is allocated, a full one is grown or shrunk by `realloc`
    /// (half the time) or freed.
    LargeMixed,
}

/// Warm-up pass, then timed pass; `pass(iters, seed)` returns (ops, seconds).
fn warm_then_time(p: &Params, mut pass: impl FnMut(u64, u64) -> (u64, f64)) -> Outcome {
    pass(p.warm, 1);
    let (ops, secs) = pass(p.iters, 2);
    Outcome { ops, secs, remote_frees: 0, frees: 0 }
}

/// Run `shape` with `p`.
pub fn run<A: GlobalAlloc + Sync>(a: &A, shape: Shape, p: &Params) -> Outcome {
    match shape {
        Shape::CallocLarge => calloc_large(a, p),
        Shape::RemoteBulk => remote_bulk(a, p),
        Shape::AlignedMany => aligned_many(a, p),
        Shape::LargeMixed => large_mixed(a, p),
    }
}

/// Parameter description of `shape`.
pub fn describe(shape: Shape, p: &Params) -> String {
    match shape {
        Shape::CallocLarge => format!(
            " slots={} calloc sizes={} (first 4 KiB and a word per 64 KiB written)",
            p.slots,
            p.sizes.describe()
        ),
        Shape::RemoteBulk => format!(
            " per round: up to {} blocks (at most {} MiB) of 4/16/64/256 KiB (cycling) allocated, freed by another thread, allocated again and freed",
            p.slots, p.extra
        ),
        Shape::AlignedMany => format!(
            " live aligned blocks={} (1-4 KiB aligned to 8/16/32/64 KiB); per iteration one replaced and 8 malloc/free pairs of 16-256 B",
            p.slots
        ),
        Shape::LargeMixed => format!(" slots/thread={} sizes={} (empty: malloc; full: realloc or free, half each)", p.slots, p.sizes.describe()),
    }
}

fn calloc_large<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let mut slots: Vec<(*mut u8, usize)> = vec![(null_mut(), 0); p.slots];
    let n = p.slots as u32;
    warm_then_time(p, |iters, seed| {
        let mut rng = Lcg::new(seed);
        let t0 = Instant::now();
        for _ in 0..iters {
            let i = rng.below(n) as usize;
            let (s, size) = slots[i];
            if s.is_null() {
                let size = p.sizes.draw(&mut rng);
                // SAFETY: the layout has a non-zero size.
                let q = unsafe { a.alloc_zeroed(layout(size)) };
                assert!(!q.is_null(), "calloc of {size} bytes failed");
                // SAFETY: `q` is a fresh block of `size` ≥ 64 KiB bytes.
                unsafe {
                    ptr::write_bytes(q, 1, 4096);
                    let mut off = 65536;
                    while off < size {
                        ptr::write_volatile(q.add(off) as *mut u64, off as u64);
                        off += 65536;
                    }
                }
                slots[i] = (q, size);
            } else {
                // SAFETY: `s` is a live block of `a` allocated with this size.
                unsafe { a.dealloc(s, layout(size)) };
                slots[i] = (null_mut(), 0);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        for s in slots.iter_mut().filter(|s| !s.0.is_null()) {
            // SAFETY: as above.
            unsafe { a.dealloc(s.0, layout(s.1)) };
            *s = (null_mut(), 0);
        }
        (iters, secs)
    })
}

/// Block sizes of `remote_bulk`, cycled per round.
const BULK_SIZES: [usize; 4] = [4 << 10, 16 << 10, 64 << 10, 256 << 10];

fn remote_bulk<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let ptrs: Vec<AtomicPtr<u8>> = (0..p.slots).map(|_| AtomicPtr::new(null_mut())).collect();
    // Round handed to the freeing thread (0 = none, u32::MAX = stop) and its size.
    let round = AtomicU32::new(0);
    let freed = AtomicU32::new(0);
    let size_of_round = AtomicU64::new(0);
    let count_of_round = AtomicU64::new(0);
    let cap = (p.extra as usize) << 20;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seen = 0;
            loop {
                wait_until(|| round.load(Ordering::Acquire) != seen);
                seen = round.load(Ordering::Acquire);
                if seen == u32::MAX {
                    return;
                }
                let size = size_of_round.load(Ordering::Relaxed) as usize;
                for slot in &ptrs[..count_of_round.load(Ordering::Relaxed) as usize] {
                    // SAFETY: the main thread published live blocks of `a` of this size.
                    unsafe { a.dealloc(slot.swap(null_mut(), Ordering::Relaxed), layout(size)) };
                }
                freed.store(seen, Ordering::Release);
            }
        });
        let mut rounds_done = 0u32;
        let out = warm_then_time(p, |iters, _| {
            let t0 = Instant::now();
            let mut ops = 0;
            for r in 0..iters {
                let size = BULK_SIZES[r as usize % BULK_SIZES.len()];
                let n = p.slots.min(cap / size).max(1);
                for slot in &ptrs[..n] {
                    slot.store(alloc_touch(a, size), Ordering::Relaxed);
                }
                size_of_round.store(size as u64, Ordering::Relaxed);
                count_of_round.store(n as u64, Ordering::Relaxed);
                rounds_done += 1;
                round.store(rounds_done, Ordering::Release);
                wait_until(|| freed.load(Ordering::Acquire) == rounds_done);
                for slot in &ptrs[..n] {
                    slot.store(alloc_touch(a, size), Ordering::Relaxed);
                }
                for slot in &ptrs[..n] {
                    // SAFETY: live blocks of `a` made just above.
                    unsafe { free_block(a, slot.swap(null_mut(), Ordering::Relaxed)) };
                }
                ops += 4 * n as u64;
            }
            (ops, t0.elapsed().as_secs_f64())
        });
        round.store(u32::MAX, Ordering::Release);
        out
    })
}

fn aligned_layout(rng: &mut Lcg) -> Layout {
    let align = 8192 << rng.below(4);
    let size = 1024 + rng.below(3073) as usize;
    Layout::from_size_align(size, align).expect("valid aligned layout")
}

fn aligned_many<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(p.slots);
    let n = p.slots as u32;
    let alloc_aligned = |l: Layout| {
        // SAFETY: the layout has a non-zero size.
        let q = unsafe { a.alloc(l) };
        assert!(!q.is_null(), "aligned allocation failed");
        // SAFETY: `q` has `l.size()` ≥ 1024 bytes.
        unsafe { ptr::write_volatile(q as *mut u64, 1) };
        q
    };
    warm_then_time(p, |iters, seed| {
        let mut rng = Lcg::new(seed);
        let t0 = Instant::now();
        for _ in 0..p.slots {
            let l = aligned_layout(&mut rng);
            live.push((alloc_aligned(l), l));
        }
        let mut ops = p.slots as u64;
        for _ in 0..iters {
            let i = rng.below(n) as usize;
            let (q, l) = live[i];
            // SAFETY: a live block of `a` allocated with `l`.
            unsafe { a.dealloc(q, l) };
            let l = aligned_layout(&mut rng);
            live[i] = (alloc_aligned(l), l);
            for _ in 0..8 {
                let size = 16 + rng.below(241) as usize;
                let b = alloc_small(a, size);
                // SAFETY: `b` is a live block of `size` ≥ 16 bytes.
                unsafe {
                    ptr::write_volatile(b, 1);
                    a.dealloc(b, layout(size));
                }
            }
            ops += 18;
        }
        let secs = t0.elapsed().as_secs_f64();
        for (q, l) in live.drain(..) {
            // SAFETY: as above.
            unsafe { a.dealloc(q, l) };
        }
        (ops, secs)
    })
}

fn large_mixed<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let ops = AtomicU64::new(0);
    let worker = |tid: usize, ph: &Phases| {
        let mut slots: Vec<*mut u8> = vec![null_mut(); p.slots];
        let n = p.slots as u32;
        for phase in PHASES {
            ph.start(phase);
            let iters = if phase == TIMED { p.iters } else { p.warm };
            let mut rng = Lcg::new(tid as u64 * 16 + phase as u64);
            for _ in 0..iters {
                let i = rng.below(n) as usize;
                let s = slots[i];
                if s.is_null() {
                    slots[i] = alloc_touch(a, p.sizes.draw(&mut rng));
                } else if rng.below(2) == 0 {
                    // SAFETY: `s` is a live block of `a` made by `alloc_touch`.
                    slots[i] = unsafe { realloc_touch(a, s, p.sizes.draw(&mut rng)) };
                } else {
                    // SAFETY: as above; the slot is cleared.
                    unsafe { free_block(a, s) };
                    slots[i] = null_mut();
                }
            }
            if phase == TIMED {
                ops.fetch_add(iters, Ordering::Relaxed);
            }
            ph.done();
            for s in slots.iter_mut().filter(|s| !s.is_null()) {
                // SAFETY: live block of `a`, cleared right after.
                unsafe { free_block(a, *s) };
                *s = null_mut();
            }
            ph.cleaned();
        }
    };
    let d = team::run(p.threads, worker, |_| {});
    Outcome { ops: ops.load(Ordering::Relaxed), secs: d.as_secs_f64(), remote_frees: 0, frees: 0 }
}
