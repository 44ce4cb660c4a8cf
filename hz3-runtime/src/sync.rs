//! The engine's one lock: a test-and-test-and-set spin lock that yields.
//!
//! Owns: mutual exclusion for slow-path structures (shard centrals, the arena
//! slot table, the thread-cache pool, the huge-mapping registry). Must never:
//! be taken on the allocation or free fast path, or allocate.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
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

/// Data reachable only while the spin lock that protects it is held: the
/// `Mutex<T>` shape on [`SpinLock`]. [`SpinMutex::lock`] returns a guard that
/// derefs to the data and unlocks when dropped (a plain store: never panics).
pub struct SpinMutex<T> {
    lock: SpinLock,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through a guard, and a guard exists only
// while its thread holds the lock: one thread at a time, so sharing the mutex
// moves the data between threads (hence `T: Send`) but never aliases it.
unsafe impl<T: Send> Sync for SpinMutex<T> {}

impl<T> SpinMutex<T> {
    /// An unlocked mutex holding `data`.
    pub const fn new(data: T) -> Self {
        SpinMutex { lock: SpinLock::new(), data: UnsafeCell::new(data) }
    }

    /// Take the lock; the data is reachable through the guard until it drops.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.lock.lock();
        SpinGuard { m: self }
    }

    /// The bare lock, for the `fork()` handlers only: they hold every engine
    /// lock across `fork()` (taken before, released in the parent, reset in
    /// the child) without touching the data.
    pub fn raw_lock(&self) -> &SpinLock {
        &self.lock
    }
}

/// Proof that the lock of a [`SpinMutex`] is held; unlocks on drop.
pub struct SpinGuard<'a, T> {
    m: &'a SpinMutex<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock, so no other guard (the only other
        // way to the data) exists.
        unsafe { &*self.m.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow the guard's only one.
        unsafe { &mut *self.m.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.m.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_reaches_the_data_and_unlocks_on_drop() {
        let m = SpinMutex::new(1u32);
        {
            let mut g = m.lock();
            *g += 1;
            assert!(m.raw_lock().held.load(Ordering::Relaxed), "held while the guard lives");
        }
        assert!(!m.raw_lock().held.load(Ordering::Relaxed), "released when the guard drops");
        assert_eq!(*m.lock(), 2);
    }
}
