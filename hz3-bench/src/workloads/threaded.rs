//! Multi-thread workloads: mt-remote, cache-thrash, cache-scratch, larson, producer/consumer.
//!
//! All run through [`team::run`]: threads, slot arrays and rings are created before the
//! warm-up; the clock covers only the timed phase's work (including draining the rings, so
//! every remote free is on the clock); blocks still live afterwards are freed off the clock.

use super::block::{alloc_small, alloc_touch, free_block, layout};
use super::ring::Ring;
use super::rng::Lcg;
use super::team::{self, relax, Phases, SpinBarrier, PHASES, TIMED, WARM};
use super::{Outcome, Params};
use core::alloc::GlobalAlloc;
use std::ptr::{self, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Iterations for `phase`.
fn iters(p: &Params, phase: u32) -> u64 {
    if phase == WARM {
        p.warm
    } else {
        p.iters
    }
}

/// A distinct LCG stream per (thread, phase).
fn seed(tid: usize, phase: u32) -> u64 {
    (tid as u64 + 1) * 1000 + phase as u64
}

/// Timed-phase counters, summed over threads.
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    remote: AtomicU64,
    frees: AtomicU64,
}

impl Counters {
    fn add(&self, phase: u32, ops: u64, remote: u64, frees: u64) {
        if phase == TIMED {
            self.ops.fetch_add(ops, Ordering::Relaxed);
            self.remote.fetch_add(remote, Ordering::Relaxed);
            self.frees.fetch_add(frees, Ordering::Relaxed);
        }
    }
    fn outcome(&self, secs: f64) -> Outcome {
        Outcome {
            ops: self.ops.load(Ordering::Relaxed),
            secs,
            remote_frees: self.remote.load(Ordering::Relaxed),
            frees: self.frees.load(Ordering::Relaxed),
        }
    }
}

/// mt-remote: `threads` threads, each with `slots` private slots picked by an LCG (full → free,
/// empty → malloc). On free, with probability R% the block is pushed to the ring read by the
/// next thread, which frees it; if that ring is full the block is freed locally. Each thread
/// drains its incoming ring every 32 iterations and, when done, until its producer is done.
pub fn mt_remote<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let t = p.threads;
    // rings[i] carries blocks from thread i to thread (i + 1) % t.
    let rings: Vec<Ring> = (0..t).map(|_| Ring::new(p.extra as usize)).collect();
    let produced: Vec<AtomicU32> = (0..t).map(|_| AtomicU32::new(0)).collect();
    let c = Counters::default();
    let worker = |tid: usize, ph: &Phases| {
        let mut slots: Vec<*mut u8> = vec![null_mut(); p.slots];
        let n_slots = p.slots as u32;
        let out = &rings[tid];
        let prev = (tid + t - 1) % t;
        let inbox = &rings[prev];
        // SAFETY (for the closure's body): every pointer in `inbox` is a live block of `a`
        // that its producer gave up when pushing it.
        let free_remote = |q: *mut u8| unsafe { free_block(a, q) };
        for phase in PHASES {
            ph.start(phase);
            let n = iters(p, phase);
            let mut rng = Lcg::new(seed(tid, phase));
            let (mut remote, mut local) = (0u64, 0u64);
            for it in 0..n {
                let i = rng.below(n_slots) as usize;
                let s = slots[i];
                if s.is_null() {
                    slots[i] = alloc_touch(a, p.sizes.draw(&mut rng));
                } else {
                    slots[i] = null_mut();
                    if !(rng.below(100) < p.remote_pct
                        && push_or_give_up(out, s, || remote += inbox.drain(free_remote)))
                    {
                        // SAFETY: `s` is a live block of `a` just removed from its slot.
                        unsafe { free_block(a, s) };
                        local += 1;
                    }
                }
                if it & 31 == 31 {
                    remote += inbox.drain(free_remote);
                }
            }
            produced[tid].store(phase, Ordering::Release);
            let mut spins = 0;
            loop {
                let producer_done = produced[prev].load(Ordering::Acquire) == phase;
                remote += inbox.drain(free_remote);
                if producer_done {
                    break;
                }
                relax(&mut spins);
            }
            c.add(phase, n, remote, remote + local);
            ph.done();
            for s in slots.iter_mut().filter(|s| !s.is_null()) {
                // SAFETY: live block of `a`, cleared right after.
                unsafe { free_block(a, *s) };
                *s = null_mut();
            }
            ph.cleaned();
        }
    };
    let d = team::run(t, worker, |_| {});
    c.outcome(d.as_secs_f64())
}

/// How often a producer facing a full ring drains its own inbox, yields and retries before it
/// frees the block locally instead.
pub const FULL_RING_TRIES: u32 = 4;

/// Push `b` into `out`; while the ring is full, run `help` (drain our own inbox, so a cycle
/// of waiting threads cannot deadlock), yield (the consumer may be waiting for a core) and
/// retry, at most [`FULL_RING_TRIES`] times. `false`: give up, the caller frees locally.
#[inline(always)]
fn push_or_give_up(out: &Ring, b: *mut u8, mut help: impl FnMut()) -> bool {
    if out.push(b) {
        return true;
    }
    for _ in 0..FULL_RING_TRIES {
        help();
        std::thread::yield_now();
        if out.push(b) {
            return true;
        }
    }
    false
}

/// Write every byte of an 8-byte object `writes` times in total. Out of line, one copy for
/// every allocator: the workload loops are generic over the allocator, and a copy of this
/// loop inlined into each ran at a speed that depended on where the copy landed (these
/// writes are 99.8% of cache_thrash's instructions).
#[inline(never)]
fn scribble(o: *mut u8, writes: u32) {
    for r in 0..writes {
        // SAFETY: `o` is a live object of at least 8 bytes; the offset is < 8.
        unsafe { ptr::write_volatile(o.add((r & 7) as usize), r as u8) };
    }
}

/// One thread's cache-thrash loop: malloc(8), scribble, free; returns ops (2 per object).
fn thrash_loop<A: GlobalAlloc>(a: &A, n: u64, writes: u32) -> u64 {
    for _ in 0..n {
        let o = alloc_small(a, 8);
        scribble(o, writes);
        // SAFETY: `o` is the live 8-byte object just allocated from `a`.
        unsafe { a.dealloc(o, layout(8)) };
    }
    2 * n
}

/// cache-thrash (active false sharing): each thread repeatedly mallocs an 8-byte object,
/// writes it `extra` times and frees it. An allocator that hands neighbouring bytes of one
/// cache line to different threads makes the writes contend.
pub fn cache_thrash<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let c = Counters::default();
    let worker = |_tid: usize, ph: &Phases| {
        for phase in PHASES {
            ph.start(phase);
            let ops = thrash_loop(a, iters(p, phase), p.extra);
            c.add(phase, ops, 0, 0);
            ph.done();
            ph.cleaned();
        }
    };
    let d = team::run(p.threads, worker, |_| {});
    c.outcome(d.as_secs_f64())
}

/// cache-scratch (passive false sharing): the main thread mallocs one 8-byte object per
/// thread back to back (on the clock) and hands them out; each thread writes and frees its
/// object, then runs the cache-thrash loop. An allocator that reuses the freed object for
/// the freeing thread keeps the threads writing into one shared cache line.
pub fn cache_scratch<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let c = Counters::default();
    let handoff: Vec<AtomicPtr<u8>> = (0..p.threads).map(|_| AtomicPtr::new(null_mut())).collect();
    let worker = |tid: usize, ph: &Phases| {
        for phase in PHASES {
            ph.start(phase);
            let o = handoff[tid].swap(null_mut(), Ordering::AcqRel);
            scribble(o, p.extra);
            // SAFETY: `o` is the live 8-byte object the main thread allocated from `a` for us.
            unsafe { a.dealloc(o, layout(8)) };
            let ops = 2 + thrash_loop(a, iters(p, phase), p.extra);
            c.add(phase, ops, 0, 0);
            ph.done();
            ph.cleaned();
        }
    };
    let d = team::run(p.threads, worker, |_phase| {
        for h in &handoff {
            h.store(alloc_small(a, 8), Ordering::Release);
        }
    });
    c.outcome(d.as_secs_f64())
}

/// larson: each thread fills its own array of `slots` blocks, then replaces random slots
/// (free the old block, malloc a new one). Every `extra` replacements all threads meet at a
/// barrier and move on to the next thread's array, so they free blocks other threads
/// allocated (a server handing objects between worker threads).
pub fn larson<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let t = p.threads;
    let arrays: Vec<Vec<AtomicPtr<u8>>> = (0..t)
        .map(|_| (0..p.slots).map(|_| AtomicPtr::new(null_mut())).collect())
        .collect();
    let barrier = SpinBarrier::new(t);
    let c = Counters::default();
    let worker = |tid: usize, ph: &Phases| {
        let mut gen = 0;
        let n_slots = p.slots as u32;
        let per_epoch = p.extra as u64;
        for phase in PHASES {
            ph.start(phase);
            let mut rng = Lcg::new(seed(tid, phase));
            for s in &arrays[tid] {
                s.store(alloc_touch(a, p.sizes.draw(&mut rng)), Ordering::Relaxed);
            }
            barrier.wait(&mut gen);
            let epochs = iters(p, phase).div_ceil(per_epoch);
            for e in 0..epochs as usize {
                let arr = &arrays[(tid + e) % t];
                for _ in 0..per_epoch {
                    let i = rng.below(n_slots) as usize;
                    let old = arr[i].load(Ordering::Relaxed);
                    // SAFETY: during this epoch only this thread touches `arr`; `old` is a live
                    // block of `a` (the barrier published the previous owner's stores).
                    unsafe { free_block(a, old) };
                    arr[i].store(alloc_touch(a, p.sizes.draw(&mut rng)), Ordering::Relaxed);
                }
                barrier.wait(&mut gen);
            }
            c.add(phase, p.slots as u64 + epochs * per_epoch, 0, 0);
            ph.done();
            for s in &arrays[tid] {
                // SAFETY: after the last barrier nobody else touches the arrays; each entry is
                // a live block of `a`.
                unsafe { free_block(a, s.swap(null_mut(), Ordering::Relaxed)) };
            }
            // Everybody must have cleaned before the next phase refills.
            barrier.wait(&mut gen);
            ph.cleaned();
        }
    };
    let d = team::run(t, worker, |_| {});
    c.outcome(d.as_secs_f64())
}

/// producer/consumer: thread 0 mallocs (sizes from `p.sizes`), touches and pushes every block
/// into a ring of `extra` entries (waiting while full); thread 1 pops and frees them, so every
/// free is remote. Ops = mallocs + frees.
pub fn prodcons<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let ring = Ring::new(p.extra as usize);
    let produced = AtomicU32::new(0);
    let c = Counters::default();
    let worker = |tid: usize, ph: &Phases| {
        for phase in PHASES {
            ph.start(phase);
            let n = iters(p, phase);
            if tid == 0 {
                let mut rng = Lcg::new(seed(0, phase));
                for _ in 0..n {
                    let b = alloc_touch(a, p.sizes.draw(&mut rng));
                    let mut spins = 0;
                    while !ring.push(b) {
                        relax(&mut spins);
                    }
                }
                produced.store(phase, Ordering::Release);
                c.add(phase, n, 0, 0);
            } else {
                let mut freed = 0;
                let mut spins = 0;
                loop {
                    let done = produced.load(Ordering::Acquire) == phase;
                    // SAFETY: every pointer in the ring is a live block of `a` given up by
                    // the producer.
                    let k = ring.drain(|q| unsafe { free_block(a, q) });
                    freed += k;
                    if done {
                        break;
                    }
                    if k == 0 {
                        relax(&mut spins);
                    } else {
                        spins = 0;
                    }
                }
                c.add(phase, freed, freed, freed);
            }
            ph.done();
            ph.cleaned();
        }
    };
    let d = team::run(2, worker, |_| {});
    c.outcome(d.as_secs_f64())
}
