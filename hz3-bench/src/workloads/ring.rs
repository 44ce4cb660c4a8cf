//! A bounded single-producer/single-consumer ring of block pointers, built on atomics.
//!
//! Allocated (from the harness's global allocator) before any timer starts; pushing and popping
//! never allocate. Slots are `AtomicPtr`s, so misuse cannot cause memory unsafety, only lost
//! or duplicated pointers; the workloads use each ring with exactly one producer thread and one
//! consumer thread.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Keeps the producer's and the consumer's index on separate cache lines.
#[repr(align(128))]
struct Padded<T>(T);

/// Bounded SPSC queue of `*mut u8`.
pub struct Ring {
    slots: Box<[AtomicPtr<u8>]>,
    mask: usize,
    /// Next index to pop (written by the consumer only).
    head: Padded<AtomicUsize>,
    /// Next index to push (written by the producer only).
    tail: Padded<AtomicUsize>,
}

impl Ring {
    /// A ring holding up to `cap` pointers (`cap` is rounded up to a power of two).
    pub fn new(cap: usize) -> Self {
        let cap = cap.next_power_of_two();
        let slots = (0..cap)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect();
        Ring {
            slots,
            mask: cap - 1,
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
        }
    }

    /// Producer side: enqueue `p`; `false` when the ring is full.
    #[inline(always)]
    pub fn push(&self, p: *mut u8) -> bool {
        let t = self.tail.0.load(Ordering::Relaxed);
        let h = self.head.0.load(Ordering::Acquire);
        if t.wrapping_sub(h) > self.mask {
            return false;
        }
        self.slots[t & self.mask].store(p, Ordering::Relaxed);
        self.tail.0.store(t.wrapping_add(1), Ordering::Release);
        true
    }

    /// Consumer side: dequeue one pointer.
    #[cfg_attr(not(test), allow(dead_code))]
    #[inline(always)]
    pub fn pop(&self) -> Option<*mut u8> {
        let h = self.head.0.load(Ordering::Relaxed);
        let t = self.tail.0.load(Ordering::Acquire);
        if h == t {
            return None;
        }
        let p = self.slots[h & self.mask].load(Ordering::Relaxed);
        self.head.0.store(h.wrapping_add(1), Ordering::Release);
        Some(p)
    }

    /// Consumer side: hand every pointer present now to `f`; returns how many.
    #[inline(always)]
    pub fn drain(&self, mut f: impl FnMut(*mut u8)) -> u64 {
        let h = self.head.0.load(Ordering::Relaxed);
        let t = self.tail.0.load(Ordering::Acquire);
        let mut i = h;
        while i != t {
            f(self.slots[i & self.mask].load(Ordering::Relaxed));
            i = i.wrapping_add(1);
        }
        self.head.0.store(t, Ordering::Release);
        t.wrapping_sub(h) as u64
    }

    /// Whether the ring looks empty (exact when called by the consumer with the producer idle).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.head.0.load(Ordering::Acquire) == self.tail.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake, never-dereferenced pointers carrying a number.
    fn fake(i: usize) -> *mut u8 {
        std::ptr::without_provenance_mut(i)
    }

    #[test]
    fn fifo_and_full() {
        let r = Ring::new(4);
        for i in 1..=4usize {
            assert!(r.push(fake(i)));
        }
        assert!(!r.push(fake(5)));
        assert_eq!(r.pop(), Some(fake(1)));
        assert!(r.push(fake(5)));
        let mut got = vec![];
        assert_eq!(r.drain(|p| got.push(p as usize)), 4);
        assert_eq!(got, vec![2, 3, 4, 5]);
        assert!(r.is_empty());
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn two_threads_transfer_everything() {
        let r = Ring::new(64);
        const N: usize = 200_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=N {
                    while !r.push(fake(i)) {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut next = 1usize;
            while next <= N {
                r.drain(|p| {
                    assert_eq!(p as usize, next);
                    next += 1;
                });
            }
        });
    }
}
