//! The suite checks itself: each generic check of `tests/common` is run against a
//! deliberately broken allocator and must fail (panic). If one of these tests
//! fails, the corresponding check has gone blind.
//!
//! The broken allocators sit on libc (`posix_memalign`/`free`) or on a never-freeing
//! bump region; each has exactly one defect. (Panic messages printed while these
//! tests run are expected.)

#[macro_use]
mod common;

use common::{Flags, Probe, StatsSnapshot};
use hz3::Ptag;
use std::alloc::{GlobalAlloc, Layout};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

const FLAGS: Flags = Flags {
    s110_meta: false,
    free_fast: false,
    ptag: Ptag::Off,
    stats: false,
    failfast: false,
    shards: 1,
    arena_size: 1 << 30,
    purge: false,
};

/// `posix_memalign` with the 16-byte minimum.
///
/// # Safety
/// `align` is a power of two.
unsafe fn sys_alloc(size: usize, align: usize) -> *mut u8 {
    let mut p = std::ptr::null_mut();
    // SAFETY: valid out-pointer; align is a power of two >= 16 (a multiple of
    // sizeof(void*)).
    if unsafe { libc::posix_memalign(&mut p, align.max(16), size.max(1)) } != 0 {
        return std::ptr::null_mut();
    }
    p.cast()
}

/// A never-freeing bump region (4 GiB of reserved, lazily touched address space).
struct Bump {
    base: AtomicUsize,
    next: AtomicUsize,
}
const BUMP_LEN: usize = 4 << 30;
impl Bump {
    const fn new() -> Self {
        Bump {
            base: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        }
    }
    fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        if self.base.load(Ordering::Acquire) == 0 {
            // SAFETY: anonymous private mapping, no address hint.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    BUMP_LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            if self
                .base
                .compare_exchange(0, p as usize, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // SAFETY: our own fresh mapping, unused.
                unsafe { libc::munmap(p, BUMP_LEN) };
            }
        }
        let base = self.base.load(Ordering::Acquire);
        let align = align.max(16);
        loop {
            let cur = self.next.load(Ordering::Relaxed);
            let start = (base + cur).next_multiple_of(align) - base;
            let end = start + size;
            if end > BUMP_LEN {
                return std::ptr::null_mut();
            }
            if self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return (base + start) as *mut u8;
            }
        }
    }
}

macro_rules! broken {
    ($name:ident, usable: $usable:expr) => {
        impl Probe for $name {
            fn type_name() -> &'static str {
                stringify!($name)
            }
            fn flags() -> Flags {
                FLAGS
            }
            unsafe fn probe_usable(p: *mut u8) -> Option<usize> {
                let f: fn(*mut u8) -> Option<usize> = $usable;
                f(p)
            }
            fn probe_stats() -> StatsSnapshot {
                StatsSnapshot::default()
            }
        }
    };
}

/// Defect: `alloc_zeroed` leaves the last byte dirty.
struct NoZero;
// SAFETY: a libc-backed allocator; the defect only breaks the zeroing promise.
unsafe impl GlobalAlloc for NoZero {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: Layout alignments are powers of two.
        unsafe { sys_alloc(l.size(), l.align()) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above; the block has l.size() writable bytes.
        unsafe {
            let p = sys_alloc(l.size(), l.align());
            if !p.is_null() {
                p.write_bytes(0, l.size() - 1);
                p.add(l.size() - 1).write(0xAB);
            }
            p
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: p came from sys_alloc.
        unsafe { libc::free(p.cast()) }
    }
}
broken!(NoZero, usable: |_| None);

/// Defect: `realloc` copies only the first half of the old content.
struct HalfCopy;
// SAFETY: a libc-backed allocator; the defect only breaks realloc's copy.
unsafe impl GlobalAlloc for HalfCopy {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: Layout alignments are powers of two.
        unsafe { sys_alloc(l.size(), l.align()) }
    }
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: p came from sys_alloc.
        unsafe { libc::free(p.cast()) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: p is live with layout l; q has `new` bytes; copy within both.
        unsafe {
            let q = sys_alloc(new, l.align());
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(p, q, l.size().min(new).div_ceil(2));
                libc::free(p.cast());
            }
            q
        }
    }
}
broken!(HalfCopy, usable: |_| None);

/// Defect: every 40th allocation returns the same address as the one before.
struct Overlap {
    bump: Bump,
    count: AtomicUsize,
    last: AtomicUsize,
    last_size: AtomicUsize,
}
// SAFETY: a never-freeing bump allocator; the defect only breaks disjointness.
unsafe impl GlobalAlloc for Overlap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        if n % 40 == 39
            && last != 0
            && last.is_multiple_of(l.align())
            && self.last_size.load(Ordering::Relaxed) >= l.size()
        {
            return last as *mut u8;
        }
        let p = self.bump.alloc(l.size(), l.align());
        self.last.store(p as usize, Ordering::Relaxed);
        self.last_size.store(l.size(), Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, _p: *mut u8, _l: Layout) {}
}
broken!(Overlap, usable: |_| None);

/// Defect: alignments above 32 are ignored (blocks are only 16-byte aligned, and
/// never by accident more).
struct Misalign {
    bump: Bump,
}
// SAFETY: a never-freeing bump allocator; the defect only breaks alignment.
unsafe impl GlobalAlloc for Misalign {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() <= 32 {
            return self.bump.alloc(l.size(), l.align());
        }
        let p = self.bump.alloc(l.size() + l.align(), l.align());
        if p.is_null() {
            return p;
        }
        // SAFETY: p + 16 + size stays inside the size + align bytes just reserved.
        unsafe { p.add(16) }
    }
    unsafe fn dealloc(&self, _p: *mut u8, _l: Layout) {}
}
broken!(Misalign, usable: |_| None);

/// Defect: `usable_size` claims every pointer (and under-reports nothing).
struct ClaimsAll;
// SAFETY: a libc-backed allocator; the defect is only in the usable-size answer.
unsafe impl GlobalAlloc for ClaimsAll {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: Layout alignments are powers of two.
        unsafe { sys_alloc(l.size(), l.align()) }
    }
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: p came from sys_alloc.
        unsafe { libc::free(p.cast()) }
    }
}
broken!(ClaimsAll, usable: |_| Some(16));

/// Defect: `usable_size` over-reports by 64 bytes (writing it corrupts neighbours).
struct OverReports {
    bump: Bump,
}
// SAFETY: a never-freeing bump allocator handing out blocks back to back; the defect
// is only in the usable-size answer.
unsafe impl GlobalAlloc for OverReports {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = self.bump.alloc(l.size(), l.align());
        if !p.is_null() {
            SIZES.lock().unwrap().insert(p as usize, l.size());
        }
        p
    }
    unsafe fn dealloc(&self, _p: *mut u8, _l: Layout) {}
}
static SIZES: std::sync::Mutex<std::collections::BTreeMap<usize, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
broken!(OverReports, usable: |p| SIZES.lock().unwrap().get(&(p as usize)).map(|s| s + 64));

static NO_ZERO: NoZero = NoZero;
static HALF_COPY: HalfCopy = HalfCopy;
static OVERLAP: Overlap = Overlap {
    bump: Bump::new(),
    count: AtomicUsize::new(0),
    last: AtomicUsize::new(0),
    last_size: AtomicUsize::new(0),
};
static MISALIGN: Misalign = Misalign { bump: Bump::new() };
static CLAIMS_ALL: ClaimsAll = ClaimsAll;
static OVER_REPORTS: OverReports = OverReports { bump: Bump::new() };

/// Runs `f` and asserts it panicked.
fn must_fail(what: &str, f: impl FnOnce()) {
    let r = catch_unwind(AssertUnwindSafe(f));
    assert!(
        r.is_err(),
        "{what}: the check passed against a broken allocator"
    );
}

#[test]
fn zeroed_check_catches_dirty_alloc_zeroed() {
    must_fail("zeroed_after_dirty", || {
        common::zeroed_after_dirty(&NO_ZERO)
    });
    must_fail("alignment_sweep", || common::alignment_sweep(&NO_ZERO));
}

#[test]
fn realloc_checks_catch_a_bad_copy() {
    must_fail("realloc_chain_big", || {
        common::realloc_chain_big(&HALF_COPY)
    });
    must_fail("realloc_small_steps", || {
        common::realloc_small_steps(&HALF_COPY)
    });
    must_fail("realloc_aligned", || common::realloc_aligned(&HALF_COPY));
    must_fail("random_ops", || {
        common::random_ops(&HALF_COPY, 1, 200, 20_000)
    });
}

#[test]
fn content_and_range_checks_catch_overlapping_blocks() {
    must_fail("no_overlap_across_classes", || {
        common::no_overlap_across_classes(&OVERLAP)
    });
    must_fail("random_ops", || common::random_ops(&OVERLAP, 2, 200, 5_000));
}

#[test]
fn alignment_checks_catch_ignored_alignment() {
    must_fail("alignment_sweep", || common::alignment_sweep(&MISALIGN));
    must_fail("realloc_aligned", || common::realloc_aligned(&MISALIGN));
    must_fail("huge_alignment", || common::huge_alignment(&MISALIGN));
}

#[test]
fn usable_size_checks_catch_wrong_answers() {
    must_fail("usable_size_foreign", || {
        common::usable_size_foreign(&CLAIMS_ALL)
    });
    must_fail("usable_size_sweep (too small)", || {
        common::usable_size_sweep(&CLAIMS_ALL)
    });
    must_fail("usable_size_sweep (too big)", || {
        common::usable_size_sweep(&OVER_REPORTS)
    });
}

static SYS: std::alloc::System = std::alloc::System;
impl Probe for std::alloc::System {
    fn type_name() -> &'static str {
        "System"
    }
    fn flags() -> Flags {
        FLAGS
    }
    unsafe fn probe_usable(_p: *mut u8) -> Option<usize> {
        None
    }
    fn probe_stats() -> StatsSnapshot {
        StatsSnapshot::default()
    }
}

/// And the same checks pass on a correct allocator (the system one), so the
/// failures above come from the defects, not from the checks.
#[test]
fn checks_pass_on_the_system_allocator() {
    common::zeroed_after_dirty(&SYS);
    common::alignment_sweep(&SYS);
    common::realloc_chain_big(&SYS);
    common::realloc_small_steps(&SYS);
    common::realloc_aligned(&SYS);
    common::no_overlap_across_classes(&SYS);
    common::huge_alignment(&SYS);
    common::random_ops(&SYS, 3, 200, 20_000);
}
