//! Engine tests through hand-written configurations (the macro and the
//! generic suite test generated types; these pin the engine per route).
extern crate std;

use crate::stats::StatsSnapshot;
use crate::{Config, Ptag, State};
use std::vec::Vec;

macro_rules! test_config {
    ($m:ident, $meta:expr, $fast:expr, $ptag:expr, $failfast:expr, $shards:expr) => {
        mod $m {
            use super::*;
            std::thread_local! {
                static SLOT: core::cell::Cell<*mut u8> = const { core::cell::Cell::new(core::ptr::null_mut()) };
            }
            pub struct T;
            impl Config for T {
                const NAME: &'static str = stringify!($m);
                const S110_META: bool = $meta;
                const FREE_FAST: bool = $fast;
                const PTAG: Ptag = $ptag;
                const STATS: bool = true;
                const FAILFAST: bool = $failfast;
                const SHARDS: usize = $shards;
                const ARENA_SIZE: usize = 4 << 30;
                const PURGE: bool = true;
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

test_config!(scale, true, false, Ptag::Late, false, 64);
test_config!(fast, true, true, Ptag::Late, false, 64);
test_config!(first, false, false, Ptag::First, false, 8);
test_config!(off, false, false, Ptag::Off, true, 2);
test_config!(fastoff, true, true, Ptag::Off, true, 1);

use crate::api::{alloc, dealloc, free, realloc, stats, usable_size};

fn pattern(p: *mut u8, n: usize) {
    for i in 0..n {
        // SAFETY: p points at n writable bytes (callers pass a live block).
        unsafe { *p.add(i) = ((p as usize >> 4) as u8) ^ (i as u8) };
    }
}

fn check(p: *mut u8, n: usize) {
    for i in 0..n {
        // SAFETY: as in `pattern`.
        let v = unsafe { *p.add(i) };
        assert_eq!(v, ((p as usize >> 4) as u8) ^ (i as u8), "corrupt block {p:?} byte {i}");
    }
}

fn fill_seq(p: *mut u8, from: usize, to: usize) {
    for i in from..to {
        // SAFETY: p points at `to` writable bytes.
        unsafe { *p.add(i) = (i * 7 + 3) as u8 };
    }
}

fn check_seq(p: *mut u8, n: usize) {
    for i in 0..n {
        // SAFETY: p points at n readable bytes.
        assert_eq!(unsafe { *p.add(i) }, (i * 7 + 3) as u8, "realloc lost byte {i}");
    }
}

fn churn<C: Config>(seed: u64, ops: usize) {
    let mut live: Vec<(*mut u8, usize, usize)> = Vec::new();
    let mut x = seed;
    for _ in 0..ops {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        if live.len() > 500 || (r.is_multiple_of(3) && !live.is_empty()) {
            let (p, n, a) = live.swap_remove(r % live.len());
            check(p, n.min(256));
            // SAFETY: p is live, allocated with (n, a).
            unsafe { dealloc::<C>(p, n, a) };
        } else {
            let n = match r % 10 {
                0..=6 => 1 + r % 2048,
                7 | 8 => 2049 + r % 63000,
                _ => 65537 + r % 600_000,
            };
            let a = if r.is_multiple_of(7) { 1 << (4 + (r >> 8) % 13) } else { 8 };
            // SAFETY: a is a power of two.
            let p = unsafe { alloc::<C>(n, a) };
            assert!(!p.is_null());
            assert_eq!(p as usize % a, 0);
            // SAFETY: p is live.
            assert!(unsafe { usable_size::<C>(p) }.unwrap() >= n);
            pattern(p, n.min(256));
            live.push((p, n, a));
        }
    }
    for (p, n, a) in live {
        check(p, n.min(256));
        // SAFETY: p is live, allocated with (n, a).
        unsafe { dealloc::<C>(p, n, a) };
    }
}

fn suite<C: Config>() {
    churn::<C>(1, 50_000);
    let hs: Vec<_> = (0..4).map(|t| std::thread::spawn(move || churn::<C>(t + 7, 30_000))).collect();
    for h in hs {
        h.join().unwrap();
    }
    // producer/consumer: every free remote
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize)>();
    let prod = std::thread::spawn(move || {
        for i in 0..20_000usize {
            let n = 16 + (i * 37) % 4000;
            // SAFETY: align 16 is a power of two.
            let p = unsafe { alloc::<C>(n, 16) };
            pattern(p, n);
            tx.send((p as usize, n)).unwrap();
        }
    });
    let cons = std::thread::spawn(move || {
        for (p, n) in rx {
            check(p as *mut u8, n);
            // SAFETY: p is live and handed over by the producer.
            unsafe { free::<C>(p as *mut u8) };
        }
    });
    prod.join().unwrap();
    cons.join().unwrap();
    // realloc chain
    // SAFETY: the chain keeps p live; every size fits the previous copy.
    unsafe {
        let mut p = alloc::<C>(1, 16);
        let mut n = 1usize;
        fill_seq(p, 0, n);
        while n < 3 << 20 {
            let m = n * 3 / 2 + 1;
            p = realloc::<C>(p, n, 16, m);
            assert!(!p.is_null());
            check_seq(p, n);
            fill_seq(p, n, m);
            n = m;
        }
        while n > 16 {
            let m = n / 3;
            p = realloc::<C>(p, n, 16, m);
            check_seq(p, m);
            n = m;
        }
        free::<C>(p);
    }
    // thread waves
    for _ in 0..5 {
        let hs: Vec<_> = (0..24).map(|t| std::thread::spawn(move || churn::<C>(t, 500))).collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    // impossible sizes
    // SAFETY: alignments are powers of two.
    unsafe {
        assert!(alloc::<C>(isize::MAX as usize, 16).is_null());
        assert!(alloc::<C>(1 << 47, 4096).is_null());
    }
}

#[test]
fn scale_suite() {
    suite::<scale::T>();
}
#[test]
fn fast_suite() {
    suite::<fast::T>();
}
#[test]
fn first_suite() {
    suite::<first::T>();
}
#[test]
fn off_suite() {
    suite::<off::T>();
}
#[test]
fn fastoff_suite() {
    suite::<fastoff::T>();
}

fn delta(a: StatsSnapshot, b: StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        calls: b.calls - a.calls,
        seg_hit: b.seg_hit - a.seg_hit,
        meta_hit: b.meta_hit - a.meta_hit,
        meta_zero: b.meta_zero - a.meta_zero,
        fallback_ptag: b.fallback_ptag - a.fallback_ptag,
        local: b.local - a.local,
        remote: b.remote - a.remote,
        ptag_hit: b.ptag_hit - a.ptag_hit,
        allocs: b.allocs - a.allocs,
        ..Default::default()
    }
}

mod counted {
    use super::*;
    test_config!(cfast, true, true, Ptag::Late, false, 4);
    test_config!(cscale, true, false, Ptag::Late, false, 4);

    #[test]
    fn free_fast_small_frees_are_meta_hits() {
        std::thread::spawn(|| {
            let before = stats::<cfast::T>();
            // SAFETY: blocks are allocated and freed in pairs.
            let ps: Vec<_> = (0..1000).map(|i| unsafe { alloc::<cfast::T>(16 + i % 2000, 16) }).collect();
            for p in &ps {
                // SAFETY: each p is live.
                unsafe { free::<cfast::T>(*p) };
            }
            let d = delta(before, stats::<cfast::T>());
            assert_eq!(d.calls, 1000);
            assert_eq!(d.meta_hit, 1000);
            assert_eq!(d.seg_hit, 1000);
            assert_eq!(d.meta_zero, 0);
            assert_eq!(d.local, 1000);
            assert_eq!(d.allocs, 1000);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn scale_frees_fall_back_to_ptag_and_remote_is_counted() {
        let ps: Vec<usize> = std::thread::spawn(|| {
            // SAFETY: blocks stay live until freed below.
            (0..500).map(|i| unsafe { alloc::<cscale::T>(16 + i, 16) } as usize).collect()
        })
        .join()
        .unwrap();
        // A second live thread holds a shard, so the consumer below cannot be
        // on the exited producer's shard.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let hold = std::thread::spawn(move || {
            // SAFETY: allocate and free one block.
            unsafe { free::<cscale::T>(alloc::<cscale::T>(32, 16)) };
            ready_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        ready_rx.recv().unwrap();
        let before = stats::<cscale::T>();
        std::thread::spawn(move || {
            for p in &ps {
                // SAFETY: each p is live.
                unsafe { free::<cscale::T>(*p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        done_tx.send(()).unwrap();
        hold.join().unwrap();
        let d = delta(before, stats::<cscale::T>());
        assert_eq!(d.meta_hit, 500, "observation step sees every block");
        assert_eq!(d.fallback_ptag, 500);
        assert_eq!(d.calls, 500);
        assert_eq!(d.local + d.remote, 500);
    }
}

mod trimmed {
    use super::*;
    use crate::arena::{SLOT_HEAD, SLOT_TAIL};
    test_config!(ctrim, true, false, Ptag::Late, false, 4);

    fn held_slots() -> usize {
        let st = <ctrim::T as Config>::state();
        (0..st.arena.slot_count()).filter(|&i| matches!(st.arena.slot_state_checked(i), SLOT_HEAD | SLOT_TAIL)).count()
    }

    #[test]
    fn exited_threads_give_back_their_segments() {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut x = t + 1;
                    let mut live = Vec::new();
                    for _ in 0..20_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let n = match (x >> 40) % 10 {
                            0..=6 => 16 + (x >> 20) as usize % 2032,
                            7 | 8 => 4096 + (x >> 20) as usize % 28000,
                            _ => 70_000 + (x >> 20) as usize % 500_000,
                        };
                        // SAFETY: align 16 is a power of two.
                        let p = unsafe { alloc::<ctrim::T>(n, 16) };
                        pattern(p, n.min(64));
                        live.push((p as usize, n));
                    }
                    // Free half here and hand the rest to the main thread.
                    let rest = live.split_off(live.len() / 2);
                    for (p, n) in live {
                        check(p as *mut u8, n.min(64));
                        // SAFETY: p is live.
                        unsafe { free::<ctrim::T>(p as *mut u8) };
                    }
                    rest
                })
            })
            .collect();
        let rest: Vec<Vec<(usize, usize)>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        std::thread::spawn(move || {
            for (p, n) in rest.into_iter().flatten() {
                check(p as *mut u8, n.min(64));
                // SAFETY: p is live; the allocating thread has exited.
                unsafe { free::<ctrim::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        assert_eq!(held_slots(), 0, "every segment and large block returned to the arena");
        let st = <ctrim::T as Config>::state();
        assert!(st.arena.dirty_slots() <= crate::large::LARGE_DIRTY_CAP);
    }
}

mod delayed_purge {
    use super::*;
    use crate::arena::PURGE_DELAY_MS;
    use crate::large::{LARGE_CACHE_SLOTS, LARGE_DIRTY_CAP};
    test_config!(cdecay, true, false, Ptag::Late, false, 4);

    /// The smallest large block: one slot.
    const ONE_SLOT: usize = crate::size_class::MEDIUM_MAX + 1;

    fn alloc_large(n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| {
                // SAFETY: align 16 is a power of two.
                let p = unsafe { alloc::<cdecay::T>(ONE_SLOT, 16) };
                assert!(!p.is_null());
                // SAFETY: the block has ONE_SLOT bytes.
                unsafe { p.write_bytes(i as u8, ONE_SLOT) };
                p as usize
            })
            .collect()
    }

    /// Freed large slots above the kept floor stay resident for the purge delay
    /// (a burst of frees followed by allocations reuses them), never beyond the
    /// cap, and are purged once the delay has passed; a thread's exit purges
    /// what it left above the floor at once.
    #[test]
    fn freed_large_slots_purge_after_the_delay() {
        let st = <cdecay::T as Config>::state();
        std::thread::spawn(|| {
            // A thread cache (its exit hook purges, below).
            // SAFETY: align 16 is a power of two; the block is freed at once.
            unsafe { free::<cdecay::T>(alloc::<cdecay::T>(64, 16)) };
            // A run bigger than the cap allows beside the floor is purged at once.
            // SAFETY: align 16 is a power of two; the block is freed untouched.
            unsafe { free::<cdecay::T>(alloc::<cdecay::T>((LARGE_DIRTY_CAP - LARGE_CACHE_SLOTS + 1) << 20, 16)) };
            assert_eq!(st.arena.dirty_slots(), 0);
            // A burst: 30 blocks (one slot each, within the smallest cap)
            // freed, then reallocated warm. The exact counts hold unless the
            // machine stalled for the delay.
            let ps = alloc_large(30);
            let t0 = crate::os::now_ms();
            for &p in &ps {
                // SAFETY: p is a live block.
                unsafe { free::<cdecay::T>(p as *mut u8) };
            }
            let resident = st.arena.dirty_slots();
            let again = alloc_large(30);
            if crate::os::now_ms().wrapping_sub(t0) < PURGE_DELAY_MS {
                assert_eq!(resident, 30, "the burst stays resident");
                assert_eq!(st.arena.dirty_slots(), 0, "the burst reused every dirty slot");
            }
            // More than the cap: the oldest runs are purged at once.
            let more = alloc_large(LARGE_DIRTY_CAP);
            for &p in again.iter().chain(more.iter()) {
                // SAFETY: p is a live block.
                unsafe { free::<cdecay::T>(p as *mut u8) };
            }
            assert!(st.arena.dirty_slots() <= LARGE_DIRTY_CAP);
            assert!(st.arena.dirty_slots() > LARGE_CACHE_SLOTS);
            // After the delay, the next large free purges down to the floor.
            std::thread::sleep(std::time::Duration::from_millis(PURGE_DELAY_MS * 2 + 20));
            let one = alloc_large(1);
            // SAFETY: one[0] is a live block.
            unsafe { free::<cdecay::T>(one[0] as *mut u8) };
            assert!(st.arena.dirty_slots() <= LARGE_CACHE_SLOTS + 1, "dirty {}", st.arena.dirty_slots());
            // A burst left behind by an exiting thread goes at its exit.
            let last = alloc_large(30);
            for &p in &last {
                // SAFETY: p is a live block.
                unsafe { free::<cdecay::T>(p as *mut u8) };
            }
            assert!(st.arena.dirty_slots() > LARGE_CACHE_SLOTS);
        })
        .join()
        .unwrap();
        assert!(st.arena.dirty_slots() <= LARGE_CACHE_SLOTS, "dirty {} after thread exit", st.arena.dirty_slots());
    }
}

mod large_slots {
    use super::*;
    use crate::large::{LARGE_CACHE_SLOTS, LARGE_DIRTY_MIN};
    test_config!(cslots, true, false, Ptag::Late, false, 4);
    test_config!(cshrink, true, false, Ptag::Late, false, 4);

    /// The smallest large block: one slot.
    const ONE_SLOT: usize = crate::size_class::MEDIUM_MAX + 1;

    /// Freed large slots kept resident follow the large bytes held: a small
    /// program's burst of frees keeps at most `LARGE_DIRTY_MIN` slots
    /// resident (the cap used to be 128 slots whatever the program held),
    /// one holding more keeps up to two thirds of its footprint (live and
    /// freed).
    #[test]
    fn freed_large_slots_kept_resident_follow_the_bytes_held() {
        let st = <cslots::T as Config>::state();
        std::thread::spawn(|| {
            let alloc_n = |n: usize| -> Vec<usize> {
                (0..n)
                    .map(|i| {
                        // SAFETY: align 16 is a power of two.
                        let p = unsafe { alloc::<cslots::T>(ONE_SLOT, 16) };
                        assert!(!p.is_null());
                        // SAFETY: the block has ONE_SLOT bytes.
                        unsafe { p.write_bytes(i as u8, ONE_SLOT) };
                        p as usize
                    })
                    .collect()
            };
            let small = alloc_n(96);
            for &p in &small {
                // SAFETY: p is a live block.
                unsafe { free::<cslots::T>(p as *mut u8) };
            }
            let dirty = st.arena.dirty_slots();
            assert!(dirty <= LARGE_DIRTY_MIN, "96 freed one-slot blocks left {dirty} slots resident");
            assert!(dirty > LARGE_CACHE_SLOTS, "the burst was purged at once ({dirty} left)");
            // 32 held, 96 freed: the cap is two thirds of 128 slots.
            let held = alloc_n(32);
            let burst = alloc_n(96);
            for &p in &burst {
                // SAFETY: p is a live block.
                unsafe { free::<cslots::T>(p as *mut u8) };
            }
            let dirty = st.arena.dirty_slots();
            assert!(dirty <= 128 * 2 / 3 && dirty > LARGE_DIRTY_MIN, "{dirty} slots resident beside 32 held");
            for &p in &held {
                // SAFETY: p is a live block.
                unsafe { free::<cslots::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        assert_eq!(st.arena.large_live.load(core::sync::atomic::Ordering::Relaxed), 0);
    }

    /// A large block shrunk by realloc stays in place and gives the slots
    /// past its new size back (it used to keep all of them, or move); its
    /// content is kept, and it can grow in place again.
    #[test]
    fn shrinking_a_large_block_returns_its_trailing_slots() {
        let st = <cshrink::T as Config>::state();
        std::thread::spawn(|| {
            let live = || st.arena.large_live.load(core::sync::atomic::Ordering::Relaxed);
            let before = live();
            let big = 8 << 20;
            // SAFETY: align 16 is a power of two.
            let p = unsafe { alloc::<cshrink::T>(big, 16) };
            assert!(!p.is_null());
            assert_eq!(live() - before, 9, "8 MiB and a header page take 9 slots");
            for i in 0..big / 4096 {
                // SAFETY: p has `big` bytes.
                unsafe { *p.add(i * 4096) = i as u8 };
            }
            for (new, slots) in [(3 << 20, 4), (1 << 20, 2), (5 << 20, 6)] {
                // SAFETY: p is a live block of `big` bytes in use (then `new`).
                let q = unsafe { realloc::<cshrink::T>(p, big, 16, new) };
                assert_eq!(q, p, "realloc to {new} moved the block");
                assert_eq!(live() - before, slots, "realloc to {new}");
                // SAFETY: q is a live large block.
                let usable = unsafe { usable_size::<cshrink::T>(q) }.unwrap();
                assert!(usable >= new && usable < new + (1 << 20), "usable {usable} for {new}");
                for i in 0..(new.min(1 << 20)) / 4096 {
                    // SAFETY: q has at least `new` bytes.
                    assert_eq!(unsafe { *q.add(i * 4096) }, i as u8, "page {i} after realloc to {new}");
                }
            }
            // SAFETY: p is live.
            unsafe { free::<cshrink::T>(p) };
            assert_eq!(live(), before);
        })
        .join()
        .unwrap();
    }
}

mod big_classes {
    use super::*;
    use crate::shard::LONG_RUN_PURGE_PAGES;
    use crate::size_class::{bin_of, BINS, BUDGET_FIRST, CACHE_BUDGET_BYTES, NBINS};
    use crate::stats::Ctr;
    test_config!(cbudget, true, false, Ptag::Late, false, 4);
    test_config!(cpublish, true, false, Ptag::Late, false, 4);
    test_config!(clong, true, false, Ptag::Late, false, 4);

    /// Bytes of blocks of the classes above 256 KiB in the bins of cache `tc`.
    fn cached_big_bytes(tc: *mut crate::tcache::ThreadCache) -> usize {
        // SAFETY: `tc` is the calling thread's live cache.
        (BUDGET_FIRST..NBINS).map(|b| unsafe { (*tc).cached(b) } as usize * BINS[b].size as usize).sum()
    }

    /// A thread that frees two blocks of each class above 256 KiB keeps at
    /// most `CACHE_BUDGET_BYTES` of them in its cache (two of each class
    /// used to stay: 9.9 MiB); a block freed within the budget serves the
    /// next allocation of its class from the cache, without a refill.
    #[test]
    fn classes_above_256_kib_are_cached_within_a_byte_budget() {
        std::thread::spawn(|| {
            let ps: Vec<usize> = (BUDGET_FIRST..NBINS)
                .flat_map(|b| [b, b])
                .map(|b| {
                    // SAFETY: align 16 is a power of two.
                    let p = unsafe { alloc::<cbudget::T>(BINS[b].size as usize, 16) };
                    assert!(!p.is_null());
                    // SAFETY: the block has at least one byte.
                    unsafe { p.write(b as u8) };
                    p as usize
                })
                .collect();
            let tc = crate::thread::raw::<cbudget::T>();
            assert!(crate::thread::is_live(tc));
            for &p in &ps {
                // SAFETY: p is a live block.
                unsafe { free::<cbudget::T>(p as *mut u8) };
            }
            let held = cached_big_bytes(tc);
            assert!(held > 0, "no block above 256 KiB stayed cached");
            assert!(held <= CACHE_BUDGET_BYTES, "the cache holds {held} bytes of blocks above 256 KiB");
            // SAFETY: `tc` is this thread's live cache.
            let refills = || unsafe { (*tc).ctr.of(Ctr::Refills).load(core::sync::atomic::Ordering::Relaxed) };
            // SAFETY: align 16 is a power of two.
            let p = unsafe { alloc::<cbudget::T>(300 << 10, 16) };
            // SAFETY: p is a live block.
            unsafe { free::<cbudget::T>(p) };
            let before = refills();
            for _ in 0..10 {
                // SAFETY: align 16 is a power of two.
                let q = unsafe { alloc::<cbudget::T>(300 << 10, 16) };
                assert!(!q.is_null());
                // SAFETY: q is a live block.
                unsafe { free::<cbudget::T>(q) };
            }
            assert_eq!(refills(), before, "a 300 KiB block freed within the budget was not reused from the cache");
            assert!(cached_big_bytes(tc) <= CACHE_BUDGET_BYTES);
        })
        .join()
        .unwrap();
    }

    /// A block above 256 KiB freed by another thread is in its owner's inbox
    /// as soon as the free returns: a buffered one stayed with the freeing
    /// thread until its batch filled, one per owner and class (measured: 1
    /// to 4 MiB held by the long-lived thread of `reliability_purge`'s waves).
    #[test]
    fn remote_frees_above_256_kib_are_published_at_once() {
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<usize>, usize)>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let ps: Vec<usize> = (BUDGET_FIRST..NBINS)
                // SAFETY: align 16 is a power of two.
                .map(|b| unsafe { alloc::<cpublish::T>(BINS[b].size as usize, 16) } as usize)
                .collect();
            assert!(ps.iter().all(|&p| p != 0));
            let tc = crate::thread::raw::<cpublish::T>();
            // SAFETY: `tc` is this thread's live cache.
            tx.send((ps, unsafe { (*tc).shard } as usize)).unwrap();
            done_rx.recv().unwrap();
        });
        let (ps, si) = rx.recv().unwrap();
        std::thread::spawn(move || {
            for &p in &ps {
                // SAFETY: each p is live; its owner thread is alive and holds its shard.
                unsafe { free::<cpublish::T>(p as *mut u8) };
            }
            let tc = crate::thread::raw::<cpublish::T>();
            assert!(crate::thread::is_live(tc));
            // SAFETY: `tc` is this thread's live cache.
            assert_eq!(unsafe { (*tc).remote.pending }, 0, "remote frees above 256 KiB wait in the freeing thread");
            let sh = crate::shard::shard(<cpublish::T as Config>::state(), si);
            for &p in &ps {
                // SAFETY: p was allocated by the owner with a class size above 256 KiB.
                let bin = bin_of(unsafe { usable_size::<cpublish::T>(p as *mut u8) }.unwrap_or(0).max(1));
                assert!(!sh.inbox.is_empty(bin), "the free of a block of bin {bin} was not published");
            }
        })
        .join()
        .unwrap();
        done_tx.send(()).unwrap();
        owner.join().unwrap();
    }

    /// Short runs are not carved beside a long one (and long ones not beside
    /// short ones): the segment of a freed 640 KiB block is then free whole,
    /// for the next long run or for the arena, instead of being held by the
    /// small blocks allocated after it.
    #[test]
    fn long_and_short_runs_take_separate_segments() {
        test_config!(csep, true, false, Ptag::Late, false, 4);
        std::thread::spawn(|| {
            // SAFETY: align 16 is a power of two.
            let long = unsafe { alloc::<csep::T>(640 << 10, 16) } as usize;
            assert!(long != 0);
            let seg = crate::segment::seg_base(long);
            let small: Vec<usize> = (0..200)
                // SAFETY: align 16 is a power of two.
                .map(|i| unsafe { alloc::<csep::T>(16 + (i % 64) * 64, 16) } as usize)
                .collect();
            // SAFETY: align 16 is a power of two.
            let medium = unsafe { alloc::<csep::T>(64 << 10, 16) } as usize;
            // SAFETY: align 16 is a power of two.
            let other = unsafe { alloc::<csep::T>(320 << 10, 16) } as usize;
            for &p in small.iter().chain([&medium]) {
                assert!(p != 0);
                assert_ne!(crate::segment::seg_base(p), seg, "a short run was carved beside the 640 KiB one");
            }
            assert_eq!(crate::segment::seg_base(other), seg, "the 320 KiB run did not go beside the 640 KiB one");
            for p in small.into_iter().chain([medium, other, long]) {
                // SAFETY: each p is live.
                unsafe { free::<csep::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
    }

    /// Long runs (here 640 KiB, each in its own segment, which a live 320 KiB
    /// block keeps with the shard) freed while the shard already keeps its
    /// bound of dirty pages for them are purged at once: of 24 freed, at most
    /// that bound, one run more and the thread cache's budget stay resident
    /// (all 24 stayed until the delayed purge).
    #[test]
    fn long_runs_freed_beyond_the_threshold_are_purged() {
        std::thread::spawn(|| {
            let size = 640 << 10;
            let mut long = Vec::new();
            let mut keep = Vec::new();
            for i in 0..24 {
                // SAFETY: align 16 is a power of two.
                let p = unsafe { alloc::<clong::T>(size, 16) };
                assert!(!p.is_null());
                // SAFETY: the block has `size` bytes.
                unsafe { p.write_bytes(i as u8 + 1, size) };
                long.push(p as usize);
                // SAFETY: align 16 is a power of two.
                let k = unsafe { alloc::<clong::T>(320 << 10, 16) } as usize;
                assert_eq!(crate::segment::seg_base(k), crate::segment::seg_base(p as usize), "the 320 KiB run is not beside the 640 KiB one");
                keep.push(k);
            }
            let segs: std::collections::HashSet<usize> = long.iter().map(|&p| crate::segment::seg_base(p)).collect();
            assert_eq!(segs.len(), 24, "640 KiB runs share segments");
            for &p in &long {
                // SAFETY: p is a live block.
                unsafe { free::<clong::T>(p as *mut u8) };
            }
            let pages = size / crate::os::PAGE_SIZE;
            let mut resident = 0;
            let mut vec = std::vec![0u8; pages];
            for &p in &long {
                // SAFETY: `vec` has one byte per page of the range, which lies
                // in segments the shard still holds (mapped).
                assert_eq!(unsafe { libc::mincore(p as *mut libc::c_void, size, vec.as_mut_ptr()) }, 0);
                resident += vec.iter().filter(|&&v| v & 1 != 0).count();
            }
            let bound = LONG_RUN_PURGE_PAGES as usize + pages + CACHE_BUDGET_BYTES / crate::os::PAGE_SIZE;
            assert!(resident <= bound, "{resident} pages of 24 freed 640 KiB blocks resident (bound {bound})");
            for p in keep {
                // SAFETY: p is a live block.
                unsafe { free::<clong::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
    }
}

mod cliffs {
    use super::*;
    use crate::shard::walks;
    test_config!(cbulk, true, false, Ptag::Late, false, 4);

    /// Allocate `n` blocks of `size` on this thread, have another thread free
    /// them all (remote frees), then allocate `n` again here; returns the link
    /// steps the second round took and how many of its blocks were reused.
    fn remote_bulk_round(n: usize, size: usize) -> (u64, usize) {
        // SAFETY: align 16 is a power of two.
        let first: Vec<usize> = (0..n).map(|_| unsafe { alloc::<cbulk::T>(size, 16) } as usize).collect();
        assert!(first.iter().all(|&p| p != 0));
        let to_free = first.clone();
        std::thread::spawn(move || {
            for p in to_free {
                // SAFETY: each p is live; the allocating thread is alive (so it
                // holds its shard and these frees are remote).
                unsafe { free::<cbulk::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        let before = walks::get();
        // SAFETY: align 16 is a power of two.
        let second: Vec<usize> = (0..n).map(|_| unsafe { alloc::<cbulk::T>(size, 16) } as usize).collect();
        let steps = walks::get() - before;
        let old: std::collections::HashSet<usize> = first.into_iter().collect();
        let reused = second.iter().filter(|p| old.contains(p)).count();
        for p in second {
            // SAFETY: each p is live.
            unsafe { free::<cbulk::T>(p as *mut u8) };
        }
        (steps, reused)
    }

    /// Free all of `n` blocks of `size` just allocated here, in allocation
    /// order or shuffled; returns the link steps and run splices the frees
    /// took, the blocks their flushes gave back and the flushes.
    fn free_live_set(n: usize, size: usize, shuffled: bool) -> (u64, u64, u64, u64) {
        let bin = size / 16 - 1;
        // SAFETY: align 16 is a power of two.
        let mut ps: Vec<usize> = (0..n).map(|_| unsafe { alloc::<cbulk::T>(size, 16) } as usize).collect();
        assert!(ps.iter().all(|&p| p != 0));
        if shuffled {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ps.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        let tc = crate::thread::cache::<cbulk::T>();
        // SAFETY: `tc` is this thread's live cache (it just allocated); the
        // count is read between operations of this thread.
        let cached = || unsafe { (*tc).cached(bin) } as u64;
        let (steps0, splices0, cached0) = (walks::get(), walks::splices(), cached());
        let flushes0 = stats::<cbulk::T>().flushes;
        for &p in &ps {
            // SAFETY: each p is live.
            unsafe { free::<cbulk::T>(p as *mut u8) };
        }
        let given = n as u64 - (cached() - cached0);
        (walks::get() - steps0, walks::splices() - splices0, given, stats::<cbulk::T>().flushes - flushes0)
    }

    /// Freeing a live set far larger than a bin: each flush reads only the
    /// blocks it gives back (one link step each; cutting them off the bin
    /// first walked its whole list), and blocks freed in allocation order go
    /// back to their runs a stretch at a time (one descriptor update per run
    /// a flush reaches, not one per block).
    #[test]
    fn flushes_read_each_given_block_once_and_splice_runs_whole() {
        std::thread::spawn(|| {
            for size in [32, 96] {
                let n = 40_000;
                let per_run = crate::size_class::BINS[size / 16 - 1].blocks as u64;
                for shuffled in [false, true] {
                    let (steps, splices, given, flushes) = free_live_set(n, size, shuffled);
                    assert!(given >= n as u64 / 2, "size {size}: only {given} of {n} blocks flushed");
                    assert_eq!(steps, given, "size {size} shuffled {shuffled}: {steps} link steps for {given} flushed blocks");
                    if !shuffled {
                        // A flush may cut a stretch at both of its ends.
                        let bound = given / per_run + 2 * flushes + 2;
                        assert!(splices <= bound, "size {size}: {splices} splices for {given} blocks ({flushes} flushes, runs of {per_run})");
                    } else {
                        assert!(splices * 2 >= given, "size {size}: shuffled frees rarely share a run ({splices} splices)");
                    }
                }
            }
        })
        .join()
        .unwrap();
    }

    /// Blocks of a one-block-run class (4 KiB and 64 KiB) freed in bulk by
    /// another thread come back to their owner at a bounded number of link
    /// steps each: the refill used to walk the whole rest of the inbox chain
    /// on every refill (quadratic in the chain's length).
    #[test]
    fn bulk_remote_frees_refill_in_bounded_steps_per_block() {
        std::thread::spawn(|| {
            for (n, size) in [(20_000, 4096), (4_000, 64 << 10)] {
                let (steps, reused) = remote_bulk_round(n, size);
                assert!(reused * 10 >= n * 9, "size {size}: only {reused} of {n} blocks came back from the inbox");
                assert!(steps <= 3 * n as u64, "size {size}: {steps} link steps for {n} blocks");
            }
        })
        .join()
        .unwrap();
    }
}

mod remote_return {
    use super::*;
    use crate::arena::{SLOT_HEAD, SLOT_TAIL};
    use crate::remote::INBOX_AGE_MS;
    use crate::size_class::bin_of;
    test_config!(cret, true, false, Ptag::Late, false, 4);
    test_config!(cbeat, true, false, Ptag::Late, false, 4);

    fn held_slots<C: Config>() -> usize {
        let st = C::state();
        (0..st.arena.slot_count()).filter(|&i| matches!(st.arena.slot_state_checked(i), SLOT_HEAD | SLOT_TAIL)).count()
    }

    /// 2,000 blocks of 200 KiB made by a thread that then only waits, freed
    /// by another thread: once they have sat in the owner's inbox for the
    /// delay, a third thread's allocations give them to the central, whose
    /// runs and segments go back to the arena (they used to stay until the
    /// owner allocated 200 KiB blocks again).
    #[test]
    fn inbox_of_an_idle_owner_comes_back() {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<usize>>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let ps: Vec<usize> = (0..2000)
                .map(|i| {
                    // SAFETY: align 16 is a power of two.
                    let p = unsafe { alloc::<cret::T>(200 << 10, 16) };
                    assert!(!p.is_null());
                    // SAFETY: the block has 200 KiB.
                    unsafe { p.write_bytes(i as u8, 200 << 10) };
                    p as usize
                })
                .collect();
            tx.send(ps).unwrap();
            done_rx.recv().unwrap();
        });
        let ps = rx.recv().unwrap();
        std::thread::spawn(move || {
            for p in ps {
                // SAFETY: each p is live; its owner thread is alive and idle.
                unsafe { free::<cret::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        let held = held_slots::<cret::T>();
        assert!(held >= 2000 * 200 / 1024, "held {held}");
        std::thread::sleep(std::time::Duration::from_millis(INBOX_AGE_MS * 2 + 20));
        std::thread::spawn(|| {
            for _ in 0..10 {
                let ps: Vec<usize> = (0..1000)
                    // SAFETY: align 16 is a power of two.
                    .map(|i| unsafe { alloc::<cret::T>(16 + i % 1000, 16) } as usize)
                    .collect();
                for p in ps {
                    // SAFETY: each p is live.
                    unsafe { free::<cret::T>(p as *mut u8) };
                }
            }
        })
        .join()
        .unwrap();
        let after = held_slots::<cret::T>();
        assert!(after * 10 < held, "{after} of {held} slots still held after the inbox aged");
        done_tx.send(()).unwrap();
        owner.join().unwrap();
    }

    /// Blocks other threads freed for a class the owner no longer allocates
    /// — in its stash and in its inbox, too few to be "long" — go back to
    /// the central at the owner's heartbeat while it allocates other classes.
    #[test]
    fn heartbeat_returns_what_an_unused_class_holds() {
        std::thread::spawn(|| {
            let bin = bin_of(4096);
            // SAFETY: align 16 is a power of two.
            let first: Vec<usize> = (0..200).map(|_| unsafe { alloc::<cbeat::T>(4096, 16) } as usize).collect();
            // SAFETY: align 16 is a power of two.
            let second: Vec<usize> = (0..100).map(|_| unsafe { alloc::<cbeat::T>(4096, 16) } as usize).collect();
            std::thread::spawn(move || {
                for p in first {
                    // SAFETY: each p is live; the owner is alive.
                    unsafe { free::<cbeat::T>(p as *mut u8) };
                }
            })
            .join()
            .unwrap();
            // Once the bin runs empty, a refill takes the inbox: most of it
            // goes to the stash.
            let tc = crate::thread::raw::<cbeat::T>();
            let mut mine = Vec::new();
            // SAFETY: `tc` is this thread's live cache.
            while unsafe { (*tc).stash[bin] }.is_null() && mine.len() < 100 {
                // SAFETY: align 16 is a power of two.
                mine.push(unsafe { alloc::<cbeat::T>(4096, 16) } as usize);
            }
            // SAFETY: `tc` is this thread's live cache.
            assert!(!unsafe { (*tc).stash[bin] }.is_null(), "the refill stashed the rest of the inbox chain");
            std::thread::spawn(move || {
                for p in second {
                    // SAFETY: each p is live; the owner is alive.
                    unsafe { free::<cbeat::T>(p as *mut u8) };
                }
            })
            .join()
            .unwrap();
            let st = <cbeat::T as Config>::state();
            // SAFETY: `tc` is this thread's live cache.
            let sh = crate::shard::shard(st, unsafe { (*tc).shard } as usize);
            assert!(!sh.inbox.is_empty(bin));
            // Other classes only (live small blocks of every small class, so
            // their bins keep refilling), for two heartbeats and more.
            let mut others = Vec::new();
            let refills = |t: *mut crate::tcache::ThreadCache| {
                // SAFETY: `t` is this thread's live cache.
                unsafe { (*t).ctr.of(crate::stats::Ctr::Refills).load(core::sync::atomic::Ordering::Relaxed) }
            };
            let start = refills(tc);
            while refills(tc) - start < 3 * crate::tcache::HEARTBEAT_REFILLS as u64 {
                for k in 1..=128 {
                    // SAFETY: align 16 is a power of two.
                    others.push(unsafe { alloc::<cbeat::T>(16 * k, 16) } as usize);
                }
            }
            for p in others {
                // SAFETY: each p is live.
                unsafe { free::<cbeat::T>(p as *mut u8) };
            }
            // SAFETY: `tc` is this thread's live cache.
            assert!(unsafe { (*tc).stash[bin] }.is_null(), "the stash of an unused class was given back");
            assert!(sh.inbox.is_empty(bin), "the inbox of an unused class was given back");
            for p in mine {
                // SAFETY: each p is live.
                unsafe { free::<cbeat::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
    }
}

mod zeroed {
    use super::*;
    use crate::api::{alloc_zeroed, zeroing};
    use crate::arena::PURGE_DELAY_MS;
    test_config!(czero, true, false, Ptag::Late, false, 4);

    /// Pages a shard purged read as zero: after blocks were written, freed
    /// and their pages purged (one block per segment stays live, so the
    /// segments stay with the shard), zeroed allocations of the same class
    /// are served from them without clearing a byte — and read zero. Fresh
    /// memory is not cleared either; a block reused from the cache is.
    #[test]
    fn purged_pages_serve_zeroed_allocations_unwritten() {
        std::thread::spawn(|| {
            let size = 64 << 10;
            // Fresh memory: nothing cleared.
            let before = zeroing::get();
            // SAFETY: align 16 is a power of two.
            let fresh: Vec<usize> = (0..200).map(|_| unsafe { alloc_zeroed::<czero::T>(size, 16) } as usize).collect();
            assert_eq!(zeroing::get() - before, 0, "fresh zeroed blocks were cleared");
            for &p in &fresh {
                // SAFETY: each p is a live block of `size` bytes.
                unsafe { (p as *mut u8).write_bytes(0x77, size) };
            }
            // Keep one block per segment live; free the rest (written: dirty).
            let (keep, rest): (Vec<usize>, Vec<usize>) = fresh.iter().partition(|&&p| p % (1 << 20) < (128 << 10));
            assert!(!keep.is_empty());
            let old: std::collections::HashSet<usize> = rest.iter().copied().collect();
            for p in rest {
                // SAFETY: p is live.
                unsafe { free::<czero::T>(p as *mut u8) };
            }
            // A block reused from the thread cache is cleared.
            let before = zeroing::get();
            // SAFETY: align 16 is a power of two.
            let again = unsafe { alloc_zeroed::<czero::T>(size, 16) };
            assert_eq!(zeroing::get() - before, size as u64, "a reused block was not cleared");
            // SAFETY: `again` has `size` readable bytes.
            assert!(unsafe { core::slice::from_raw_parts(again, size) }.iter().all(|&b| b == 0));
            // SAFETY: live block.
            unsafe { free::<czero::T>(again) };
            // After the purge delay, more traffic in the class makes the
            // cache flush and a run be released, which purges half of the
            // shard's dirty pages (they then read as zero); four rounds leave
            // the kept floor (half the purge threshold) at most.
            for _ in 0..4 {
                std::thread::sleep(std::time::Duration::from_millis(PURGE_DELAY_MS * 2 + 20));
                // SAFETY: align 16 is a power of two.
                let churn: Vec<usize> = (0..64).map(|_| unsafe { alloc::<czero::T>(size, 16) } as usize).collect();
                for p in churn {
                    // SAFETY: p is live.
                    unsafe { (p as *mut u8).write_bytes(1, 64) };
                    // SAFETY: p is live.
                    unsafe { free::<czero::T>(p as *mut u8) };
                }
            }
            // Whatever is zeroed now without a clear must read zero.
            let before = zeroing::get();
            // SAFETY: align 16 is a power of two.
            let zs: Vec<usize> = (0..150).map(|_| unsafe { alloc_zeroed::<czero::T>(size, 16) } as usize).collect();
            let cleared = zeroing::get() - before;
            for &p in &zs {
                // SAFETY: p has `size` readable bytes.
                let b = unsafe { core::slice::from_raw_parts(p as *const u8, size) };
                assert!(b.iter().all(|&x| x == 0), "zeroed block {p:#x} not zero");
            }
            // Most came unwritten from the purged pages of the freed blocks
            // (the cache holds a few, which are cleared).
            let reused = zs.iter().filter(|p| old.contains(p)).count();
            assert!(reused >= 100, "only {reused} of 150 zeroed blocks reuse the freed pages");
            assert!(cleared < 150 * size as u64 / 2, "{} of 150 zeroed blocks were cleared", cleared / size as u64);
            for p in zs.into_iter().chain(keep) {
                // SAFETY: p is live.
                unsafe { free::<czero::T>(p as *mut u8) };
            }
        })
        .join()
        .unwrap();
    }
}
