//! Size classes as a program sees them: the usable size of every request up to
//! 4 KiB with the default classes (four per doubling above 256 B) and with
//! `fine_classes: true` (16-byte steps up to 2 KiB), and the memory a program
//! that touches many classes a few blocks each keeps resident with each.
//!
//! - `usable_sizes_of_both_class_sets`: every request from 1 B to 4 KiB; the
//!   block is at least the request, a multiple of 16, at most 25% above it
//!   from 257 B (16 B above it with fine classes), and the content survives.
//! - `many_classes_few_blocks_stay_small` (child processes, one per type):
//!   400 slots of 16 B-2 KiB allocated and freed at random (the shape of most
//!   programs' small allocations); the resident memory the workload adds is
//!   measured from `/proc/self/statm`. The 16-byte classes (the only ones
//!   before the flag) keep 1.9 MiB (each of 128 classes holds its own partly
//!   used pages); the default classes 0.75 MiB, and must stay under 1.25 MiB.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

hz3::hz3_allocator! {
    /// Every flag at its default (coarse classes).
    pub struct Coarse;
    /// The 16-byte classes up to 2 KiB.
    pub struct Fine<fine_classes: true>;
}

/// Usable size of a fresh block of `size` bytes from `a`, after a content check.
fn usable<A: GlobalAlloc>(a: &A, usable_size: unsafe fn(*const u8) -> Option<usize>, size: usize) -> usize {
    let l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a non-zero size and a valid alignment.
    let p = unsafe { a.alloc(l) };
    assert!(!p.is_null(), "alloc({size})");
    // SAFETY: `p` is a live block of `size` bytes from `a`.
    let u = unsafe {
        p.write_bytes(size as u8, size);
        let u = usable_size(p).expect("one of the type's blocks");
        assert!((0..size).all(|i| *p.add(i) == size as u8), "content of a {size}-byte block");
        a.dealloc(p, l);
        u
    };
    u
}

#[test]
fn usable_sizes_of_both_class_sets() {
    for size in 1..=4096usize {
        let c = usable(&Coarse::new(), Coarse::usable_size, size);
        let f = usable(&Fine::new(), Fine::usable_size, size);
        assert!(c >= size && f >= size, "size {size}: coarse {c}, fine {f}");
        if size <= 2048 {
            assert_eq!(c % 16, 0, "size {size}");
            assert_eq!(f, size.div_ceil(16) * 16, "fine class of {size}");
        }
        if size <= 256 {
            assert_eq!(c, f, "classes up to 256 B are shared ({size})");
        } else if size <= 2048 {
            assert!(c * 4 <= size * 5 + 60, "coarse class of {size} is {c}: more than 25% above");
            let top = usize::BITS - 1 - (size - 1).leading_zeros();
            assert_eq!(c % (1 << (top - 2)), 0, "size {size}: {c} is not a quarter step");
        }
    }
}

/// Resident KiB of this process (`/proc/self/statm`).
fn resident_kib() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4
}

/// 400 slots visited at random: a free slot gets a block of 16-2048 B, a full
/// one is freed (fixed seed: the same blocks for every type).
fn random_slots<A: GlobalAlloc>(a: &A) -> usize {
    let mut slots: Vec<(usize, usize)> = vec![(0, 0); 400];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let before = resident_kib();
    for _ in 0..600_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x >> 8) as usize % slots.len();
        let (p, size) = slots[k];
        if p != 0 {
            // SAFETY: `p` is a live block of `size` bytes from `a`.
            unsafe { a.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
            slots[k] = (0, 0);
        } else {
            let size = 16 + (x >> 24) as usize % 2033;
            // SAFETY: non-zero size, valid alignment.
            let p = unsafe { a.alloc(Layout::from_size_align(size, 8).unwrap()) };
            assert!(!p.is_null());
            // SAFETY: `p` is a live block of at least 16 bytes.
            unsafe { p.write_bytes(1, 16) };
            slots[k] = (p as usize, size);
        }
    }
    let grown = resident_kib().saturating_sub(before);
    for (p, size) in slots {
        if p != 0 {
            // SAFETY: as above.
            unsafe { a.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
        }
    }
    grown
}

const CHILD: &str = "HZ3_SIZE_CLASSES_CHILD";

/// Run this test in a child for `which` and return the KiB it reports.
fn child_kib(which: &str) -> usize {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["many_classes_few_blocks_stay_small", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, which)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child {which}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text.lines()
        .find_map(|l| l.split_once("GROWN_KIB=").map(|(_, v)| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("child {which} printed no GROWN_KIB: {text}"))
}

#[test]
fn many_classes_few_blocks_stay_small() {
    match std::env::var(CHILD).as_deref() {
        Ok("coarse") => println!("GROWN_KIB={}", random_slots(&Coarse::new())),
        Ok("fine") => println!("GROWN_KIB={}", random_slots(&Fine::new())),
        _ => {
            let coarse = child_kib("coarse");
            let fine = child_kib("fine");
            println!("resident growth: default classes {coarse} KiB, fine classes {fine} KiB");
            assert!(coarse <= 1280, "default classes kept {coarse} KiB resident (fine classes {fine} KiB)");
        }
    }
}
