//! Workloads that look like programs: large live sets (`live_`), Rust program patterns on
//! `std` collections and serde_json (`rust_`), short-lived threads (`churn_`), blocks handed
//! between threads (`xthread_`) and 1–32 MiB blocks (`big_`).
//!
//! The other workloads keep at most a few hundred blocks live per thread, which every
//! thread cache holds; these keep hundreds of thousands live, create and end threads on the
//! clock, and fault in hundreds of MiB, as programs do.
//!
//! Blocks made here through the allocator under test `a` are touched like everywhere else
//! ([`super::block`]: size in the first 8 bytes, last byte written, size read back on free).
//! The `rust_` shapes do not call `a`: they use `Box`, `Vec`, `String`, `HashMap`,
//! `BTreeMap` and serde_json, which allocate from the process's `#[global_allocator]`; the
//! child makes that the allocator under test ([`crate::global`]), so they measure it too.
//! They write every byte they allocate (strings, node fields, vector elements) and read it
//! back into a checksum.

use super::block::{alloc_touch, block_size, free_block, realloc_touch};
use super::rng::{Lcg, SizeDist};
use super::team::{self, Phases, SpinBarrier, PHASES, TIMED, WARM};
use super::{Outcome, Params};
use core::alloc::GlobalAlloc;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::ptr::{self, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Instant;

/// Which program-like workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Build `slots` blocks, then free them all, in allocation order (`random: false`) or in
    /// a random order fixed before the clock starts; repeated until `iters` blocks were built.
    BuildFree {
        /// Free in a random order instead of allocation order.
        random: bool,
    },
    /// serde_json round trip: build a `Value` document of `slots` records, serialise it to a
    /// `String`, parse it back, drop both.
    Json,
    /// Word count: `HashMap<String, Vec<u32>>` from words to their positions in a text of
    /// [`TEXT_WORDS`] (at most) words over a vocabulary of `slots` words (one `String` per word read).
    WordCount,
    /// `BTreeMap<u64, String>` churn: a random key is removed if present, else inserted with a
    /// 8–64 byte value; keys in `0..2 * slots`.
    BTreeChurn,
    /// A complete binary tree of `slots` `Box` nodes built, summed and dropped, repeatedly.
    BoxTree,
    /// `Vec<u64>`s grown by `push` from empty to a length in `1..=slots` (log-uniform), 64 of
    /// them live, a random one replaced each time.
    VecPush,
    /// Waves of `threads` short-lived threads: each frees its share of the blocks the previous
    /// wave handed over, allocates `slots` blocks, frees half, hands the other half on, exits.
    ThreadWaves,
    /// Rounds of `threads` threads that each live for one `calloc` of `slots` bytes (touched,
    /// then freed) and exit.
    ThreadCalloc,
    /// `threads` threads swap fresh blocks into random entries of one shared array of `slots`
    /// and free what they took out, which another thread allocated most of the time.
    Handoff,
    /// `slots` live buffers of 1–32 MiB, each zero-filled by the program; each step replaces a
    /// random one (free + malloc, or realloc with the grown part zero-filled).
    BigBuffers,
}

/// Words in the word-count text (fewer if `iters` is smaller; the text is reused for as many
/// rounds as `iters` asks for).
pub const TEXT_WORDS: usize = 500_000;
/// Vectors live at once in `VecPush`.
const LIVE_VECS: usize = 64;
/// Bytes counted as one op in `BigBuffers`.
const PAGE: usize = 4096;

/// Run `shape` with parameters `p` (warm-up pass, then the timed pass).
///
/// Kept out of line so that these shapes do not change how the compiler lays out (and
/// inlines into) the catalogue's `run_with`, which the other workloads' loops go through.
#[inline(never)]
pub fn run<A: GlobalAlloc + Sync>(a: &A, shape: Shape, p: &Params) -> Outcome {
    match shape {
        Shape::BuildFree { random } => build_free(a, p, random),
        Shape::Json => warm_then_time(p, json_pass),
        Shape::WordCount => word_count(p),
        Shape::BTreeChurn => warm_then_time(p, btree_pass),
        Shape::BoxTree => warm_then_time(p, box_tree_pass),
        Shape::VecPush => warm_then_time(p, vec_push_pass),
        Shape::ThreadWaves => thread_waves(a, p),
        Shape::ThreadCalloc => thread_calloc(a, p),
        Shape::Handoff => handoff(a, p),
        Shape::BigBuffers => big_buffers(a, p),
    }
}

/// What one op is, for the parameter table.
pub fn op_unit(shape: Shape) -> &'static str {
    match shape {
        Shape::BuildFree { .. } | Shape::ThreadWaves | Shape::Handoff => "one malloc or one free",
        Shape::ThreadCalloc => "one calloc or one free (each by a thread started and joined for it)",
        Shape::Json => "one JSON value built, serialised and parsed back",
        Shape::WordCount => "one word counted (a String made, looked up, its position pushed)",
        Shape::BTreeChurn => "one insert or remove",
        Shape::BoxTree => "one node built or dropped",
        Shape::VecPush => "one push",
        Shape::BigBuffers => "one 4 KiB page allocated and zero-filled by the program",
    }
}

/// Parameter description (after the common `threads=… iters/thread=… warmup=…`).
pub fn describe(shape: Shape, p: &Params) -> String {
    let s = p.sizes.describe();
    match shape {
        Shape::BuildFree { random } => format!(
            " blocks per build={} sizes={s}; all freed in {} order",
            p.slots,
            if random { "random" } else { "allocation" }
        ),
        Shape::Json => format!(
            " records per document={} ({JSON_NODES} values each: object, numbers, strings, array, nested object); serde_json to_string + from_str",
            p.slots
        ),
        Shape::WordCount => format!(" HashMap<String, Vec<u32>>; text={} words, vocabulary={} (skewed), new map per text", TEXT_WORDS.min(p.iters as usize), p.slots),
        Shape::BTreeChurn => format!(" BTreeMap<u64, String>; keys 0..{} (about {} live), values 8-64 B", 2 * p.slots, p.slots),
        Shape::BoxTree => format!(" nodes per tree={} (Box<Node> of 24 B, complete binary tree)", p.slots),
        Shape::VecPush => format!(" Vec<u64> lengths 1..={} log-uniform, {LIVE_VECS} live", p.slots),
        Shape::ThreadWaves => format!(
            " threads per wave={} (iters = waves), blocks per thread={} sizes={s}; each thread frees its share of the previous wave's hand-over, frees half of its own, hands half on",
            p.threads, p.slots
        ),
        Shape::ThreadCalloc => format!(
            " threads per round={} (iters = rounds), each: calloc({}) + free, then exit",
            p.threads, p.slots
        ),
        Shape::Handoff => format!(" shared array={} entries (atomic swap), sizes={s}", p.slots),
        Shape::BigBuffers => format!(
            " live buffers={} (filled before the clock) sizes={s}; step: free + malloc (2/3) or realloc (1/3), zero-filled by the program",
            p.slots
        ),
    }
}

/// Shrink default parameters to a size tests run in milliseconds.
#[cfg(test)]
pub fn tiny(shape: Shape, p: &mut Params) {
    p.slots = p.slots.min(256);
    p.iters = p.iters.min(match shape {
        Shape::BigBuffers | Shape::ThreadWaves | Shape::ThreadCalloc => 6,
        _ => 3000,
    });
    p.warm = p.warm.min(p.iters / 2).max(1);
    if shape == Shape::BigBuffers {
        p.slots = 2;
        p.sizes = SizeDist::Range(1 << 20, 2 << 20);
    }
}

/// Warm-up pass, then timed pass; `pass(iters, seed)` returns (ops, seconds).
fn warm_then_time(p: &Params, mut pass: impl FnMut(&Params, u64, u64) -> (u64, f64)) -> Outcome {
    pass(p, p.warm, 1);
    let (ops, secs) = pass(p, p.iters, 2);
    Outcome { ops, secs, remote_frees: 0, frees: 0 }
}

// ---------------------------------------------------------------------------------------
// live_: a million blocks built, then freed.

/// Build `min(slots, left)` blocks, free them all (in allocation or a random order); until
/// `iters` blocks were built. The pointer array and the free order are made before the clock.
fn build_free<A: GlobalAlloc>(a: &A, p: &Params, random: bool) -> Outcome {
    let mut ptrs: Vec<*mut u8> = vec![null_mut(); p.slots];
    let order: Vec<u32> = {
        let mut o: Vec<u32> = (0..p.slots as u32).collect();
        if random {
            let mut rng = Lcg::new(77);
            for i in (1..o.len()).rev() {
                o.swap(i, rng.below(i as u32 + 1) as usize);
            }
        }
        o
    };
    warm_then_time(p, |p, iters, seed| {
        let mut rng = Lcg::new(seed);
        let mut left = iters as usize;
        let mut ops = 0;
        let t0 = Instant::now();
        while left > 0 {
            let n = left.min(p.slots);
            for s in &mut ptrs[..n] {
                *s = alloc_touch(a, p.sizes.draw(&mut rng));
            }
            for &i in order.iter().filter(|&&i| (i as usize) < n) {
                // SAFETY: every entry below `n` holds a live block of `a` built in this
                // round, and `order` names each index once.
                unsafe { free_block(a, ptrs[i as usize]) };
            }
            left -= n;
            ops += 2 * n as u64;
        }
        (ops, t0.elapsed().as_secs_f64())
    })
}

// ---------------------------------------------------------------------------------------
// rust_: std collections and serde_json on the global allocator.

/// JSON values per record of [`json_pass`]'s document.
const JSON_NODES: u64 = 15;

/// One record: `{"id", "name", "tags": [3 strings], "score", "nested": {"x", "y": [3]}}`.
fn json_record(i: u64, rng: &mut Lcg) -> serde_json::Value {
    serde_json::json!({
        "id": i,
        "name": format!("user-{i}-{}", rng.next()),
        "tags": [format!("t{}", rng.below(100)), "common", format!("tag-{}", rng.below(10_000))],
        "score": rng.below(1 << 20) as f64 / 8.0, // exact in binary: parses back equal
        "nested": { "x": rng.below(1000), "y": [1, rng.below(50), 3] },
    })
}

/// Round trips of a document of `slots` records until `iters` values were handled.
fn json_pass(p: &Params, iters: u64, seed: u64) -> (u64, f64) {
    let mut rng = Lcg::new(seed);
    let per_doc = JSON_NODES * p.slots as u64;
    let docs = iters.div_ceil(per_doc).max(1);
    let mut check = 0usize;
    let t0 = Instant::now();
    for d in 0..docs {
        let doc = serde_json::Value::Array((0..p.slots as u64).map(|i| json_record(d * 1_000_000 + i, &mut rng)).collect());
        let text = serde_json::to_string(&doc).expect("serialise");
        let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
        check += text.len() + back.as_array().map_or(0, |v| v.len());
        assert!(back == doc, "JSON round trip changed the document");
    }
    let secs = t0.elapsed().as_secs_f64();
    black_box(check);
    (docs * per_doc, secs)
}

/// A text of `words` words over a vocabulary of `vocab` lowercase words of 3–12
/// letters, low word numbers far more frequent (as in natural text).
fn make_text(vocab: usize, words: usize, seed: u64) -> String {
    let mut rng = Lcg::new(seed);
    let dict: Vec<String> = (0..vocab)
        .map(|_| {
            let len = 3 + rng.below(10);
            (0..len).map(|_| (b'a' + rng.below(26) as u8) as char).collect()
        })
        .collect();
    let mut text = String::with_capacity(words * 9);
    for i in 0..words {
        if i > 0 {
            text.push(' ');
        }
        let r = rng.below(vocab as u32) + 1;
        text.push_str(&dict[rng.below(r) as usize]);
    }
    text
}

/// Word count over the text (built before the clock), a new map per text, until `iters`
/// words were counted.
fn word_count(p: &Params) -> Outcome {
    let words = TEXT_WORDS.min(p.iters as usize);
    let text = make_text(p.slots, words, 5);
    warm_then_time(p, |_, iters, _| {
        let rounds = iters.div_ceil(words as u64).max(1);
        let mut check = 0usize;
        let t0 = Instant::now();
        for _ in 0..rounds {
            let mut map: HashMap<String, Vec<u32>> = HashMap::new();
            for (pos, w) in text.split(' ').enumerate() {
                map.entry(w.to_string()).or_default().push(pos as u32);
            }
            check += map.len() + map.values().map(|v| v.len()).sum::<usize>();
            check += map.keys().map(|k| k.as_bytes()[k.len() - 1] as usize).sum::<usize>();
        }
        let secs = t0.elapsed().as_secs_f64();
        black_box(check);
        (rounds * words as u64, secs)
    })
}

/// BTreeMap churn: `iters` random inserts / removes, starting empty; the map is dropped on
/// the clock.
fn btree_pass(p: &Params, iters: u64, seed: u64) -> (u64, f64) {
    let mut rng = Lcg::new(seed);
    let keys = 2 * p.slots as u32;
    let mut check = 0u64;
    let t0 = Instant::now();
    let mut map: BTreeMap<u64, String> = BTreeMap::new();
    for _ in 0..iters {
        let k = rng.below(keys) as u64;
        match map.remove(&k) {
            Some(v) => check += v.as_bytes()[v.len() - 1] as u64 + v.len() as u64,
            None => {
                let len = 8 + rng.below(57) as usize;
                let mut v = String::with_capacity(len);
                v.extend((0..len).map(|i| (b'a' + ((k as usize + i) % 26) as u8) as char));
                map.insert(k, v);
            }
        }
    }
    check += map.len() as u64;
    drop(map);
    let secs = t0.elapsed().as_secs_f64();
    black_box(check);
    (iters, secs)
}

/// A binary tree node of 24 bytes.
struct Node {
    val: u64,
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

/// A complete tree of `n` nodes rooted at index `i` (heap numbering, 1-based).
fn build_tree(i: usize, n: usize, rng: &mut Lcg) -> Option<Box<Node>> {
    (i <= n).then(|| {
        Box::new(Node {
            val: rng.next() as u64,
            left: build_tree(2 * i, n, rng),
            right: build_tree(2 * i + 1, n, rng),
        })
    })
}

fn tree_sum(t: &Option<Box<Node>>) -> (u64, u64) {
    match t {
        None => (0, 0),
        Some(b) => {
            let (l, nl) = tree_sum(&b.left);
            let (r, nr) = tree_sum(&b.right);
            (b.val.wrapping_add(l).wrapping_add(r), 1 + nl + nr)
        }
    }
}

/// Trees of `slots` nodes built, summed and dropped until `iters` nodes were built.
fn box_tree_pass(p: &Params, iters: u64, seed: u64) -> (u64, f64) {
    let mut rng = Lcg::new(seed);
    let trees = iters.div_ceil(p.slots as u64).max(1);
    let mut check = 0u64;
    let t0 = Instant::now();
    for _ in 0..trees {
        let t = build_tree(1, p.slots, &mut rng);
        let (sum, n) = tree_sum(&t);
        assert_eq!(n, p.slots as u64);
        check = check.wrapping_add(sum);
        drop(t);
    }
    let secs = t0.elapsed().as_secs_f64();
    black_box(check);
    (2 * trees * p.slots as u64, secs)
}

/// `Vec<u64>`s grown by push to log-uniform lengths, [`LIVE_VECS`] live, a random one
/// replaced each time, until `iters` pushes were made.
fn vec_push_pass(p: &Params, iters: u64, seed: u64) -> (u64, f64) {
    let mut rng = Lcg::new(seed);
    let bits = usize::BITS - p.slots.leading_zeros(); // lengths up to 2^bits - 1 ≥ slots
    let mut live: Vec<Vec<u64>> = (0..LIVE_VECS).map(|_| Vec::new()).collect();
    let (mut pushes, mut check) = (0u64, 0u64);
    let t0 = Instant::now();
    while pushes < iters {
        let top = 1u32 << rng.below(bits);
        let len = (top + rng.below(top)).min(p.slots as u32) as u64;
        let mut v = Vec::new();
        for i in 0..len {
            v.push(i ^ pushes);
        }
        check = check.wrapping_add(v[v.len() - 1]);
        pushes += len;
        live[rng.below(LIVE_VECS as u32) as usize] = v;
    }
    check += live.iter().map(|v| v.len() as u64).sum::<u64>();
    drop(live);
    let secs = t0.elapsed().as_secs_f64();
    black_box(check);
    (pushes, secs)
}

// ---------------------------------------------------------------------------------------
// churn_: threads created and ended on the clock.

/// Block addresses handed between threads (`usize`, so the `Vec`s are `Send`).
type Handover = Vec<usize>;

/// Waves of short-lived threads (spawned and joined on the clock), see [`Shape::ThreadWaves`].
fn thread_waves<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let t = p.threads;
    let mut pool: Vec<Handover> = (0..t).map(|_| Vec::new()).collect();
    let mut pass = |waves: u64, phase: u64| {
        let ops = AtomicU64::new(0);
        let t0 = Instant::now();
        for wave in 0..waves {
            let inherited = std::mem::take(&mut pool);
            pool = std::thread::scope(|s| {
                let handles: Vec<_> = inherited
                    .into_iter()
                    .enumerate()
                    .map(|(tid, old)| {
                        let ops = &ops;
                        s.spawn(move || {
                            let mut rng = Lcg::new(phase * 1_000_003 + wave * 64 + tid as u64);
                            let mut n = old.len() as u64;
                            for q in old {
                                // SAFETY: a live block of `a` handed over by a thread of the
                                // previous wave, which gave it up.
                                unsafe { free_block(a, q as *mut u8) };
                            }
                            let mut mine: Vec<*mut u8> = (0..p.slots).map(|_| alloc_touch(a, churn_size(p.sizes, &mut rng))).collect();
                            n += p.slots as u64;
                            let mut out = Handover::with_capacity(p.slots / 2 + 1);
                            while !mine.is_empty() {
                                let i = rng.below(mine.len() as u32) as usize;
                                let b = mine.swap_remove(i);
                                if mine.len().is_multiple_of(2) {
                                    // SAFETY: a live block of `a` this thread allocated,
                                    // removed from `mine`.
                                    unsafe { free_block(a, b) };
                                    n += 1;
                                } else {
                                    out.push(b as usize);
                                }
                            }
                            ops.fetch_add(n, Ordering::Relaxed);
                            out
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("wave thread")).collect()
            });
        }
        (ops.load(Ordering::Relaxed), t0.elapsed().as_secs_f64())
    };
    pass(p.warm, 1);
    let (ops, secs) = pass(p.iters, 2);
    for q in pool.into_iter().flatten() {
        // SAFETY: the last wave's hand-over: live blocks of `a` nobody else holds.
        unsafe { free_block(a, q as *mut u8) };
    }
    Outcome { ops, secs, remote_frees: 0, frees: 0 }
}

/// See [`Shape::ThreadCalloc`]: `iters` rounds, threads spawned and joined on the clock.
fn thread_calloc<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let size = p.slots.max(16);
    let round = || {
        std::thread::scope(|s| {
            for _ in 0..p.threads {
                s.spawn(|| {
                    // SAFETY: non-zero size.
                    let b = unsafe { a.alloc_zeroed(super::block::layout(size)) };
                    assert!(!b.is_null(), "calloc({size}) failed");
                    // SAFETY: `b` is a fresh zeroed block of `size` ≥ 16 bytes; it is read,
                    // given its size header and freed by this thread only.
                    unsafe {
                        assert_eq!(ptr::read_volatile(b.add(size - 1)), 0, "calloc gave a non-zero byte");
                        ptr::write_volatile(b as *mut u64, size as u64);
                        free_block(a, b);
                    }
                });
            }
        })
    };
    let pass = |rounds: u64| {
        let t0 = Instant::now();
        for _ in 0..rounds {
            round();
        }
        (2 * p.threads as u64 * rounds, t0.elapsed().as_secs_f64())
    };
    pass(p.warm);
    let (ops, secs) = pass(p.iters);
    Outcome { ops, secs, remote_frees: 0, frees: 0 }
}

/// Sizes of the thread-churn blocks: `sizes` 99% of the time, 1% up to 100 KiB.
fn churn_size(sizes: SizeDist, rng: &mut Lcg) -> usize {
    if rng.below(100) == 0 {
        SizeDist::Range(1025, 100 * 1024).draw(rng)
    } else {
        sizes.draw(rng)
    }
}

// ---------------------------------------------------------------------------------------
// xthread_: random hand-off through a shared array.

/// See [`Shape::Handoff`]. Ops = mallocs + frees.
fn handoff<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let t = p.threads;
    let shared: Vec<AtomicPtr<u8>> = (0..p.slots).map(|_| AtomicPtr::new(null_mut())).collect();
    let barrier = SpinBarrier::new(t);
    let ops = AtomicU64::new(0);
    let worker = |tid: usize, ph: &Phases| {
        let mut gen = 0;
        for phase in PHASES {
            ph.start(phase);
            let n = if phase == WARM { p.warm } else { p.iters };
            let mut rng = Lcg::new((tid as u64 + 1) * 7919 + phase as u64);
            let mut my_ops = 0;
            for _ in 0..n {
                let i = rng.below(p.slots as u32) as usize;
                let b = alloc_touch(a, p.sizes.draw(&mut rng));
                // AcqRel: the swap publishes our block's header writes to whoever takes it
                // (Release) and makes the previous holder's writes visible to us (Acquire).
                let old = shared[i].swap(b, Ordering::AcqRel);
                my_ops += 1;
                if !old.is_null() {
                    // SAFETY: `old` left the array by our swap, so we are its only holder; it
                    // is a live block of `a`.
                    unsafe { free_block(a, old) };
                    my_ops += 1;
                }
            }
            if phase == TIMED {
                ops.fetch_add(my_ops, Ordering::Relaxed);
            }
            ph.done();
            barrier.wait(&mut gen);
            for s in shared.iter().skip(tid).step_by(t) {
                let q = s.swap(null_mut(), Ordering::AcqRel);
                if !q.is_null() {
                    // SAFETY: as above; every thread has stopped swapping (barrier).
                    unsafe { free_block(a, q) };
                }
            }
            barrier.wait(&mut gen);
            ph.cleaned();
        }
    };
    let d = team::run(t, worker, |_| {});
    Outcome { ops: ops.load(Ordering::Relaxed), secs: d.as_secs_f64(), remote_frees: 0, frees: 0 }
}

// ---------------------------------------------------------------------------------------
// big_: large zero-filled buffers.

/// Zero bytes `from..to` of block `b` (the program's own fill), then rewrite the size header
/// and the last byte; returns the 4 KiB pages written.
///
/// # Safety
/// `b` must be a live block of at least `to` ≥ 16 bytes.
unsafe fn zero_fill(b: *mut u8, from: usize, to: usize) -> u64 {
    // SAFETY: guaranteed by the caller: `from..to` lies inside the block.
    unsafe {
        ptr::write_bytes(b.add(from), 0, to - from);
        ptr::write_volatile(b as *mut u64, to as u64);
        ptr::write_volatile(b.add(to - 1), 0xA5);
    }
    (to - from).div_ceil(PAGE) as u64
}

/// See [`Shape::BigBuffers`]. The buffers are filled before the clock and freed after it.
fn big_buffers<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let mut bufs: Vec<*mut u8> = vec![null_mut(); p.slots];
    warm_then_time(p, |p, iters, seed| {
        let mut rng = Lcg::new(seed);
        for b in bufs.iter_mut() {
            let size = p.sizes.draw(&mut rng);
            *b = alloc_touch(a, size);
            // SAFETY: `*b` is a fresh block of `size` bytes.
            unsafe { zero_fill(*b, 8, size) };
        }
        let mut pages = 0;
        let t0 = Instant::now();
        for _ in 0..iters {
            let i = rng.below(p.slots as u32) as usize;
            let new = p.sizes.draw(&mut rng);
            let b = bufs[i];
            if rng.below(3) == 0 {
                // SAFETY: `b` is a live block of `a` with its size header; the slot takes the
                // (possibly moved) result, whose first `min(old, new)` bytes were kept.
                unsafe {
                    let old = block_size(b);
                    let q = realloc_touch(a, b, new);
                    pages += zero_fill(q, old.min(new), new);
                    bufs[i] = q;
                }
            } else {
                // SAFETY: `b` is a live block of `a`, replaced in its slot right after.
                unsafe { free_block(a, b) };
                let q = alloc_touch(a, new);
                // SAFETY: `q` is a fresh block of `new` bytes.
                pages += unsafe { zero_fill(q, 8, new) };
                bufs[i] = q;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        for b in bufs.iter_mut() {
            // SAFETY: live block of `a`, cleared right after.
            unsafe { free_block(a, *b) };
            *b = null_mut();
        }
        (pages, secs)
    })
}
