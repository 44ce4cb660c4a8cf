//! The process's `#[global_allocator]`: forwards every `std` allocation (`Box`, `Vec`,
//! `String`, `HashMap`, `BTreeMap`, serde_json's values, thread spawns…) to one allocator
//! under test, chosen once per process from the environment variable [`ENV`].
//!
//! The parent sets [`ENV`] to the allocator's name when it starts the child of a
//! program-like workload ([`Workload::std_on_allocator_under_test`](crate::workloads::Workload::std_on_allocator_under_test)),
//! so that child's `std` collections allocate from the allocator it measures (the `rust_`
//! workloads need that; the harness's own buffers, made before the clock starts, and the
//! thread handles of `churn_` come from it too). The parent itself, the children of the
//! classic workloads and any process without the variable use glibc (`System`), as before.
//!
//! The choice is made on the first allocation of the process, before anything else
//! allocated, and never changes, so every block is freed by the allocator that made it. It
//! reads the variable with `getenv`, which does not allocate. Every allocator is reached the
//! same way: an index load and one indirect call into its
//! [`Global`](crate::allocators::Global) wrapper (an out-of-line call, like the `Called`
//! wrapper the workloads call). This module must never allocate.

use crate::allocators::{self, GLOBAL_ALLOCATORS};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Environment variable naming the child's allocator (an `hz3-bench child` allocator name).
pub const ENV: &str = "HZ3_BENCH_GLOBAL_ALLOCATOR";
/// The same, NUL-terminated for `getenv`.
const ENV_C: &core::ffi::CStr = c"HZ3_BENCH_GLOBAL_ALLOCATOR";

/// Index + 1 into [`GLOBAL_ALLOCATORS`]; 0 until the first allocation chose.
///
/// Relaxed is enough: the table is immutable and every thread that finds 0 computes the same
/// index from the same environment, so a race only stores the same value twice.
static SELECTED: AtomicUsize = AtomicUsize::new(0);

/// The dispatching global allocator.
pub struct Dispatch;

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// Index into [`GLOBAL_ALLOCATORS`] of the allocator called `name` (a child allocator name);
/// unknown names and preloaded allocators get glibc (whose symbols `LD_PRELOAD` replaces).
pub fn index_of(name: &str) -> usize {
    let name = allocators::global_name(name);
    GLOBAL_ALLOCATORS
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or(0)
}

#[cold]
#[inline(never)]
fn choose() -> usize {
    // SAFETY: `getenv` reads the process environment, which nothing in this program modifies;
    // the returned pointer, when non-null, is a NUL-terminated string that stays valid while
    // the environment is unchanged, and is only read here.
    let name = unsafe {
        let p = libc::getenv(ENV_C.as_ptr());
        if p.is_null() {
            ""
        } else {
            core::ffi::CStr::from_ptr(p).to_str().unwrap_or("")
        }
    };
    let i = index_of(name);
    SELECTED.store(i + 1, Ordering::Relaxed);
    i
}

/// The allocator every `std` allocation of this process goes to.
#[inline(always)]
fn current() -> &'static (dyn GlobalAlloc + Sync) {
    let s = SELECTED.load(Ordering::Relaxed);
    let i = if s == 0 { choose() } else { s - 1 };
    GLOBAL_ALLOCATORS[i].1
}

/// Name of the allocator this process's `std` allocations go to.
pub fn current_name() -> &'static str {
    let s = SELECTED.load(Ordering::Relaxed);
    let i = if s == 0 { choose() } else { s - 1 };
    GLOBAL_ALLOCATORS[i].0
}

// SAFETY: every method forwards to the same allocator (chosen once, never changed), so blocks
// are always freed / resized by the allocator that made them, under its own guarantees.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { current().alloc(l) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { current().alloc_zeroed(l) }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `current()` (the choice never changes); caller's contract.
        unsafe { current().dealloc(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe { current().realloc(p, l, new) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        let name = |n: &str| GLOBAL_ALLOCATORS[index_of(n)].0;
        assert_eq!(name("hz3-scale"), "hz3-scale");
        assert_eq!(name("scale"), "hz3-scale");
        assert_eq!(name("mimalloc"), "mimalloc");
        assert_eq!(name("hz3-scale-preload"), "glibc");
        assert_eq!(name("jemalloc-preload"), "glibc");
        assert_eq!(name(""), "glibc");
        // Every allocator the child accepts has its own entry.
        for n in allocators::OTHERS.iter().chain(allocators::EXTRA) {
            assert_eq!(name(n), *n);
        }
        for p in allocators::PRESETS {
            assert_eq!(name(p.name), p.name);
        }
    }

    /// The test process itself runs on the variable's allocator (glibc when unset).
    #[test]
    fn process_uses_the_named_allocator() {
        let want = std::env::var(ENV).unwrap_or_default();
        assert_eq!(current_name(), GLOBAL_ALLOCATORS[index_of(&want)].0);
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
