//! Reliability: out of memory and arena exhaustion.
//!
//! - `rlimit_as_null_then_recovers` (child process): `RLIMIT_AS` is lowered to
//!   the current VmSize + 256 MiB before the type (`arena_gib: 1`) is first used,
//!   so the arena reservation itself shrinks (the engine halves it down to 64 MiB
//!   until it fits). 1 MiB blocks are then allocated until one returns null (not an
//!   abort), then medium and small blocks until null; after half is freed, the type
//!   serves new blocks again (also from a new thread freeing remotely), and after
//!   everything is freed a 64 MiB patterned workload succeeds.
//! - `rlimit_below_minimum_arena` (child): a limit too low for even a 64 MiB
//!   arena: every block is then a direct mapping, and the type still works.
//! - `hardened_arena_reserved_late` (child): a hardened type first used under a
//!   limit too low for its arena (its thread cache is set up with no arena), then
//!   the limit is raised: the arena is reserved on a later direct mapping, and
//!   the blocks the cache then takes from it pass the pop's link test (the
//!   cache's copy of the arena bounds is refreshed) with their contents intact.
//! - `arena_exhaustion_falls_back_to_direct_maps`: `arena_gib: 1`, 300 x 8 MiB
//!   blocks live at once (2.4 GiB, more than the arena), plus 4 x 80 MiB; all
//!   succeed (direct mappings), do not overlap, keep their contents; small and
//!   medium blocks still work while the arena is full; all are freed and the arena
//!   serves large blocks again. Big blocks carry their pattern every 256 KiB, so
//!   the resident cost stays near 40 MiB.
//!
//! Long run: `HZ3_STRESS_SCALE=n` repeats the post-recovery workload n times and
//! multiplies the small/medium blocks allocated while the arena is exhausted (the
//! limits and the 300 x 8 MiB stay: they are the point of the tests).

mod reliability_support;

use reliability_support::*;
use std::time::Instant;

hz3::hz3_allocator! {
    pub struct Oom<arena_gib: 1, stats: true>;
    pub struct Tiny<arena_gib: 1>;
    pub struct Exh<arena_gib: 1, stats: true>;
    pub struct LateHard<arena_gib: 1, harden: true>;
}
impl_hz!(Oom, Tiny, Exh, LateHard);

/// Lower the soft `RLIMIT_AS` to `bytes` (the hard limit stays).
fn limit_address_space(bytes: usize) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) }, 0);
    r.rlim_cur = bytes as libc::rlim_t;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &r) }, 0, "setrlimit");
}

/// Allocate `size`-byte blocks until null or `cap` blocks; returns them.
fn fill_until_null<A: Hz>(a: &A, size: usize, cap: usize, out: &mut Vec<Blk>) -> bool {
    for k in 0..cap {
        match Blk::new_in(a, size, 8, k as u64) {
            Some(b) => out.push(b),
            None => return true,
        }
    }
    false
}

/// Patterned workload of about `bytes` live at the peak, freed at the end.
fn workload<A: Hz>(bytes: usize, seed: u64) {
    let a = A::default();
    let mut rng = Rng::new(seed);
    let mut live = Vec::new();
    let mut total = 0;
    while total < bytes {
        let size = mixed_size(&mut rng);
        total += size;
        live.push(Blk::new(&a, size, if rng.pct(10) { 4096 } else { 16 }, total as u64));
    }
    for b in live {
        b.free(&a, "workload");
    }
}

#[test]
fn rlimit_as_null_then_recovers() {
    if child_scenario().is_none() {
        let out = run_child("rlimit_as_null_then_recovers", "oom", &[]);
        out.assert_ok("rlimit_as_null_then_recovers");
        println!("{}", out.stdout);
        return;
    }
    let t0 = Instant::now();
    let a = Oom::new();
    // Room for the bookkeeping (std allocations) made while memory is short.
    let mut big: Vec<Blk> = Vec::with_capacity(1 << 12);
    let mut med: Vec<Blk> = Vec::with_capacity(1 << 14);
    let mut small: Vec<Blk> = Vec::with_capacity(1 << 18);
    report("vm_before", vm_size());
    let limit = vm_size() + 256 * MIB;
    limit_address_space(limit);
    report("limit", limit);

    assert!(fill_until_null(&a, MIB, 4096, &mut big), "1 MiB blocks never ran out under the limit");
    report("mib_blocks_before_null", big.len());
    assert!(big.len() >= 32, "only {} MiB before null", big.len());
    assert!(fill_until_null(&a, 48 * KIB, 1 << 14, &mut med), "medium blocks never ran out");
    assert!(fill_until_null(&a, 200, 1 << 18, &mut small), "small blocks never ran out");
    report("medium_before_null", med.len());
    report("small_before_null", small.len());
    // Still null on a retry; nothing was damaged by the failures.
    assert!(Blk::new_in(&a, MIB, 8, 0).is_none());
    for b in big.iter().chain(&med).chain(&small) {
        b.verify("under the limit");
    }

    // Free half of the big blocks: the type serves 1 MiB blocks again.
    let half = big.split_off(big.len() / 2);
    let freed = half.len();
    for b in half {
        b.free(&a, "first half");
    }
    let mut again = Vec::with_capacity(freed);
    fill_until_null(&a, MIB, freed / 2, &mut again);
    report("mib_blocks_after_free", again.len());
    assert_eq!(again.len(), freed / 2, "after freeing {freed} MiB only {} MiB blocks came back", again.len());

    // Free the rest, partly from another thread (remote frees).
    let remote: Vec<Blk> = small.drain(..).chain(med.drain(..)).collect();
    std::thread::spawn(move || {
        for b in remote {
            b.free(&Oom::new(), "remote free after OOM");
        }
    })
    .join()
    .unwrap();
    for b in big.into_iter().chain(again) {
        b.free(&a, "second half");
    }
    // Still under the limit: 64 MiB at a time fits (scale repeats it).
    for r in 0..scale() {
        workload::<Oom>(64 * MIB, 9 + r as u64);
    }
    let s = Oom::stats();
    report("allocs", s.allocs);
    report("elapsed_ms", t0.elapsed().as_millis());
}

#[test]
fn rlimit_below_minimum_arena() {
    if child_scenario().is_none() {
        let out = run_child("rlimit_below_minimum_arena", "tiny", &[]);
        out.assert_ok("rlimit_below_minimum_arena");
        println!("{}", out.stdout);
        return;
    }
    let a = Tiny::new();
    let mut v: Vec<Blk> = Vec::with_capacity(1 << 16);
    let limit = vm_size() + 40 * MIB;
    limit_address_space(limit);
    // No arena fits: every block is its own mapping, and still correct.
    for k in 0..300 {
        let size = [24, 700, 5000, 70_000][k % 4];
        v.push(Blk::new(&a, size, 16, k as u64));
    }
    for b in v.drain(..) {
        b.free(&a, "no arena");
    }
    assert!(fill_until_null(&a, 64 * KIB, 1 << 16, &mut v), "never ran out");
    report("blocks_before_null", v.len());
    for b in v.drain(..) {
        b.free(&a, "no arena, after null");
    }
    for k in 0..100 {
        Blk::new(&a, 100 + k, 8, k as u64).free(&a, "no arena, recovered");
    }
}

#[test]
fn hardened_arena_reserved_late() {
    if child_scenario().is_none() {
        let out = run_child("hardened_arena_reserved_late", "late", &[]);
        out.assert_ok("hardened_arena_reserved_late");
        println!("{}", out.stdout);
        return;
    }
    let a = LateHard::new();
    let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut saved) }, 0);
    let mut v: Vec<Blk> = Vec::with_capacity(1 << 16);
    limit_address_space(vm_size() + 40 * MIB);
    for k in 0..64 {
        v.push(Blk::new(&a, 48 + k, 16, k as u64));
    }
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &saved) }, 0, "restore the limit");
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    // Direct mappings retry the arena (the 1st, 2nd, 4th ... of them).
    for k in 0..256 {
        v.push(Blk::new(&a, 64, 16, 1000 + k as u64));
    }
    let before = maps();
    for round in 0..20u64 {
        for k in 0..2000u64 {
            v.push(Blk::new(&a, 16 + (k as usize * 40) % 2000, 16, round * 10_000 + k));
        }
        let keep = v.len() / 2;
        for b in v.drain(keep..) {
            b.free(&a, "late arena");
        }
    }
    let grown = maps().saturating_sub(before);
    report("maps_grown", grown);
    // 40,000 blocks: as direct mappings they would add thousands of maps.
    assert!(grown < 200, "the arena was not reserved late: {grown} new mappings");
    for b in v.drain(..) {
        b.free(&a, "late arena, end");
    }
}

#[test]
fn arena_exhaustion_falls_back_to_direct_maps() {
    let t0 = Instant::now();
    let a = Exh::new();
    let mut big: Vec<Blk> = (0..300).map(|k| Blk::new(&a, 8 * MIB, 16, k)).collect();
    big.extend((0..4).map(|k| Blk::new(&a, 80 * MIB, 4096, 1000 + k)));
    let total: usize = big.iter().map(|b| b.size).sum();
    assert!(total > 2 * 1024 * MIB);
    // No overlap, by address order.
    let mut sorted = big.clone();
    sorted.sort_by_key(|b| b.p);
    for w in sorted.windows(2) {
        assert!(w[0].p + w[0].size <= w[1].p, "blocks {:#x}+{} and {:#x} overlap", w[0].p, w[0].size, w[1].p);
    }
    // The arena is full: smaller blocks still work.
    let mut rng = Rng::new(3);
    let others: Vec<Blk> =
        (0..3000 * scale()).map(|k| Blk::new(&a, rng.range(1, 64 * KIB), 16, k as u64)).collect();
    for b in &big {
        b.verify("exhaustion: big");
    }
    for b in others {
        b.free(&a, "exhaustion: small/medium");
    }
    for b in big.drain(..) {
        b.free(&a, "exhaustion: big");
    }
    // The arena serves large blocks again.
    let again: Vec<Blk> = (0..100).map(|k| Blk::new(&a, 8 * MIB, 16, k)).collect();
    for b in again {
        b.free(&a, "exhaustion: again");
    }
    eprintln!("arena exhaustion: {} MiB live at once, {:?}; {:?}", total >> 20, t0.elapsed(), Exh::stats());
}
