//! The engine's one lock: a test-and-test-and-set spin lock that yields.
//!
//! Owns: mutual exclusion for slow-path structures (shard centrals, the arena
//! slot table, the thread-cache pool, the huge-mapping registry). Must never:
//! be taken on the allocation or free fast path, or allocate.

use core::sync::atomic::{AtomicBool, Ordering};

/// A spin lock; `const`-constructible so it can live in statics.
pub struct SpinLock {
    held: AtomicBool,
}

impl SpinLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        SpinLock { held: AtomicBool::new(false) }
    }

    /// Acquire. Acquire ordering: everything written under the previous holder's
    /// release is visible to us.
    #[inline]
    pub fn lock(&self) {
        if self
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_contended();
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.held.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    crate::os::yield_now();
                }
            }
            if self
                .held
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Release. Release ordering publishes what was written under the lock.
    #[inline]
    pub fn unlock(&self) {
        self.held.store(false, Ordering::Release);
    }

    /// Re-initialise in a `fork()` child, where the holder thread no longer exists.
    pub fn reset(&self) {
        self.held.store(false, Ordering::Relaxed);
    }
}
