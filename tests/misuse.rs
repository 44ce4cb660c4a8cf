//! Misuse and edge cases: bad frees in the default configurations, processes
//! made without `fork()`'s handlers, initialisation that fails at first, a
//! remote free racing its owner's exit, `errno` across `free`, and (with
//! `harden: true`) corrupted free lists and double frees.
//!
//! Scenarios that abort, lower a limit or fork run in a child process (this
//! binary re-executed on the one test with `HZ3_REL_CHILD` set); the parent
//! checks how the child ended.

#[macro_use]
mod common;
mod reliability_support;

use reliability_support::*;
use std::alloc::Layout;

hz3::hz3_allocator! {
    pub struct BadDefault<stats: true>;
    pub struct BadFast<s110_meta: true, free_fast: true, ptag: late, stats: true>;
    pub struct BadFirst<s110_meta: false, ptag: first, stats: true>;
    pub struct BadHeader<s110_meta: false, ptag: off, stats: true>;
    pub struct LargeDefault<stats: true>;
    pub struct LargeFirst<s110_meta: false, ptag: first, stats: true>;
}
impl_hz!(BadDefault, BadFast, BadFirst, BadHeader, LargeDefault, LargeFirst);

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// Free through the C interface's route (the sized Rust `dealloc` of a
/// header-route type trusts its layout instead of routing the pointer).
unsafe fn c_free<A: Hz + hz3::Config>(a: &A, p: *mut u8, size: usize, c_route: bool) {
    if c_route {
        // SAFETY: forwarded contract (the route accepts any pointer).
        unsafe { hz3::__private::free::<A>(p) };
    } else {
        // SAFETY: forwarded contract.
        unsafe { a.dealloc(p, lay(size)) };
    }
}

/// A free of a pointer that is not 16-byte aligned is ignored and counted:
/// later allocations never return it (before: `free(a + 1)` made the next
/// `malloc(64)` return `a + 1`).
fn misaligned_free_is_ignored<A: Hz + hz3::Config>(c_route: bool) {
    let a = A::default();
    // SAFETY: valid layouts; the misaligned free is the misuse under test,
    // which the engine must ignore.
    unsafe {
        let keep = a.alloc(lay(64));
        let p = a.alloc(lay(64));
        assert!(!p.is_null() && !keep.is_null());
        let before = A::snapshot().invalid_frees;
        c_free(&a, p.add(1), 64, c_route);
        c_free(&a, p.add(8), 64, c_route);
        assert_eq!(A::snapshot().invalid_frees - before, 2, "{}: misaligned frees not counted", A::TYPE_NAME);
        let got: Vec<*mut u8> = (0..300).map(|_| a.alloc(lay(64))).collect();
        for &q in &got {
            assert_eq!(q as usize & 15, 0, "{}: malloc(64) returned the misaligned {q:p}", A::TYPE_NAME);
            assert_ne!(q, p, "{}: the block still in use was handed out", A::TYPE_NAME);
        }
        for q in got {
            a.dealloc(q, lay(64));
        }
        a.dealloc(p, lay(64));
        a.dealloc(keep, lay(64));
    }
}

#[test]
fn misaligned_free_ignored_default() {
    misaligned_free_is_ignored::<BadDefault>(false);
}

#[test]
fn misaligned_free_ignored_free_fast() {
    misaligned_free_is_ignored::<BadFast>(false);
}

#[test]
fn misaligned_free_ignored_ptag_first() {
    misaligned_free_is_ignored::<BadFirst>(false);
}

#[test]
fn misaligned_free_ignored_header_route() {
    misaligned_free_is_ignored::<BadHeader>(true);
}

/// A free through a pointer inside a large block (not its start) is ignored
/// and counted; the block stays the program's (before: `free(L + 100000)`
/// freed `L`, and the next large allocation returned it again).
fn large_interior_free_is_ignored<A: Hz>() {
    let a = A::default();
    let size = 600 << 10;
    let l = Blk::new(&a, size, 16, 1);
    let before = A::snapshot().invalid_frees;
    // SAFETY: deliberate frees of interior pointers (one on the block's first
    // data page, one far inside it), which the engine must ignore.
    unsafe {
        a.dealloc((l.p + 100_000) as *mut u8, lay(size));
        a.dealloc((l.p + 16) as *mut u8, lay(size));
        a.dealloc((l.p + 4096) as *mut u8, lay(size));
    }
    assert_eq!(A::snapshot().invalid_frees - before, 3, "{}: interior frees not counted", A::TYPE_NAME);
    let others: Vec<Blk> = (0..4).map(|k| Blk::new(&a, size, 16, 10 + k)).collect();
    for o in &others {
        assert!(o.p + o.size <= l.p || o.p >= l.p + l.size, "{}: {:#x} handed out inside the live {:#x}", A::TYPE_NAME, o.p, l.p);
    }
    l.verify("large block after interior frees");
    for o in others {
        o.free(&a, "other large blocks");
    }
    l.free(&a, "large block");
    assert_eq!(A::snapshot().invalid_frees - before, 3, "{}: a valid free was counted invalid", A::TYPE_NAME);
}

#[test]
fn large_interior_free_ignored_default() {
    large_interior_free_is_ignored::<LargeDefault>();
}

#[test]
fn large_interior_free_ignored_ptag_first() {
    large_interior_free_is_ignored::<LargeFirst>();
}

// ---------------------------------------------------------------------------
// harden: true — the generic suite on every route, then the misuse scenarios
// ---------------------------------------------------------------------------

hz3::hz3_allocator! {
    /// The scale lane hardened (the `libhz3_hardened.so` flags).
    pub struct HardScale<s110_meta: true, free_fast: false, ptag: late, stats: true, harden: true>;
    /// Tag map first, with failfast.
    pub struct HardFirst<s110_meta: true, free_fast: true, ptag: first, harden: true, failfast: true, shards: 4>;
    /// Header route (no tag map, no page meta).
    pub struct HardOff<s110_meta: false, ptag: off, harden: true, shards: 2, arena_gib: 1>;
}

stamp_suite!(suite_hard_scale, HardScale);
stamp_suite!(suite_hard_first, HardFirst);
stamp_suite!(suite_hard_off, HardOff);
