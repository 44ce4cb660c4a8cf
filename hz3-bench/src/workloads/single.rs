//! Single-thread workloads, run on the child's main thread: random slots (random_mixed / dist),
//! the malloc/free pair loop, the LIFO batch loop and realloc growth.
//!
//! Each runs a warm-up pass and then the timed pass; a pass starts from an empty state and its
//! leftover blocks are freed after the clock stops.

use super::block::{alloc_touch, free_block, realloc_touch};
use super::rng::Lcg;
use super::{Outcome, Params};
use core::alloc::GlobalAlloc;
use std::hint::black_box;
use std::ptr::null_mut;
use std::time::Instant;

/// Warm-up pass, then timed pass; `pass(iters, seed)` returns (ops, seconds).
fn warm_then_time(p: &Params, mut pass: impl FnMut(u64, u64) -> (u64, f64)) -> Outcome {
    pass(p.warm, 1);
    let (ops, secs) = pass(p.iters, 2);
    Outcome {
        ops,
        secs,
        remote_frees: 0,
        frees: 0,
    }
}

/// random_mixed / dist: `slots` live slots; an LCG picks a slot each iteration: full → free,
/// empty → malloc of a size drawn from `p.sizes`.
pub fn slots<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let mut slots: Vec<*mut u8> = vec![null_mut(); p.slots];
    let n_slots = p.slots as u32;
    warm_then_time(p, |iters, seed| {
        let mut rng = Lcg::new(seed);
        let t0 = Instant::now();
        for _ in 0..iters {
            let i = rng.below(n_slots) as usize;
            let s = slots[i];
            if s.is_null() {
                slots[i] = alloc_touch(a, p.sizes.draw(&mut rng));
            } else {
                // SAFETY: `s` is a live block from `a`, removed from its slot.
                unsafe { free_block(a, s) };
                slots[i] = null_mut();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        for s in slots.iter_mut().filter(|s| !s.is_null()) {
            // SAFETY: live block from `a`, cleared from its slot right after.
            unsafe { free_block(a, *s) };
            *s = null_mut();
        }
        (iters, secs)
    })
}

/// malloc(64) / write / free, `iters` times; ops = 2 per pair.
pub fn pair<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let size = 64;
    warm_then_time(p, |iters, _| {
        let t0 = Instant::now();
        for _ in 0..iters {
            let b = black_box(alloc_touch(a, size));
            // SAFETY: `b` is the live block just allocated from `a`.
            unsafe { free_block(a, b) };
        }
        (2 * iters, t0.elapsed().as_secs_f64())
    })
}

/// `iters` rounds of: malloc `extra` blocks of 64 B, then free them newest first.
pub fn batch<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let n = p.extra as usize;
    let mut live: Vec<*mut u8> = vec![null_mut(); n];
    warm_then_time(p, |iters, _| {
        let t0 = Instant::now();
        for _ in 0..iters {
            for s in live.iter_mut() {
                *s = alloc_touch(a, 64);
            }
            for s in live.iter().rev() {
                // SAFETY: each entry is a live block allocated in this round.
                unsafe { free_block(a, *s) };
            }
        }
        (2 * n as u64 * iters, t0.elapsed().as_secs_f64())
    })
}

/// `slots` buffers grown round-robin: empty → malloc(16); below the cap → realloc to
/// ×1.5 + 16 (capped at `p.sizes` max); at the cap → free. Ops = every call.
pub fn realloc_growth<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let cap = match p.sizes {
        super::SizeDist::Range(_, hi) => hi as usize,
        super::SizeDist::App => 32768,
    };
    let mut bufs: Vec<*mut u8> = vec![null_mut(); p.slots];
    warm_then_time(p, |iters, _| {
        let t0 = Instant::now();
        let nb = bufs.len();
        let mut j = 0;
        for _ in 0..iters {
            let b = bufs[j];
            if b.is_null() {
                bufs[j] = alloc_touch(a, 16);
            } else {
                // SAFETY: `b` is a live block from `a` with its size header.
                let size = unsafe { super::block::block_size(b) };
                if size >= cap {
                    // SAFETY: as above; the slot is cleared.
                    unsafe { free_block(a, b) };
                    bufs[j] = null_mut();
                } else {
                    let new = (size + size / 2 + 16).min(cap);
                    // SAFETY: as above; the slot takes the (possibly moved) block.
                    bufs[j] = unsafe { realloc_touch(a, b, new) };
                }
            }
            j += 1;
            if j == nb {
                j = 0;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        for b in bufs.iter_mut().filter(|b| !b.is_null()) {
            // SAFETY: live block from `a`, cleared right after.
            unsafe { free_block(a, *b) };
            *b = null_mut();
        }
        (iters, secs)
    })
}
