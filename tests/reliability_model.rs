//! Reliability: model-based differential testing.
//!
//! A seeded generator drives random sequences of alloc, alloc_zeroed, free,
//! realloc (grow, shrink, across class boundaries), over-aligned alloc (align up
//! to 64 KiB) and cross-thread hand-offs (a worker thread frees a block of the
//! main thread, allocates one for it, or reallocs one of its blocks) against a
//! shadow model (`BTreeMap` of live ranges) and checks after every step:
//! - no two live blocks overlap;
//! - every block keeps its contents (a per-block seed pattern; a moved realloc
//!   keeps the prefix), `alloc_zeroed` blocks read as zero;
//! - the usable size covers the request, the alignment holds.
//!
//! Five flag sets: defaults; `free_fast` + `ptag: first` + `arena_gib: 1` (with
//! rare 65 MiB blocks, direct-mapped); the `ptag: off` header route with one
//! shard (sized frees); `failfast` + `stats` without purging; `ptag: first`
//! without S110 meta and two shards.
//!
//! CI: 6 cases x 4,000 operations per type (~3 s in all). Environment:
//! - `HZ3_MODEL_CASES=n`  cases per type (default 6);
//! - `HZ3_MODEL_OPS=n`    operations per case (default 4000);
//! - `HZ3_MODEL_SECS=s`   run fresh cases (cycling over the types) until `s`
//!   seconds have passed — the unbounded run, e.g. `HZ3_MODEL_SECS=3600`;
//! - `HZ3_MODEL_SEED=x`   base seed (decimal or 0x-hex); a failure prints the case
//!   seed, and `HZ3_MODEL_SEED=<it> HZ3_MODEL_CASES=1` replays it alone.
//!
//! `cargo test --test reliability_model -- --nocapture` prints the cases run.

mod reliability_support;

use reliability_support::*;
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

hz3::hz3_allocator! {
    pub struct MDefault;
    pub struct MFastFirst<s110_meta: true, free_fast: true, ptag: first, arena_gib: 1>;
    pub struct MHeader<s110_meta: false, ptag: off, shards: 1>;
    pub struct MFailfast<failfast: true, stats: true, purge: false>;
    pub struct MPlainFirst<s110_meta: false, ptag: first, shards: 2>;
}
impl_hz!(MDefault, MFastFirst, MHeader, MFailfast, MPlainFirst);

fn env_num(k: &str) -> Option<u64> {
    let v = std::env::var(k).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Live blocks above this count make frees more likely.
const LIVE_CAP: usize = 256;

fn gen_size(rng: &mut Rng, huge_ok: bool) -> usize {
    match rng.below(1000) {
        0..=349 => rng.range(1, 128),
        350..=599 => rng.range(129, 2048),
        600..=699 => rng.range(2049, 4096),
        700..=849 => rng.range(4097, 64 * KIB),
        850..=969 => rng.range(64 * KIB + 1, MIB),
        970..=998 => rng.range(MIB + 1, 8 * MIB),
        _ if huge_ok => rng.range(65 * MIB, 66 * MIB),
        _ => rng.range(1, 64),
    }
}

fn gen_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => 1 << rng.range(0, 4),
        60..=84 => 1 << rng.range(5, 12),
        _ => 1 << rng.range(13, 16),
    }
}

/// A new size for a realloc of `old`: near it, across a class edge, or anywhere.
fn gen_resize(rng: &mut Rng, old: usize, huge_ok: bool) -> usize {
    match rng.below(10) {
        0..=3 => {
            let d = (old / 4).max(1);
            (old + rng.range(0, 2 * d)).saturating_sub(d).max(1)
        }
        4..=6 => (old + rng.range(0, 32)).saturating_sub(16).max(1),
        _ => gen_size(rng, huge_ok),
    }
}

/// Requests to the worker thread.
enum Req {
    Free(Blk),
    Alloc { size: usize, align: usize, seed: u64 },
    Realloc { b: Blk, new: usize, seed: u64 },
}

/// The worker: serves one request at a time; errors are returned, not panicked.
fn worker<A: Hz>(rx: mpsc::Receiver<Req>, tx: mpsc::Sender<Result<Option<Blk>, String>>) {
    let a = A::default();
    for req in rx {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match req {
            Req::Free(b) => {
                b.free(&a, "worker free");
                None
            }
            Req::Alloc { size, align, seed } => Blk::new_in(&a, size, align, seed),
            Req::Realloc { b, new, seed } => realloc_checked(&a, b, new, seed, "worker realloc"),
        }));
        let r = r.map_err(|e| {
            e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        });
        if tx.send(r).is_err() {
            return;
        }
    }
}

/// Realloc `b` to `new` bytes; check prefix, alignment, usable size; refill.
/// `None` when the allocator returned null (then `b` is untouched and still live).
fn realloc_checked<A: Hz>(a: &A, b: Blk, new: usize, seed: u64, who: &str) -> Option<Blk> {
    b.verify(who);
    // SAFETY: `b` is live with this layout; `new > 0`.
    let q = unsafe { a.realloc(b.p as *mut u8, b.layout(), new) };
    if q.is_null() {
        b.verify("realloc returned null: old block must be intact");
        return None;
    }
    assert_eq!(q as usize % b.align, 0, "{who}: realloc {:#x} -> {q:p} lost align {}", b.p, b.align);
    let keep = b.size.min(new);
    // SAFETY: `q` has at least `keep` readable bytes.
    if let Some(off) = unsafe { check_from(q, b.p, b.size, keep, b.seed) } {
        panic!("{who}: realloc {:#x} ({} -> {new}) -> {q:p}: prefix damaged at {off}", b.p, b.size);
    }
    let us = unsafe { A::usable(q) };
    assert!(us.is_some_and(|u| u >= new), "{who}: usable_size({q:p}) = {us:?} < {new}");
    unsafe { fill(q, new, seed) };
    Some(Blk { p: q as usize, size: new, align: b.align, seed })
}

/// The shadow model: live blocks by start address.
struct Model {
    live: BTreeMap<usize, Blk>,
    ctx: String,
}

impl Model {
    fn insert(&mut self, b: Blk) {
        if let Some((_, p)) = self.live.range(..=b.p).next_back() {
            assert!(p.p + p.size <= b.p, "{}: new {b:?} overlaps live {p:?}", self.ctx);
        }
        if let Some((_, n)) = self.live.range(b.p..).next() {
            assert!(b.p + b.size <= n.p, "{}: new {b:?} overlaps live {n:?}", self.ctx);
        }
        self.live.insert(b.p, b);
    }

    fn take_random(&mut self, rng: &mut Rng) -> Option<Blk> {
        if self.live.is_empty() {
            return None;
        }
        // Uniform over the live blocks (at most a few hundred: a linear walk is fine).
        let k = *self.live.keys().nth(rng.below(self.live.len())).unwrap();
        self.live.remove(&k)
    }
}

/// Counts of what a case did.
#[derive(Default, Debug)]
struct Tally {
    allocs: usize,
    frees: usize,
    reallocs: usize,
    handoffs: usize,
    nulls: usize,
}

fn run_case<A: Hz>(seed: u64, ops: usize, huge_ok: bool) -> Tally {
    let a = A::default();
    let mut rng = Rng::new(seed);
    let mut m = Model { live: BTreeMap::new(), ctx: String::new() };
    let mut t = Tally::default();
    let (req_tx, req_rx) = mpsc::channel();
    let (resp_tx, resp_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || worker::<A>(req_rx, resp_tx));
        let ask = |r: Req| -> Option<Blk> {
            req_tx.send(r).unwrap();
            match resp_rx.recv_timeout(Duration::from_secs(60)).expect("worker gone or hung") {
                Ok(b) => b,
                Err(e) => panic!("in the worker thread: {e}"),
            }
        };
        for op in 0..ops {
            m.ctx = format!("{} seed={seed:#x} op={op}", A::TYPE_NAME);
            let tag = seed ^ (op as u64) << 20;
            let free_bias = if m.live.len() > LIVE_CAP { 30 } else { 0 };
            let r = rng.below(100);
            match r {
                _ if r < 28 => {
                    let (size, align) = (gen_size(&mut rng, huge_ok), if rng.pct(70) { 8 } else { gen_align(&mut rng) });
                    match Blk::new_in(&a, size, align, tag) {
                        Some(b) => {
                            m.insert(b);
                            t.allocs += 1;
                        }
                        None => t.nulls += 1,
                    }
                }
                _ if r < 33 => {
                    let size = gen_size(&mut rng, huge_ok);
                    let l = Layout::from_size_align(size, gen_align(&mut rng)).unwrap();
                    let p = unsafe { a.alloc_zeroed(l) };
                    if p.is_null() {
                        t.nulls += 1;
                        continue;
                    }
                    let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                    if let Some(i) = bytes.iter().position(|&x| x != 0) {
                        panic!("{}: alloc_zeroed({size}, {}) = {p:p}: byte {i} is {:#x}", m.ctx, l.align(), bytes[i]);
                    }
                    assert_eq!(p as usize % l.align(), 0, "{}: alloc_zeroed alignment", m.ctx);
                    let us = unsafe { A::usable(p) };
                    assert!(us.is_some_and(|u| u >= size), "{}: usable {us:?} < {size}", m.ctx);
                    unsafe { fill(p, size, tag) };
                    m.insert(Blk { p: p as usize, size, align: l.align(), seed: tag });
                    t.allocs += 1;
                }
                _ if r < 58 + free_bias => {
                    if let Some(b) = m.take_random(&mut rng) {
                        b.free(&a, &m.ctx);
                        t.frees += 1;
                    }
                }
                _ if r < 72 + free_bias => {
                    if let Some(b) = m.take_random(&mut rng) {
                        let new = gen_resize(&mut rng, b.size, huge_ok);
                        match realloc_checked(&a, b, new, tag, &m.ctx) {
                            Some(nb) => m.insert(nb),
                            None => {
                                t.nulls += 1;
                                m.insert(b);
                            }
                        }
                        t.reallocs += 1;
                    }
                }
                _ if r < 77 + free_bias => {
                    // Over-aligned: 4 KiB .. 64 KiB.
                    let align = 1 << rng.range(12, 16);
                    let size = if rng.pct(50) { rng.range(1, 3 * align) } else { gen_size(&mut rng, false) };
                    match Blk::new_in(&a, size, align, tag) {
                        Some(b) => {
                            m.insert(b);
                            t.allocs += 1;
                        }
                        None => t.nulls += 1,
                    }
                }
                _ if r < 83 + free_bias => {
                    if let Some(b) = m.take_random(&mut rng) {
                        ask(Req::Free(b));
                        t.frees += 1;
                        t.handoffs += 1;
                    }
                }
                _ if r < 88 + free_bias => {
                    let (size, align) = (gen_size(&mut rng, false), gen_align(&mut rng));
                    match ask(Req::Alloc { size, align, seed: tag }) {
                        Some(b) => {
                            m.insert(b);
                            t.allocs += 1;
                        }
                        None => t.nulls += 1,
                    }
                    t.handoffs += 1;
                }
                _ if r < 92 + free_bias => {
                    if let Some(b) = m.take_random(&mut rng) {
                        let new = gen_resize(&mut rng, b.size, false);
                        match ask(Req::Realloc { b, new, seed: tag }) {
                            Some(nb) => m.insert(nb),
                            None => {
                                t.nulls += 1;
                                m.insert(b);
                            }
                        }
                        t.reallocs += 1;
                        t.handoffs += 1;
                    }
                }
                _ => {
                    if let Some(b) = m.take_random(&mut rng) {
                        b.verify(&m.ctx);
                        m.insert(b);
                    }
                }
            }
            if op % 500 == 499 {
                for b in m.live.values() {
                    b.verify(&m.ctx);
                }
            }
        }
        // Drain: half here, half in the worker.
        m.ctx = format!("{} seed={seed:#x} drain", A::TYPE_NAME);
        let all: Vec<Blk> = std::mem::take(&mut m.live).into_values().collect();
        for (i, b) in all.into_iter().enumerate() {
            if i % 2 == 0 {
                b.free(&a, &m.ctx);
            } else {
                ask(Req::Free(b));
            }
            t.frees += 1;
        }
        drop(req_tx);
    });
    assert_eq!(t.nulls, 0, "{}: null returns without memory pressure: {t:?}", m.ctx);
    t
}

fn case_for(ty: usize, seed: u64, ops: usize) -> Tally {
    let go = || match ty {
        0 => run_case::<MDefault>(seed, ops, false),
        1 => run_case::<MFastFirst>(seed, ops, true),
        2 => run_case::<MHeader>(seed, ops, false),
        3 => run_case::<MFailfast>(seed, ops, false),
        _ => run_case::<MPlainFirst>(seed, ops, false),
    };
    match std::panic::catch_unwind(go) {
        Ok(t) => t,
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!(
                "model case failed (type #{ty}, seed {seed:#x}); replay with HZ3_MODEL_SEED={seed:#x} \
                 HZ3_MODEL_CASES=1 HZ3_MODEL_OPS={ops}:\n{}",
                msg.unwrap_or_default()
            );
        }
    }
}

fn model_type(ty: usize) {
    let cases = env_num("HZ3_MODEL_CASES").unwrap_or(6);
    let ops = env_num("HZ3_MODEL_OPS").unwrap_or(4000) as usize;
    let base = env_num("HZ3_MODEL_SEED").unwrap_or(0x5EED_0000);
    let t0 = Instant::now();
    for c in 0..cases {
        let seed = if cases == 1 { base } else { base + c * 0x1_0001 + ty as u64 * 0x100 };
        let t = case_for(ty, seed, ops);
        eprintln!("model type #{ty} seed {seed:#x}: {t:?}");
    }
    eprintln!("model type #{ty}: {cases} x {ops} ops in {:?}", t0.elapsed());
}

#[test]
fn model_default() {
    model_type(0);
}

#[test]
fn model_free_fast_ptag_first_arena_1g() {
    model_type(1);
}

#[test]
fn model_header_route_one_shard() {
    model_type(2);
}

#[test]
fn model_failfast_no_purge() {
    model_type(3);
}

#[test]
fn model_plain_ptag_first_two_shards() {
    model_type(4);
}

/// The unbounded run: fresh seeds, cycling over the types, until
/// `HZ3_MODEL_SECS` have passed (skipped when unset).
#[test]
fn model_timed() {
    let Some(secs) = env_num("HZ3_MODEL_SECS") else { return };
    let ops = env_num("HZ3_MODEL_OPS").unwrap_or(3000) as usize;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut seed = env_num("HZ3_MODEL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mut n = 0;
    while Instant::now() < end {
        case_for(n % 5, seed, ops);
        seed = mix(seed);
        n += 1;
    }
    eprintln!("model_timed: {n} cases of {ops} ops");
}
