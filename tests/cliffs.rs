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
//! - `full_arena_keeps_small_blocks_in_size_classes`, `aligned_blocks_come_from_page_runs`:
//!   an arena filled by large or aligned blocks keeps small blocks in their classes.
//! - `many_300_kib_blocks_take_their_bytes_in_address_space` (child process):
//!   20,000 live 300 KiB blocks span about their own bytes (a quarter more at
//!   most) and grow the resident size by what they touch.
//! - `large_realloc_keeps_content`, `large_alignment_sweep`: content across
//!   realloc growth and shrinking, and alignments up to 1 MiB, over large sizes.
//! - `dense_growth_gets_huge_pages_sparse_does_not` (child processes): which
//!   growing heaps get the huge-page advice.
//! - `a_small_block_heap_gets_huge_pages_past_8_mib` (child process): a
//!   thread's 24 MiB of small blocks get the huge-page advice past 8 MiB.
//! - `bulk_free_then_reuse_keeps_the_pages_warm` (child process): 96 MiB
//!   freed in random order and allocated again faults in few pages again.
//! - `filled_large_blocks_get_huge_pages_past_32_mib` (child processes): large
//!   blocks from `malloc` get the huge-page advice once 32 MiB are in use,
//!   zeroed ones never.

mod reliability_support;

use reliability_support::*;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::RwLock;

hz3::hz3_allocator! {
    pub struct Zeroed<stats: true>;
}
impl_hz!(Zeroed);

/// Held for writing by the test that measures this process's resident size
/// (`full_arena_keeps_small_blocks_in_size_classes`) and for reading by every
/// other test of this file, so that no block of another test becomes resident
/// during its measurement (seen once: 20,856 KiB against a bound of 20,696,
/// with the other tests running beside it).
static RSS_QUIET: RwLock<()> = RwLock::new(());

/// Hold [`RSS_QUIET`] for reading (a panicking test poisons nothing that matters).
fn quiet_share() -> std::sync::RwLockReadGuard<'static, ()> {
    RSS_QUIET.read().unwrap_or_else(|e| e.into_inner())
}

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
    let _quiet = quiet_share();
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
    let _quiet = quiet_share();
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
    let _quiet = RSS_QUIET.write().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        let a = Full::new();
        // The smallest large block (above the 1016 KiB class): one slot each.
        let big = Layout::from_size_align(1018 << 10, 8).unwrap();
        // One and a half arenas' worth in untouched one-slot blocks.
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
    let _quiet = quiet_share();
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

hz3::hz3_allocator! {
    pub struct Dense<arena_gib: 8, stats: true>;
}
impl_hz!(Dense);

/// 20,000 live 300 KiB blocks (5.7 GiB, each written on its first page)
/// come from the 320 KiB class: three to a segment, so they span about
/// their own bytes in address space (a quarter more at most), and grow the
/// resident size by their touched page and a share of their segment's
/// header, not a slot each; small allocations made afterwards still come
/// from their class. Every block above 256 KiB used to take a whole 1 MiB
/// slot, so they filled this 8 GiB arena after about 8,000 blocks (the rest
/// were mapped one by one).
#[test]
fn many_300_kib_blocks_take_their_bytes_in_address_space() {
    let _quiet = quiet_share();
    if child_scenario().is_some() {
        let a = Dense::new();
        let l = Layout::from_size_align(300 << 10, 8).unwrap();
        const N: usize = 20_000;
        let before = rss();
        let mut live = Vec::with_capacity(N);
        let mut held = 0;
        for i in 0..N {
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: p has 300 KiB writable bytes.
            unsafe { p.write(i as u8) };
            // SAFETY: p is a live block of this type.
            let usable = unsafe { Dense::usable_size(p) }.unwrap();
            assert!(usable >= l.size() && usable * 4 <= l.size() * 5, "300 KiB block: usable {usable}");
            held += usable;
            live.push(p as usize);
        }
        let grown = rss().saturating_sub(before);
        let (lo, hi) = live.iter().fold((usize::MAX, 0), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        let span = hi - lo;
        assert!(span * 4 < held * 5 + (64 << 20), "{N} blocks of 300 KiB spread over {} MiB for {} MiB held", span >> 20, held >> 20);
        // A touched page per block and the headers of a segment per three.
        let bound = N * 4 * KIB + N.div_ceil(3) * 8 * KIB + 32 * MIB;
        assert!(grown < bound, "{N} blocks of 300 KiB, one page touched each, grew RSS by {} MiB (bound {} MiB)", grown >> 20, bound >> 20);
        let small = Layout::from_size_align(32, 8).unwrap();
        for _ in 0..10_000 {
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(small) };
            // SAFETY: p is a live block of this type.
            assert_eq!(unsafe { Dense::usable_size(p) }, Some(32), "a small block outside its class");
            // SAFETY: allocated above with `small`.
            unsafe { a.dealloc(p, small) };
        }
        for (i, p) in live.into_iter().enumerate() {
            // SAFETY: p is live, written above.
            assert_eq!(unsafe { *(p as *const u8) }, i as u8);
            // SAFETY: allocated above with `l`.
            unsafe { a.dealloc(p as *mut u8, l) };
        }
        println!();
        report("grown", grown);
        return;
    }
    run_child("many_300_kib_blocks_take_their_bytes_in_address_space", "run", &[]).assert_ok("300 KiB child");
}

/// Content survives realloc across the large sizes: growing and shrinking
/// through classes (256 KiB to 1016 KiB) and slot runs (in place or moved),
/// the bytes up to the smaller size are kept; usable sizes stay within a
/// class step (a quarter) of the request, or a slot above it (twice it and
/// a slot after a shrink that keeps the run).
#[test]
fn large_realloc_keeps_content() {
    let _quiet = quiet_share();
    std::thread::spawn(|| {
        let a = Dense::new();
        let sizes = [100_000usize, 262_145, 300_000, 700_000, 1_040_383, 1_040_385, 1_500_000, 5 << 20, 900_000, 200_000, 3 << 20, 8 << 20, 2 << 20, 1 << 20];
        let fill = |p: *mut u8, from: usize, to: usize, seed: usize| {
            for off in (from.div_ceil(509) * 509..to).step_by(509) {
                // SAFETY: off < to <= the block's size.
                unsafe { *p.add(off) = (off / 509 + seed) as u8 };
            }
        };
        for seed in 0..3 {
            let mut size = sizes[0];
            // SAFETY: non-zero size.
            let mut p = unsafe { a.alloc(Layout::from_size_align(size, 16).unwrap()) };
            assert!(!p.is_null());
            fill(p, 0, size, seed);
            for &new in &sizes[1..] {
                // SAFETY: p is a live block of `size` bytes allocated with align 16.
                let q = unsafe { a.realloc(p, Layout::from_size_align(size, 16).unwrap(), new) };
                assert!(!q.is_null());
                for off in (0..size.min(new)).step_by(509) {
                    // SAFETY: off is below the block's new size.
                    let b = unsafe { *q.add(off) };
                    assert_eq!(b, (off / 509 + seed) as u8, "realloc {size} -> {new}: byte {off}");
                }
                // SAFETY: q is a live block of this type.
                let usable = unsafe { Dense::usable_size(q) }.unwrap();
                // A large block shrunk to more than half its slots keeps them.
                assert!(usable >= new && (usable * 4 <= new * 5 || usable < 2 * new + (1 << 20)), "realloc to {new}: usable {usable}");
                if new > size {
                    fill(q, size, new, seed);
                }
                p = q;
                size = new;
            }
            // SAFETY: p is live with `size` bytes.
            unsafe { a.dealloc(p, Layout::from_size_align(size, 16).unwrap()) };
        }
    })
    .join()
    .unwrap();
}

/// Every alignment from 16 bytes to 1 MiB over large sizes (class and slot
/// run sizes, and their edges): the block is aligned, holds its size
/// (written at both ends), at most a quarter or a slot (plus the
/// alignment) more, and is freed.
#[test]
fn large_alignment_sweep() {
    let _quiet = quiet_share();
    std::thread::spawn(|| {
        let a = Dense::new();
        let mut align = 16;
        while align <= 1 << 20 {
            let mut live = Vec::new();
            for size in [256 << 10, (256 << 10) + 1, 300_000, 1_000_000, 1016 << 10, (1016 << 10) + 1, 1 << 20, 1_500_000, (4 << 20) + 3] {
                let l = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null(), "size {size} align {align}");
                assert_eq!(p as usize % align, 0, "size {size} align {align}: {p:?}");
                // SAFETY: p is a live block of this type.
                let usable = unsafe { Dense::usable_size(p) }.unwrap();
                assert!(usable >= size, "size {size} align {align}: usable {usable}");
                assert!(usable * 4 <= size * 5 || usable <= size + align + (1 << 20), "size {size} align {align}: usable {usable}");
                // SAFETY: p has `size` bytes.
                unsafe {
                    *p = 1;
                    *p.add(size - 1) = 2;
                }
                live.push((p, l));
            }
            for (p, l) in live {
                // SAFETY: p is live, written above.
                assert_eq!(unsafe { (*p, *p.add(l.size() - 1)) }, (1, 2));
                // SAFETY: allocated above with `l`.
                unsafe { a.dealloc(p, l) };
            }
            align *= 2;
        }
    })
    .join()
    .unwrap();
}

hz3::hz3_allocator! {
    pub struct Growth<arena_gib: 4, stats: true>;
}
impl_hz!(Growth);

/// The `VmFlags` of the mapping of this process that holds `addr`.
fn vm_flags_of(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-').filter(|_| !line.ends_with(':') && !line.starts_with("VmFlags")) {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                inside = lo <= addr && addr < hi;
                continue;
            }
        }
        if inside && line.starts_with("VmFlags:") {
            return line["VmFlags:".len()..].trim().to_string();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// Minor page faults of this process so far.
fn minor_faults() -> u64 {
    // SAFETY: `rusage` is plain old data (all-zero is valid) and the
    // pointer is to a live, writable one.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    ru.ru_minflt as u64
}

/// Allocate `n` blocks of layout `l` from `a`, each written once (leaked: the
/// child process exits), and return the addresses of 48 of them spread
/// evenly over the second half (every block of it when `n` < 96).
fn grow_written(a: &Growth, l: Layout, n: usize) -> Vec<usize> {
    let mut probes = Vec::new();
    for i in 0..n {
        // SAFETY: non-zero size; the blocks are leaked (contract).
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: `p` has `l.size()` writable bytes.
        unsafe { p.write_volatile(i as u8) };
        if i >= n / 2 && (i - n / 2).is_multiple_of((n / 96).max(1)) {
            probes.push(p as usize);
        }
    }
    probes
}

/// How many of the blocks at `probes` lie in mappings with the huge-page
/// advice (`hg` in their `VmFlags`).
fn advised_blocks(probes: &[usize]) -> usize {
    probes.iter().filter(|&&p| vm_flags_of(p).split_whitespace().any(|f| f == "hg")).count()
}

/// Whether the kernel backs advised memory with transparent huge pages.
/// The kernel's transparent huge page setting (absent when it has none).
const THP_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

fn thp_enabled() -> bool {
    std::fs::read_to_string(THP_SETTING)
        .map(|s| s.contains("[always]") || s.contains("[madvise]"))
        .unwrap_or(false)
}

/// A program growing over memory it touches everywhere gets huge pages; one
/// that touches its blocks in one place each does not. Child processes:
/// - `dense`: 96 MiB of 4 KiB blocks, each written: the segments taken after
///   the first 32 MiB carry the huge-page advice (`hg` in the mapping's
///   `VmFlags`), and, where the kernel has transparent huge pages on, the
///   writes fault in fewer than 3/4 of the pages one by one (before: every
///   page, one fault each, about 24,600).
/// - `sparse`: 2,000 blocks of 4 KiB aligned to 64 KiB (each in a 64 KiB
///   block, one page written): no advice, and the peak resident size grows
///   by less than a quarter of the 125 MiB they span (with the advice on
///   every segment, such blocks took six times their touched pages).
#[test]
fn dense_growth_gets_huge_pages_sparse_does_not() {
    let _quiet = quiet_share();
    if let Some(s) = child_scenario() {
        let a = Growth::new();
        let (size, align, n) = if s == "dense" { (4096usize, 8usize, 24_576usize) } else { (4096, 64 << 10, 2000) };
        let l = Layout::from_size_align(size, align).unwrap();
        let (f0, rss0) = (minor_faults(), peak_rss());
        // One block per MiB of the second half (the first 32 MiB keep 4 KiB pages).
        let probes = grow_written(&a, l, n);
        let faults = minor_faults() - f0;
        let advised = advised_blocks(&probes);
        println!();
        report("faults", faults);
        report("grown", peak_rss().saturating_sub(rss0));
        report("advised", advised);
        report("probes", probes.len());
        report("pages", n * size.div_ceil(4096));
        return;
    }
    let dense = run_child("dense_growth_gets_huge_pages_sparse_does_not", "dense", &[]);
    dense.assert_ok("dense child");
    let (faults, pages) = (dense.num("faults"), dense.num("pages"));
    let (advised, probes) = (dense.num("advised"), dense.num("probes"));
    // A kernel built without transparent huge pages refuses the advice (no
    // sysfs file then); with the setting `never` it still records it.
    if std::path::Path::new(THP_SETTING).exists() {
        assert!(advised * 4 >= probes * 3, "96 MiB of written 4 KiB blocks: {advised} of {probes} blocks of the second half in segments with the huge-page advice ({faults} faults for {pages} pages)");
    }
    if thp_enabled() {
        assert!(faults * 4 < pages * 3, "96 MiB of written 4 KiB blocks took {faults} page faults for {pages} pages");
    }
    let sparse = run_child("dense_growth_gets_huge_pages_sparse_does_not", "sparse", &[]);
    sparse.assert_ok("sparse child");
    assert_eq!(sparse.num("advised"), 0, "{} of {} 4 KiB blocks at 64 KiB alignment in segments with the huge-page advice", sparse.num("advised"), sparse.num("probes"));
    let grown = sparse.num("grown") as usize;
    assert!(grown * 4 < 2000 * (64 << 10), "2,000 blocks of 4 KiB at 64 KiB alignment grew the peak RSS by {} MiB", grown >> 20);
}

/// A program that frees most of a big heap in random order and then
/// allocates as much again reuses the pages it freed instead of having them
/// purged and faulted in again. Child process (it counts its own page faults):
/// 96 MiB of 2 KiB blocks, each written, freed in random order, then as many
/// allocated and written again: the second pass faults in fewer than an
/// eighth of its pages (before, with free pages purged at once past 64 MiB
/// held by one thread's shard: about half of them). A purge after the delay
/// ([`PURGE_DELAY_MS`]) is the design, so the bound holds when the free and the second
/// pass take less than that; a slower run reports its numbers only.
#[test]
fn bulk_free_then_reuse_keeps_the_pages_warm() {
    let _quiet = quiet_share();
    const N: usize = 48 * 1024;
    const SIZE: usize = 2048;
    if child_scenario().is_some() {
        let a = Growth::new();
        let l = Layout::from_size_align(SIZE, 16).unwrap();
        let fill = |i: usize| {
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: `p` has `SIZE` writable bytes.
            unsafe { p.write_bytes(i as u8, SIZE) };
            p
        };
        let mut blocks: Vec<*mut u8> = (0..N).map(fill).collect();
        let mut rng = Rng::new(5);
        for i in (1..N).rev() {
            blocks.swap(i, rng.below(i + 1));
        }
        let (f0, t0) = (minor_faults(), std::time::Instant::now());
        for &p in &blocks {
            // SAFETY: a live block of `a` with this layout, freed once.
            unsafe { a.dealloc(p, l) };
        }
        for (i, b) in blocks.iter_mut().enumerate() {
            *b = fill(i);
        }
        let (faults, ms) = (minor_faults() - f0, t0.elapsed().as_millis());
        println!();
        report("faults", faults);
        report("pages", N * SIZE / 4096);
        report("ms", ms);
        return;
    }
    let out = run_child("bulk_free_then_reuse_keeps_the_pages_warm", "run", &[]);
    out.assert_ok("child");
    let (faults, pages, ms) = (out.num("faults"), out.num("pages"), out.num("ms"));
    println!("second pass: {faults} page faults for {pages} pages; free and second pass {ms} ms");
    if ms < PURGE_DELAY_MS {
        assert!(faults * 8 < pages, "96 MiB freed in random order and allocated again: {faults} page faults for {pages} pages in {ms} ms");
    } else {
        println!("the free and the second pass took {ms} ms, past the purge delay: {faults} page faults for {pages} pages (not checked)");
    }
}

/// A thread's heap of small blocks gets huge pages once its shard holds
/// 8 MiB, before the program holds the 32 MiB in all that bigger blocks
/// wait for. Child process: 24 MiB of 64-byte blocks, each written: of 48
/// blocks spread over the last 12 MiB, at least three quarters lie in
/// mappings with the huge-page advice (`hg`; before: none).
#[test]
fn a_small_block_heap_gets_huge_pages_past_8_mib() {
    let _quiet = quiet_share();
    const SIZE: usize = 64;
    const N: usize = (24 << 20) / SIZE;
    if child_scenario().is_some() {
        let probes = grow_written(&Growth::new(), Layout::from_size_align(SIZE, 16).unwrap(), N);
        let advised = advised_blocks(&probes);
        println!();
        report("advised", advised);
        report("probes", probes.len());
        return;
    }
    let out = run_child("a_small_block_heap_gets_huge_pages_past_8_mib", "run", &[]);
    out.assert_ok("child");
    let (advised, probes) = (out.num("advised"), out.num("probes"));
    println!("{advised} of {probes} blocks of the last 12 MiB in mappings with the huge-page advice");
    // A kernel built without transparent huge pages refuses the advice (no
    // sysfs file then).
    if std::path::Path::new(THP_SETTING).exists() {
        assert!(advised * 4 >= probes * 3, "24 MiB of written 64-byte blocks: {advised} of {probes} blocks of the last 12 MiB in mappings with the huge-page advice");
    }
}

/// Large blocks allocated without zeroing get huge pages once the arena holds
/// 32 MiB (the program fills them: they hold garbage until written); zeroed
/// ones never (a `calloc`'d buffer may be touched in a few places only).
/// Child processes, one per kind: 24 blocks of 4 MiB, every page written; of
/// the last 12 (past 48 MiB), probed 2 MiB into each (a granule of the block
/// alone), at least three quarters lie in mappings with the huge-page advice
/// (`hg`) for `malloc`, none for `calloc`; where the kernel has transparent
/// huge pages on, the writes of `malloc`'d blocks fault in fewer than half
/// their pages one by one (before: none advised, one fault per page).
#[test]
fn filled_large_blocks_get_huge_pages_past_32_mib() {
    let _quiet = quiet_share();
    const SIZE: usize = 4 << 20;
    const N: usize = 24;
    if let Some(s) = child_scenario() {
        let a = Growth::new();
        let l = Layout::from_size_align(SIZE, 8).unwrap();
        let f0 = minor_faults();
        let mut probes = Vec::new();
        for i in 0..N {
            // SAFETY: non-zero size; the blocks are leaked (the child exits).
            let p = unsafe { if s == "zeroed" { a.alloc_zeroed(l) } else { a.alloc(l) } };
            assert!(!p.is_null());
            for off in (0..SIZE).step_by(4096) {
                // SAFETY: `p` has `SIZE` writable bytes.
                unsafe { p.add(off).write_volatile(1) };
            }
            if i >= N / 2 {
                probes.push(p as usize + (2 << 20));
            }
        }
        let faults = minor_faults() - f0;
        println!();
        report("advised", advised_blocks(&probes));
        report("probes", probes.len());
        report("faults", faults);
        report("pages", N * SIZE / 4096);
        return;
    }
    for kind in ["filled", "zeroed"] {
        let out = run_child("filled_large_blocks_get_huge_pages_past_32_mib", kind, &[]);
        out.assert_ok(kind);
        let (advised, probes) = (out.num("advised"), out.num("probes"));
        let (faults, pages) = (out.num("faults"), out.num("pages"));
        println!("{kind}: {advised} of {probes} probed blocks advised, {faults} faults for {pages} pages");
        if kind == "zeroed" {
            assert_eq!(advised, 0, "zeroed 4 MiB blocks: {advised} of {probes} in mappings with the huge-page advice");
        } else if std::path::Path::new(THP_SETTING).exists() {
            assert!(advised * 4 >= probes * 3, "written 4 MiB blocks: {advised} of {probes} past 48 MiB in mappings with the huge-page advice");
            if thp_enabled() {
                assert!(faults * 2 < pages, "written 4 MiB blocks took {faults} page faults for {pages} pages");
            }
        }
    }
}
