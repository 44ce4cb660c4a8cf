//! Exact stats counters against known operation sequences.
//!
//! Counters are global per generated type and other tests run in parallel threads
//! of this process, so every test here uses its OWN types, touched by no other test.
//! Each sequence runs on fresh threads that are joined before the snapshot is
//! taken (per-thread counters are then folded in whatever way the engine does it).
//!
//! | type          | s110_meta | free_fast | ptag  | shards | stats |
//! |---------------|-----------|-----------|-------|--------|-------|
//! | CntFastLate   | true      | true      | late  | 64     | true  |
//! | CntFastOff    | true      | true      | off   | 64     | true  |
//! | CntObserve    | true      | false     | late  | 64     | true  |
//! | CntPtagFirst  | false     | false     | first | 64     | true  |
//! | CntMetaFirst  | true      | false     | first | 64     | true  |
//! | CntPlainOff   | false     | false     | off   | 64     | true  |
//! | CntOneShard   | true      | true      | late  | 1      | true  |
//! | CntStatsOff   | true      | true      | late  | 64     | false |

#[macro_use]
mod common;

use common::{delta, Block, Probe};
use hz3::StatsSnapshot;
use std::sync::mpsc;
use std::thread;

hz3::hz3_allocator! { pub struct CntFastLate<s110_meta: true, free_fast: true, ptag: late, stats: true>; }
hz3::hz3_allocator! { pub struct CntFastOff<s110_meta: true, free_fast: true, ptag: off, stats: true>; }
hz3::hz3_allocator! { pub struct CntObserve<s110_meta: true, free_fast: false, ptag: late, stats: true>; }
hz3::hz3_allocator! { pub struct CntPtagFirst<s110_meta: false, ptag: first, stats: true>; }
hz3::hz3_allocator! { pub struct CntMetaFirst<s110_meta: true, free_fast: false, ptag: first, stats: true>; }
hz3::hz3_allocator! { pub struct CntPlainOff<s110_meta: false, ptag: off, stats: true>; }
hz3::hz3_allocator! { pub struct CntOneShard<free_fast: true, shards: 1, stats: true>; }
hz3::hz3_allocator! { pub struct CntStatsOff<free_fast: true, stats: false>; }

impl_probe!(CntFastLate);
impl_probe!(CntFastOff);
impl_probe!(CntObserve);
impl_probe!(CntPtagFirst);
impl_probe!(CntMetaFirst);
impl_probe!(CntPlainOff);
impl_probe!(CntOneShard);
impl_probe!(CntStatsOff);

static FAST_LATE: CntFastLate = CntFastLate::new();
static FAST_OFF: CntFastOff = CntFastOff::new();
static OBSERVE: CntObserve = CntObserve::new();
static PTAG_FIRST: CntPtagFirst = CntPtagFirst::new();
static META_FIRST: CntMetaFirst = CntMetaFirst::new();
static PLAIN_OFF: CntPlainOff = CntPlainOff::new();
static ONE_SHARD: CntOneShard = CntOneShard::new();
static STATS_OFF: CntStatsOff = CntStatsOff::new();

/// Small frees per sequence.
const N: u64 = 1000;
/// Medium (2049..=64 KiB, size classes above the small ones) frees per sequence.
const M: u64 = 200;
/// Large (> 1016 KiB, above every size class) frees per sequence.
const L: u64 = 16;

fn small_size(k: u64) -> usize {
    1 + (k as usize * 37) % 2048
}
fn medium_size(k: u64) -> usize {
    2049 + (k as usize * 7919) % (64 * 1024 - 2048)
}
fn large_size(k: u64) -> usize {
    1016 * 1024 + 1 + (k as usize * 60_013) % (1 << 20)
}

/// Counter delta over `f` (which spawns and joins its own threads).
fn measure<A: Probe>(f: impl FnOnce()) -> StatsSnapshot {
    let before = A::probe_stats();
    f();
    let after = A::probe_stats();
    delta(&before, &after)
}

/// One fresh thread allocates `n` blocks of `size(k)` and frees them all itself.
fn local_seq<A: Probe>(a: &'static A, n: u64, size: fn(u64) -> usize) {
    thread::spawn(move || {
        let v: Vec<_> = (0..n).map(|k| Block::new(a, size(k), 16)).collect();
        for b in v {
            b.free("local_seq");
        }
    })
    .join()
    .unwrap();
}

/// Thread P allocates `n` blocks and hands them to thread C, which frees them all
/// while P is still alive (P waits for C's "done").
fn remote_live_seq<A: Probe>(a: &'static A, n: u64, size: fn(u64) -> usize) {
    let (tx, rx) = mpsc::channel::<Vec<Block<A>>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let p = thread::spawn(move || {
        let v: Vec<_> = (0..n).map(|k| Block::new(a, size(k), 16)).collect();
        tx.send(v).unwrap();
        done_rx.recv().unwrap();
    });
    let c = thread::spawn(move || {
        for b in rx.recv().unwrap() {
            b.free("remote_live_seq");
        }
        done_tx.send(()).unwrap();
    });
    c.join().unwrap();
    p.join().unwrap();
}

/// Thread P allocates `n` blocks and exits; then thread C frees them.
fn remote_after_exit_seq<A: Probe>(a: &'static A, n: u64, size: fn(u64) -> usize) {
    let v = thread::spawn(move || {
        (0..n)
            .map(|k| Block::new(a, size(k), 16))
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    thread::spawn(move || {
        for b in v {
            b.free("remote_after_exit_seq");
        }
    })
    .join()
    .unwrap();
}

/// Collects every mismatch of one test, so a failure lists them all.
struct Expect {
    ty: &'static str,
    errs: Vec<String>,
}
impl Expect {
    fn new<A: Probe>() -> Self {
        Expect {
            ty: A::type_name(),
            errs: Vec::new(),
        }
    }
    fn eq(&mut self, phase: &str, field: &str, got: u64, want: u64) {
        if got != want {
            self.errs.push(format!(
                "{}/{phase}: {field} delta = {got}, expected {want}",
                self.ty
            ));
        }
    }
    fn ge(&mut self, phase: &str, field: &str, got: u64, min: u64) {
        if got < min {
            self.errs.push(format!(
                "{}/{phase}: {field} delta = {got}, expected >= {min}",
                self.ty
            ));
        }
    }
    fn done(self) {
        assert!(
            self.errs.is_empty(),
            "counter mismatches:\n  {}",
            self.errs.join("\n  ")
        );
    }
}

/// Every free of these sequences is valid: the invalid-free counter stays at zero.
fn no_invalid_frees<A: Probe>(e: &mut Expect) {
    e.eq(
        "whole test",
        "invalid_frees",
        A::probe_stats().invalid_frees,
        0,
    );
}

/// What every stats type must show, whatever its route flags.
fn common_expectations<A: Probe>(a: &'static A, e: &mut Expect) {
    let d = measure::<A>(|| local_seq(a, N, small_size));
    e.eq("local small", "allocs", d.allocs, N);
    e.eq("local small", "calls", d.calls, N);
    e.eq("local small", "local", d.local, N);
    e.eq("local small", "remote", d.remote, 0);
    e.eq("local small", "remote_batches", d.remote_batches, 0);
    e.eq("local small", "large_allocs", d.large_allocs, 0);
    e.ge("local small", "refills", d.refills, 1);

    // `allocs` is derived from the bins' block flow: check it mid-flight, on a
    // thread whose bins still hold blocks and that has refilled and flushed.
    let (d, cached_free) = thread::spawn(move || {
        let before = A::probe_stats();
        let mut v: Vec<_> = (0..3 * N).map(|_| Block::new(a, 48, 16)).collect();
        v.drain(..).for_each(|b| b.free("churn"));
        v.extend((0..3 * N).map(|_| Block::new(a, 48, 16)));
        v.drain(..3 * N as usize / 2).for_each(|b| b.free("churn"));
        let d = delta(&before, &A::probe_stats());
        v.into_iter().for_each(|b| b.free("churn"));
        (d, 3 * N / 2)
    })
    .join()
    .unwrap();
    e.eq("cached churn", "allocs", d.allocs, 6 * N);
    e.eq("cached churn", "local", d.local, 3 * N + cached_free);
    e.ge("cached churn", "refills", d.refills, 1);

    let d = measure::<A>(|| remote_live_seq(a, N, small_size));
    e.eq("remote small (owner alive)", "allocs", d.allocs, N);
    e.eq("remote small (owner alive)", "calls", d.calls, N);
    e.eq("remote small (owner alive)", "remote", d.remote, N);
    e.eq("remote small (owner alive)", "local", d.local, 0);
    e.ge(
        "remote small (owner alive)",
        "remote_batches",
        d.remote_batches,
        1,
    );

    let d = measure::<A>(|| remote_after_exit_seq(a, N, small_size));
    e.eq("small after owner exit", "allocs", d.allocs, N);
    e.eq("small after owner exit", "calls", d.calls, N);
    e.eq(
        "small after owner exit",
        "local+remote",
        d.local + d.remote,
        N,
    );

    let d = measure::<A>(|| local_seq(a, M, medium_size));
    e.eq("local medium", "allocs", d.allocs, M);
    e.eq("local medium", "calls", d.calls, M);
    e.eq("local medium", "local", d.local, M);
    e.eq("local medium", "remote", d.remote, 0);
    e.eq("local medium", "large_allocs", d.large_allocs, 0);

    let d = measure::<A>(|| remote_live_seq(a, M, medium_size));
    e.eq("remote medium (owner alive)", "calls", d.calls, M);
    e.eq("remote medium (owner alive)", "remote", d.remote, M);
    e.eq("remote medium (owner alive)", "local", d.local, 0);

    let d = measure::<A>(|| local_seq(a, L, large_size));
    e.eq("local large", "allocs", d.allocs, L);
    e.eq("local large", "calls", d.calls, L);
    e.eq("local large", "large_allocs", d.large_allocs, L);
    no_invalid_frees::<A>(e);
}

/// free_fast + ptag late: every small free of a live block is routed by the S110
/// meta (segment found, bin_plus1 set); the tag map, only a fallback, is never read.
#[test]
fn free_fast_late_routes_every_small_free_by_meta() {
    let a = &FAST_LATE;
    let mut e = Expect::new::<CntFastLate>();
    for (phase, run) in [
        (
            "local small",
            local_seq::<CntFastLate> as fn(&'static CntFastLate, u64, fn(u64) -> usize),
        ),
        ("remote small (owner alive)", remote_live_seq::<CntFastLate>),
        (
            "small after owner exit",
            remote_after_exit_seq::<CntFastLate>,
        ),
    ] {
        let d = measure::<CntFastLate>(|| run(a, N, small_size));
        e.eq(phase, "calls", d.calls, N);
        e.eq(phase, "seg_hit", d.seg_hit, N);
        e.eq(phase, "seg_miss", d.seg_miss, 0);
        e.eq(phase, "meta_hit", d.meta_hit, N);
        e.eq(phase, "meta_zero", d.meta_zero, 0);
        e.eq(phase, "fallback_ptag", d.fallback_ptag, 0);
        e.eq(phase, "ptag_lookups", d.ptag_lookups, 0);
        e.eq(phase, "local+remote", d.local + d.remote, N);
    }
    common_expectations(a, &mut e);
    e.done();
}

/// free_fast without a tag map: same meta routing, no tag lookups at all.
#[test]
fn free_fast_off_routes_by_meta_without_tags() {
    let a = &FAST_OFF;
    let mut e = Expect::new::<CntFastOff>();
    let d = measure::<CntFastOff>(|| local_seq(a, N, small_size));
    e.eq("local small", "meta_hit", d.meta_hit, N);
    e.eq("local small", "seg_hit", d.seg_hit, N);
    e.eq("local small", "meta_zero", d.meta_zero, 0);
    e.eq("local small", "calls", d.calls, N);
    common_expectations(a, &mut e);
    e.eq(
        "whole test",
        "ptag_lookups",
        CntFastOff::probe_stats().ptag_lookups,
        0,
    );
    e.done();
}

/// The scale lane's observation setting (meta kept, free not routed by it).
#[test]
fn observe_counts_calls_and_owners() {
    let mut e = Expect::new::<CntObserve>();
    common_expectations(&OBSERVE, &mut e);
    e.done();
}

/// ptag first without S110 meta: every small free is one tag lookup that hits; no
/// S110 step ever runs.
#[test]
fn ptag_first_hits_every_small_free() {
    let a = &PTAG_FIRST;
    let mut e = Expect::new::<CntPtagFirst>();
    for (phase, run) in [
        (
            "local small",
            local_seq::<CntPtagFirst> as fn(&'static CntPtagFirst, u64, fn(u64) -> usize),
        ),
        (
            "remote small (owner alive)",
            remote_live_seq::<CntPtagFirst>,
        ),
    ] {
        let d = measure::<CntPtagFirst>(|| run(a, N, small_size));
        e.eq(phase, "calls", d.calls, N);
        e.eq(phase, "ptag_lookups", d.ptag_lookups, N);
        e.eq(phase, "ptag_hit", d.ptag_hit, N);
        e.eq(phase, "ptag_miss", d.ptag_miss, 0);
        e.eq(phase, "ptag_decode_fail", d.ptag_decode_fail, 0);
    }
    // Medium block starts carry a tag too.
    let d = measure::<CntPtagFirst>(|| local_seq(a, M, medium_size));
    e.eq("local medium", "ptag_hit", d.ptag_hit, M);
    e.eq("local medium", "ptag_decode_fail", d.ptag_decode_fail, 0);
    common_expectations(a, &mut e);
    let total = CntPtagFirst::probe_stats();
    e.eq("whole test", "meta_hit", total.meta_hit, 0);
    e.eq("whole test", "meta_zero", total.meta_zero, 0);
    e.eq("whole test", "seg_hit", total.seg_hit, 0);
    e.eq("whole test", "seg_miss", total.seg_miss, 0);
    e.done();
}

/// ptag first with S110 meta kept (not free_fast): the tag map still routes.
#[test]
fn ptag_first_with_meta_hits_every_small_free() {
    let a = &META_FIRST;
    let mut e = Expect::new::<CntMetaFirst>();
    let d = measure::<CntMetaFirst>(|| local_seq(a, N, small_size));
    e.eq("local small", "ptag_hit", d.ptag_hit, N);
    e.eq("local small", "ptag_miss", d.ptag_miss, 0);
    e.eq("local small", "ptag_decode_fail", d.ptag_decode_fail, 0);
    common_expectations(a, &mut e);
    e.done();
}

/// Neither S110 meta nor tag map: header routing only, no meta or tag counters.
#[test]
fn plain_off_counts_no_meta_and_no_tags() {
    let a = &PLAIN_OFF;
    let mut e = Expect::new::<CntPlainOff>();
    common_expectations(a, &mut e);
    let total = CntPlainOff::probe_stats();
    e.eq("whole test", "ptag_lookups", total.ptag_lookups, 0);
    e.eq("whole test", "meta_hit", total.meta_hit, 0);
    e.eq("whole test", "meta_zero", total.meta_zero, 0);
    e.done();
}

/// With one shard every thread is the same owner: cross-thread frees are local.
#[test]
fn one_shard_makes_every_free_local() {
    let a = &ONE_SHARD;
    let mut e = Expect::new::<CntOneShard>();
    let d = measure::<CntOneShard>(|| remote_live_seq(a, N, small_size));
    e.eq("cross-thread small", "calls", d.calls, N);
    e.eq("cross-thread small", "local", d.local, N);
    e.eq("cross-thread small", "remote", d.remote, 0);
    e.eq("cross-thread small", "meta_hit", d.meta_hit, N);
    let d = measure::<CntOneShard>(|| remote_live_seq(a, M, medium_size));
    e.eq("cross-thread medium", "local", d.local, M);
    e.eq("cross-thread medium", "remote", d.remote, 0);
    let d = measure::<CntOneShard>(|| local_seq(a, N, small_size));
    e.eq("local small", "local", d.local, N);
    e.eq("local small", "allocs", d.allocs, N);
    e.done();
}

/// stats: false keeps every counter at zero, whatever happens.
#[test]
fn stats_off_snapshot_is_all_zero() {
    let a = &STATS_OFF;
    local_seq(a, N, small_size);
    remote_live_seq(a, N, small_size);
    remote_after_exit_seq(a, M, medium_size);
    local_seq(a, L, large_size);
    assert_eq!(CntStatsOff::probe_stats(), StatsSnapshot::default());
}
