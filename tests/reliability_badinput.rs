//! Reliability: bad input.
//!
//! With `failfast: true`, each kind of bad free aborts the process with one line
//! `hz3 failfast [Type]: free(0x...): <what>`. Each scenario runs in a child
//! process (this binary re-executed on the one test with `HZ3_REL_CHILD` set);
//! the parent checks the child died of SIGABRT and that its stderr names the
//! type, the pointer in hex and a word of the check. Scenarios (x 3 flag sets:
//! default routes, `free_fast` + `ptag: first`, `ptag: off` header route):
//! double free (local, remote, large), interior pointer (small, medium, large),
//! an in-arena pointer never handed out (a never-carved block of a live run, a
//! free page of a live segment, a never-committed arena slot), and a misaligned
//! pointer (small, medium).
//!
//! Without failfast, freeing pointers from outside the arena (a `libc::malloc`
//! block, a stack buffer) through `dealloc` must neither crash, nor touch the
//! foreign memory, nor disturb the type (a patterned workload runs afterwards);
//! for types that route frees, in-arena pointers that are no block are ignored
//! and counted as invalid.
//!
//! Size: ~30 short child processes plus 4 x 3,000-operation workloads; a few
//! seconds. `HZ3_STRESS_SCALE` multiplies the workload after the foreign frees.

mod reliability_support;

use reliability_support::*;
use std::alloc::{GlobalAlloc, Layout};

hz3::hz3_allocator! {
    pub struct Ff<failfast: true, stats: true>;
    pub struct FfFirst<s110_meta: true, free_fast: true, ptag: first, failfast: true>;
    pub struct FfOff<s110_meta: false, ptag: off, failfast: true>;
    pub struct Plain;
    pub struct PlainFast<s110_meta: true, free_fast: true, ptag: late>;
    pub struct PlainOff<s110_meta: false, ptag: off>;
    pub struct PlainFirst<s110_meta: false, ptag: first, stats: true>;
    pub struct InArenaFirst<s110_meta: false, ptag: first, stats: true>;
    pub struct InArenaDefault<stats: true>;
    pub struct InArenaS110<stats: true>;
}
impl_hz!(Ff, FfFirst, FfOff, Plain, PlainFast, PlainOff, PlainFirst, InArenaFirst, InArenaDefault, InArenaS110);

const SEG: usize = 1 << 20;
const PAGE: usize = 4096;

/// Parent: run `test` in a child and check the abort (`hz3 failfast [Type]: ...(ptr)...`).
/// Child: run `bad`, which announces the pointer it misuses and misuses it; returning means
/// the engine did not abort.
fn expect_abort<A: Hz>(test: &str, words: &[&str], bad: impl FnOnce(A)) {
    let prefix = format!("hz3 failfast [{}]: ", A::TYPE_NAME);
    let (line, ptr) = expect_abort_line(test, &[prefix.as_str()], words, || bad(A::default()));
    assert!(line.contains(&format!("({ptr})")), "{test}: line does not name {ptr}: {line}");
    println!("{test}: {line}");
}

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

unsafe fn alloc_or_die<A: Hz>(a: &A, size: usize) -> *mut u8 {
    let p = a.alloc(lay(size));
    assert!(!p.is_null());
    p
}

macro_rules! failfast_suite {
    ($m:ident, $t:ident) => {
        mod $m {
            use super::*;

            fn name(f: &str) -> String {
                format!("{}::{f}", stringify!($m))
            }

            #[test]
            fn double_free_small() {
                expect_abort::<$t>(&name("double_free_small"), &["double free"], |a| unsafe {
                    let _keep = alloc_or_die(&a, 64);
                    let p = alloc_or_die(&a, 64);
                    a.dealloc(p, lay(64));
                    announce(p as usize);
                    a.dealloc(p, lay(64));
                });
            }

            #[test]
            fn double_free_after_remote_free() {
                expect_abort::<$t>(&name("double_free_after_remote_free"), &["double free"], |a| unsafe {
                    let _keep = alloc_or_die(&a, 256);
                    let p = alloc_or_die(&a, 256) as usize;
                    std::thread::spawn(move || a.dealloc(p as *mut u8, lay(256))).join().unwrap();
                    announce(p);
                    a.dealloc(p as *mut u8, lay(256));
                });
            }

            #[test]
            fn double_free_large() {
                // Second free: the slot is no longer a live segment / large block.
                expect_abort::<$t>(&name("double_free_large"), &["large", "live segment", "double"], |a| unsafe {
                    let _keep = alloc_or_die(&a, 300 * KIB);
                    let p = alloc_or_die(&a, 300 * KIB);
                    a.dealloc(p, lay(300 * KIB));
                    announce(p as usize);
                    a.dealloc(p, lay(300 * KIB));
                });
            }

            #[test]
            fn interior_pointer_small() {
                expect_abort::<$t>(&name("interior_pointer_small"), &["interior"], |a| unsafe {
                    let p = alloc_or_die(&a, 64);
                    announce(p as usize + 16);
                    a.dealloc(p.add(16), lay(64));
                });
            }

            #[test]
            fn interior_pointer_medium() {
                // A page inside a 16 KiB block: no block starts there.
                expect_abort::<$t>(&name("interior_pointer_medium"), &["interior", "not a block"], |a| unsafe {
                    let p = alloc_or_die(&a, 16 * KIB);
                    announce(p as usize + 4096);
                    a.dealloc(p.add(4096), lay(16 * KIB));
                });
            }

            #[test]
            fn interior_pointer_large() {
                // Large means above the biggest size class (1016 KiB).
                expect_abort::<$t>(&name("interior_pointer_large"), &["large"], |a| unsafe {
                    let p = alloc_or_die(&a, 1200 * KIB);
                    announce(p as usize + 64);
                    a.dealloc(p.add(64), lay(1200 * KIB));
                });
            }

            #[test]
            fn never_allocated_block_of_live_run() {
                // Block 60 of a 48-byte run whose first refill carved 32 blocks.
                expect_abort::<$t>(&name("never_allocated_block_of_live_run"), &["never allocated"], |a| unsafe {
                    let p = alloc_or_die(&a, 48) as usize;
                    let q = (p & !(PAGE - 1)) + 60 * 48;
                    announce(q);
                    a.dealloc(q as *mut u8, lay(48));
                });
            }

            #[test]
            fn never_allocated_free_page_of_live_segment() {
                expect_abort::<$t>(
                    &name("never_allocated_free_page_of_live_segment"),
                    &["not a block"],
                    |a| unsafe {
                        let p = alloc_or_die(&a, 32) as usize;
                        let q = (p & !(SEG - 1)) + 200 * PAGE;
                        announce(q);
                        a.dealloc(q as *mut u8, lay(32));
                    },
                );
            }

            #[test]
            fn never_allocated_uncommitted_arena_slot() {
                expect_abort::<$t>(
                    &name("never_allocated_uncommitted_arena_slot"),
                    &["live segment"],
                    |a| unsafe {
                        let p = alloc_or_die(&a, 32) as usize;
                        let q = (p & !(SEG - 1)) + 512 * SEG + 64;
                        announce(q);
                        a.dealloc(q as *mut u8, lay(32));
                    },
                );
            }

            #[test]
            fn misaligned_pointer_small() {
                expect_abort::<$t>(&name("misaligned_pointer_small"), &["misaligned"], |a| unsafe {
                    let p = alloc_or_die(&a, 64);
                    announce(p as usize + 8);
                    a.dealloc(p.add(8), lay(64));
                });
            }

            #[test]
            fn misaligned_pointer_medium() {
                expect_abort::<$t>(&name("misaligned_pointer_medium"), &["misaligned"], |a| unsafe {
                    let p = alloc_or_die(&a, 8 * KIB);
                    announce(p as usize + 3);
                    a.dealloc(p.add(3), lay(8 * KIB));
                });
            }
        }
    };
}

failfast_suite!(ff_default, Ff);
failfast_suite!(ff_first, FfFirst);
failfast_suite!(ff_header, FfOff);

// ---------------------------------------------------------------------------
// Without failfast: foreign pointers are ignored
// ---------------------------------------------------------------------------

/// A patterned random workload of `n` operations (mixed sizes, some aligned,
/// some freed by another thread).
fn workload<A: Hz>(n: usize, seed: u64) {
    let a = A::default();
    let mut rng = Rng::new(seed);
    let mut live: Vec<Blk> = Vec::new();
    for k in 0..n {
        if !live.is_empty() && rng.pct(45) {
            let i = rng.below(live.len());
            live.swap_remove(i).free(&a, A::TYPE_NAME);
        } else {
            let align = if rng.pct(10) { 1 << rng.range(5, 13) } else { 8 };
            live.push(Blk::new(&a, mixed_size(&mut rng), align, k as u64));
        }
    }
    let half = live.split_off(live.len() / 2);
    std::thread::spawn(move || {
        for b in half {
            b.free(&A::default(), "workload: remote");
        }
    })
    .join()
    .unwrap();
    for b in live {
        b.free(&a, A::TYPE_NAME);
    }
}

fn foreign_frees_are_ignored<A: Hz>() {
    let a = A::default();
    let n = 3000 * scale();
    workload::<A>(n, 1); // the type is initialised and has live segments
    let keep: Vec<Blk> = (0..64).map(|k| Blk::new(&a, 16 + 50 * k, 8, k as u64)).collect();
    for (size, what) in [(100usize, "malloc small"), (10 * KIB, "malloc medium"), (MIB, "malloc large")] {
        unsafe {
            let m = libc::malloc(size) as *mut u8;
            assert!(!m.is_null());
            fill(m, size, 42);
            assert_eq!(A::usable(m), None, "{}: usable_size of a {what} pointer", A::TYPE_NAME);
            a.dealloc(m, lay(size));
            a.dealloc(m.add(16), lay(16));
            assert_eq!(check(m, size, 42), None, "{}: {what} block touched by dealloc", A::TYPE_NAME);
            libc::free(m as *mut _);
        }
        workload::<A>(n / 3, size as u64);
    }
    let mut stack = [0u8; 512];
    unsafe {
        let s = stack.as_mut_ptr();
        fill(s, 512, 7);
        assert_eq!(A::usable(s), None);
        a.dealloc(s, lay(64));
        a.dealloc(s.add(64), lay(256));
        assert_eq!(check(s, 512, 7), None, "{}: stack buffer touched by dealloc", A::TYPE_NAME);
    }
    std::hint::black_box(&mut stack);
    for b in keep {
        b.free(&a, "blocks live across the foreign frees");
    }
    workload::<A>(n, 2);
}

#[test]
fn foreign_frees_default() {
    foreign_frees_are_ignored::<Plain>();
}

#[test]
fn foreign_frees_free_fast() {
    foreign_frees_are_ignored::<PlainFast>();
}

#[test]
fn foreign_frees_header_route() {
    foreign_frees_are_ignored::<PlainOff>();
}

#[test]
fn foreign_frees_ptag_first() {
    foreign_frees_are_ignored::<PlainFirst>();
}

/// Types that route frees (not the `ptag: off` sized-free path, which trusts the
/// layout) ignore in-arena pointers that are no block, and count them. (Own
/// types: no other test may have runs on the pages used here.)
fn in_arena_non_blocks<A: Hz>(uncommitted_slot: bool) {
    let a = A::default();
    let before = A::snapshot().invalid_frees;
    let keep = Blk::new(&a, 32, 8, 1);
    let seg = keep.p & !(SEG - 1);
    // A free page of a live segment (at a page start and inside it), and
    // optionally an arena slot that was never committed.
    let mut bad = vec![seg + 200 * PAGE, seg + 200 * PAGE + 48];
    if uncommitted_slot {
        bad.push(seg + 700 * SEG + 16);
    }
    for &q in &bad {
        unsafe { a.dealloc(q as *mut u8, lay(32)) };
    }
    let after = A::snapshot().invalid_frees;
    assert_eq!(after - before, bad.len() as u64, "{}: invalid_frees {before} -> {after}", A::TYPE_NAME);
    keep.free(&a, "in-arena");
    workload::<A>(3000 * scale(), 3);
}

#[test]
fn in_arena_non_blocks_ignored_ptag_first() {
    in_arena_non_blocks::<InArenaFirst>(true);
}

#[test]
fn in_arena_non_blocks_ignored_default() {
    in_arena_non_blocks::<InArenaDefault>(false);
}

/// Engine bug: with `s110_meta` and (`stats` or `free_fast`) but no `failfast`,
/// the S110 step of `free_route::route` reads the segment header of any in-arena
/// pointer without checking the slot is live (`live = !C::FAILFAST || ...`), so a
/// free of a pointer in a never-committed arena slot faults (SIGSEGV) instead of
/// being ignored and counted. Run in a child so a fault fails only this test.
#[test]
fn in_arena_uncommitted_slot_ignored_s110_stats() {
    if child_scenario().is_some() {
        in_arena_non_blocks::<InArenaS110>(true);
        return;
    }
    run_child("in_arena_uncommitted_slot_ignored_s110_stats", "1", &[]).assert_ok("uncommitted slot, s110 + stats");
}
