//! Cliffs: shapes of real programs whose cost must stay proportional to what
//! they do, checked with bounds that do not depend on the machine's speed.
//!
//! - `calloc_of_fresh_memory_stays_untouched` (one child process per size):
//!   1 GiB worth of `calloc(1, n)` for n = 200000, 70000 and 4096 (256 MiB
//!   for n = 64), never touched: the peak resident size (`VmHWM`) grows by
//!   less than a tenth of the bytes (zeroed memory fresh from the OS is not
//!   written).
//! - `calloc_after_dirty_frees_is_zero`: blocks of every kind (small, medium,
//!   large) filled with a pattern and freed, then allocated zeroed: every byte
//!   reads zero, in the allocating thread and in another one.

mod reliability_support;

use reliability_support::*;
use std::alloc::{GlobalAlloc, Layout};

hz3::hz3_allocator! {
    pub struct Zeroed<stats: true>;
}
impl_hz!(Zeroed);

/// `VmHWM` (peak resident bytes) of this process.
fn peak_rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * KIB
}

fn calloc_untouched(size: usize, total: usize) {
    let a = Zeroed::new();
    let layout = Layout::from_size_align(size, 8).unwrap();
    let before = peak_rss();
    let mut n = 0;
    while n * size < total {
        // SAFETY: the layout has a non-zero size; the block is leaked (the
        // child exits right after).
        let p = unsafe { a.alloc_zeroed(layout) };
        assert!(!p.is_null());
        n += 1;
    }
    println!();
    report("grown", peak_rss().saturating_sub(before));
    report("bytes", n * size);
}

#[test]
fn calloc_of_fresh_memory_stays_untouched() {
    if let Some(s) = child_scenario() {
        let size: usize = s.parse().unwrap();
        let total = if size < 4096 { 256 * MIB } else { 1 << 30 };
        calloc_untouched(size, total);
        return;
    }
    for size in [200_000usize, 70_000, 4096, 64] {
        let out = run_child("calloc_of_fresh_memory_stays_untouched", &size.to_string(), &[]);
        out.assert_ok("calloc child");
        let grown = out.num("grown") as usize;
        let bytes = out.num("bytes") as usize;
        assert!(grown * 10 < bytes, "calloc({size}): peak RSS grew by {} MiB for {} MiB of untouched zeroed blocks", grown >> 20, bytes >> 20);
    }
}

#[test]
fn calloc_after_dirty_frees_is_zero() {
    fn round() {
        let a = Zeroed::new();
        let sizes = [16usize, 64, 200, 2048, 3000, 4096, 5000, 40_000, 70_000, 200_000, 262_144, 300_000, 2 << 20];
        for _ in 0..3 {
            let mut live = Vec::new();
            for (i, &size) in sizes.iter().cycle().take(sizes.len() * 40).enumerate() {
                let l = Layout::from_size_align(size, if i % 5 == 0 { 64 } else { 8 }).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                // SAFETY: p has `size` writable bytes.
                unsafe { p.write_bytes(0xA5, size) };
                live.push((p, l));
            }
            for (p, l) in live.drain(..) {
                // SAFETY: allocated above with `l`.
                unsafe { a.dealloc(p, l) };
            }
            for (i, &size) in sizes.iter().cycle().take(sizes.len() * 40).enumerate() {
                let l = Layout::from_size_align(size, if i % 5 == 0 { 64 } else { 8 }).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc_zeroed(l) };
                assert!(!p.is_null());
                // SAFETY: p has `size` readable bytes.
                let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                if let Some(off) = bytes.iter().position(|&b| b != 0) {
                    panic!("calloc({size}) block {p:?}: byte {off} is {:#x}", bytes[off]);
                }
                // Dirty it for the next round.
                // SAFETY: as above.
                unsafe { p.write_bytes(0x5A, size) };
                live.push((p, l));
            }
            for (p, l) in live {
                // SAFETY: allocated above with `l`.
                unsafe { a.dealloc(p, l) };
            }
        }
    }
    round();
    std::thread::spawn(round).join().unwrap();
}

hz3::hz3_allocator! {
    pub struct Full<arena_gib: 1, stats: true>;
}
impl_hz!(Full);

/// Resident bytes now (`VmRSS`).
fn rss_now() -> usize {
    rss()
}

/// Large blocks fill a 1 GiB arena (the rest go to direct mappings); small
/// allocations made afterwards still come from their size class (usable size
/// 32, not a page-rounded direct mapping) at about their own size in
/// resident memory, not a page each. The arena used to hand its last slot to
/// a large block, and every small allocation then scanned the whole slot
/// table and mapped a page of its own.
#[test]
fn full_arena_keeps_small_blocks_in_size_classes() {
    std::thread::spawn(|| {
        let a = Full::new();
        let big = Layout::from_size_align(300 << 10, 8).unwrap();
        // One and a half arenas' worth in untouched 300 KiB blocks (one slot each).
        let bigs: Vec<usize> = (0..1536)
            .map(|_| {
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(big) };
                assert!(!p.is_null());
                p as usize
            })
            .collect();
        let small = Layout::from_size_align(32, 8).unwrap();
        const N: usize = 100_000;
        let before = rss_now();
        let mut smalls = Vec::with_capacity(N);
        let mut outside = 0;
        for _ in 0..N {
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(small) };
            assert!(!p.is_null());
            // SAFETY: p is a live block of this type.
            if unsafe { Full::usable_size(p) } != Some(32) {
                outside += 1;
            }
            smalls.push(p);
        }
        let grown = rss_now().saturating_sub(before);
        assert_eq!(outside, 0, "{outside} of {N} small blocks were not served from their size class");
        assert!(grown < 4 * N * 32 + (8 << 20), "{N} small blocks grew RSS by {} KiB", grown >> 10);
        for p in smalls {
            // SAFETY: allocated above with `small`.
            unsafe { a.dealloc(p, small) };
        }
        for p in bigs {
            // SAFETY: allocated above with `big`.
            unsafe { a.dealloc(p as *mut u8, big) };
        }
    })
    .join()
    .unwrap();
}

hz3::hz3_allocator! {
    pub struct Aligned<arena_gib: 4, stats: true>;
}
impl_hz!(Aligned);

/// 100,000 live 8 KiB-aligned 4 KiB blocks (and 20,000 at 16 to 64 KiB)
/// come from page runs of whole-page classes: each uses its own size in
/// address space (usable size = its class, not most of a 1 MiB segment; the
/// blocks packed densely), and small allocations made afterwards are still
/// size-class blocks. Every alignment above a page used
/// to take a whole segment, so 100,000 of them filled a 64 GiB arena.
#[test]
fn aligned_blocks_come_from_page_runs() {
    std::thread::spawn(|| {
        let a = Aligned::new();
        let mut live = Vec::new();
        let mut bytes = 0;
        for i in 0..120_000usize {
            let (size, align) = if i < 100_000 { (4096, 8192) } else { (5000 + i % 50_000, (16 << 10) << (i % 3)) };
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % l.align(), 0, "block of {size} at {p:?} not aligned to {}", l.align());
            // SAFETY: p is a live block of this type.
            let usable = unsafe { Aligned::usable_size(p) }.unwrap();
            assert!(usable >= size && usable <= (size.div_ceil(l.align()) * l.align()) * 5 / 4 + (16 << 10), "block of {size} aligned {}: usable {usable}", l.align());
            bytes += usable;
            live.push((p, l));
        }
        // Address space grows with the bytes held: the 100,000 8 KiB blocks
        // lie within about twice their bytes of each other (a segment each
        // would spread them over 100,000 MiB).
        let (lo, hi) = live[..100_000].iter().fold((usize::MAX, 0), |(lo, hi), &(p, _)| (lo.min(p as usize), hi.max(p as usize)));
        assert!(hi - lo < 2 * 100_000 * 8192 + (64 << 20), "8 KiB-aligned blocks spread over {} MiB", (hi - lo) >> 20);
        assert!(bytes < 2 << 30);
        for _ in 0..10_000 {
            let l = Layout::from_size_align(32, 8).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            // SAFETY: p is a live block of this type.
            assert_eq!(unsafe { Aligned::usable_size(p) }, Some(32));
            live.push((p, l));
        }
        for (p, l) in live {
            // SAFETY: allocated above with `l`.
            unsafe { a.dealloc(p, l) };
        }
    })
    .join()
    .unwrap();
}
