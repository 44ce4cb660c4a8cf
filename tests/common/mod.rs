//! The generic allocator suite: every check is written once here, generic over the
//! allocator type, and [`stamp_suite!`] stamps one `#[test]` wrapper per check for
//! each generated type of the flag matrix (see `tests/matrix.rs`).
//!
//! Conventions:
//! - A [`Block`] owns one live allocation. Its bytes carry a pattern derived from
//!   the block's address and size (see [`word_pat`]); every free, realloc and
//!   hand-over verifies it, so overlapping blocks, lost writes and bad copies show up
//!   as a pattern mismatch naming the block, the offset and the allocator type.
//! - Blocks up to [`DENSE_LIMIT`] bytes are patterned in full; bigger blocks carry the
//!   pattern on their first and last 512 bytes and on one word every 256 bytes
//!   (enough to catch overlaps, cheap enough for the dev profile), unless created
//!   `dense`.
//! - Counter checks here are lower bounds only (other tests of the same type run in
//!   parallel in the same process); exact counter checks live in
//!   `tests/stats_counters.rs` with dedicated types.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

pub use hz3::{Ptag, StatsSnapshot};

// ---------------------------------------------------------------------------
// The allocator under test
// ---------------------------------------------------------------------------

/// The flags of one generated type, as its associated consts report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags {
    pub s110_meta: bool,
    pub free_fast: bool,
    pub ptag: Ptag,
    pub stats: bool,
    pub failfast: bool,
    pub shards: usize,
    pub arena_size: usize,
    pub purge: bool,
}

/// What the suite needs beyond `GlobalAlloc`: the inherent API of a generated type,
/// reached generically. Implemented by [`stamp_suite!`] (names differ from the
/// inherent items on purpose, so a missing inherent item cannot silently recurse).
pub trait Probe: GlobalAlloc + Sync + Sized + 'static {
    /// The type's name as written in the test source.
    fn type_name() -> &'static str;
    /// The type's flags.
    fn flags() -> Flags;
    /// The type's `usable_size`.
    ///
    /// # Safety
    /// As the generated type's `usable_size`: `p` is any pointer value; the type must
    /// only read its own metadata to answer.
    unsafe fn probe_usable(p: *mut u8) -> Option<usize>;
    /// The type's `stats()`.
    fn probe_stats() -> StatsSnapshot;
}

/// Implements [`Probe`] for a generated type: `impl_probe!(Type);` (the type must be
/// in scope; requires `mod common;` at the crate root).
#[macro_export]
macro_rules! impl_probe {
    ($ty:ty) => {
        impl $crate::common::Probe for $ty {
            fn type_name() -> &'static str {
                stringify!($ty)
            }
            fn flags() -> $crate::common::Flags {
                #[allow(unused_imports)]
                use ::hz3::Config as _;
                $crate::common::Flags {
                    s110_meta: <$ty>::S110_META,
                    free_fast: <$ty>::FREE_FAST,
                    ptag: <$ty>::PTAG,
                    stats: <$ty>::STATS,
                    failfast: <$ty>::FAILFAST,
                    shards: <$ty>::SHARDS,
                    arena_size: <$ty>::ARENA_SIZE,
                    purge: <$ty>::PURGE,
                }
            }
            unsafe fn probe_usable(p: *mut u8) -> Option<usize> {
                // SAFETY: forwarded contract (see `Probe::probe_usable`).
                unsafe { <$ty>::usable_size(p as _) }
            }
            fn probe_stats() -> $crate::common::StatsSnapshot {
                <$ty>::stats()
            }
        }
    };
}

/// Stamps the generic suite over one allocator type: `stamp_suite!(modname, Type);`
/// declares `mod modname` holding a `static` of the type and one `#[test]` per check.
/// Requires `mod common;` at the crate root (with `#[macro_use]`).
#[macro_export]
macro_rules! stamp_suite {
    ($modname:ident, $ty:ty) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common as c;

            static A: $ty = <$ty>::new();

            $crate::impl_probe!($ty);

            #[test]
            fn flags_are_consistent() {
                c::flags_are_consistent(&A)
            }
            #[test]
            fn random_single_thread() {
                c::random_single_thread(&A)
            }
            #[test]
            fn random_multi_thread() {
                c::random_multi_thread(&A)
            }
            #[test]
            fn producer_consumer() {
                c::producer_consumer(&A)
            }
            #[test]
            fn ring_of_four() {
                c::ring_of_four(&A)
            }
            #[test]
            fn thread_waves() {
                c::thread_waves(&A)
            }
            #[test]
            fn many_live_threads() {
                c::many_live_threads(&A)
            }
            #[test]
            fn tls_destructor_frees() {
                c::tls_destructor_frees(&A)
            }
            #[test]
            fn realloc_chain_big() {
                c::realloc_chain_big(&A)
            }
            #[test]
            fn realloc_small_steps() {
                c::realloc_small_steps(&A)
            }
            #[test]
            fn realloc_aligned() {
                c::realloc_aligned(&A)
            }
            #[test]
            fn alignment_sweep() {
                c::alignment_sweep(&A)
            }
            #[test]
            fn huge_alignment() {
                c::huge_alignment(&A)
            }
            #[test]
            fn impossible_sizes() {
                c::impossible_sizes(&A)
            }
            #[test]
            fn zeroed_after_dirty() {
                c::zeroed_after_dirty(&A)
            }
            #[test]
            fn no_overlap_across_classes() {
                c::no_overlap_across_classes(&A)
            }
            #[test]
            fn bulk_cycles() {
                c::bulk_cycles(&A)
            }
            #[test]
            fn usable_size_sweep() {
                c::usable_size_sweep(&A)
            }
            #[test]
            fn usable_size_foreign() {
                c::usable_size_foreign(&A)
            }
            #[test]
            fn stats_lower_bounds() {
                c::stats_lower_bounds(&A)
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic, seedable, good enough for workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// Small 1..=2048 (88%), medium 2049..=64 KiB (10.5%), large up to 1 MiB (1.5%).
pub fn random_size(rng: &mut Rng) -> usize {
    let r = rng.below(1000);
    if r < 880 {
        rng.range(1, 2048)
    } else if r < 985 {
        rng.range(2049, 64 * KIB)
    } else {
        rng.range(64 * KIB + 1, MIB)
    }
}

/// Mostly the natural 16 (or 8), sometimes an over-aligned request up to 4 KiB.
pub fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=45 => 8,
        46..=91 => 16,
        _ => 1 << rng.range(5, 12),
    }
}

// ---------------------------------------------------------------------------
// Content patterns
// ---------------------------------------------------------------------------

/// Blocks up to this size are patterned in full.
pub const DENSE_LIMIT: usize = 16 * KIB;

/// The seed of a block: its address and size.
pub fn seed_of(addr: usize, size: usize) -> usize {
    addr ^ size.rotate_left(40)
}

/// The pattern of the `i`-th 8-byte word of a block with seed `seed`.
#[inline]
pub fn word_pat(seed: usize, i: usize) -> u64 {
    (seed as u64).rotate_left(17)
        ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ 0xA5A5_5A5A_C3C3_3C3C
}

/// The pattern of byte `i` of a block's tail (bytes past the last full word).
#[inline]
pub fn byte_pat(seed: usize, i: usize) -> u8 {
    ((seed >> 4) as u8) ^ (i as u8) ^ ((i >> 8) as u8).rotate_left(3) ^ 0x5A
}

/// Calls `f` with the index of every patterned word of a `size`-byte block.
fn for_each_word(size: usize, dense: bool, mut f: impl FnMut(usize)) {
    let nw = size / 8;
    if dense || size <= DENSE_LIMIT {
        (0..nw).for_each(f);
        return;
    }
    // size > DENSE_LIMIT, so nw > 128.
    (0..64).for_each(&mut f);
    (64..nw - 64).step_by(32).for_each(&mut f);
    (nw - 64..nw).for_each(f);
}

/// Writes the pattern of seed `seed` into `[p, p+size)`.
///
/// # Safety
/// `[p, p+size)` is writable memory owned by the caller.
pub unsafe fn fill(p: *mut u8, size: usize, seed: usize, dense: bool) {
    let w = p as *mut u64;
    // SAFETY: every index is below size/8, so each word lies inside [p, p+size).
    for_each_word(size, dense, |i| unsafe {
        w.add(i).write_unaligned(word_pat(seed, i))
    });
    for i in size / 8 * 8..size {
        // SAFETY: i < size.
        unsafe { p.add(i).write(byte_pat(seed, i)) };
    }
}

/// Checks the pattern of a `size`-byte block with seed `seed`, restricted to its
/// first `limit` bytes (a realloc keeps only a prefix).
///
/// # Safety
/// `[p, p+min(size, limit))` is readable memory owned by the caller.
pub unsafe fn check_prefix(
    p: *const u8,
    size: usize,
    seed: usize,
    dense: bool,
    limit: usize,
) -> Result<(), String> {
    let w = p as *const u64;
    let mut bad: Option<(usize, u64, u64)> = None;
    for_each_word(size, dense, |i| {
        if bad.is_none() && (i + 1) * 8 <= limit {
            // SAFETY: the word lies inside the first `limit` bytes and inside the block.
            let got = unsafe { w.add(i).read_unaligned() };
            let want = word_pat(seed, i);
            if got != want {
                bad = Some((i * 8, got, want));
            }
        }
    });
    if let Some((off, got, want)) = bad {
        return Err(format!(
            "pattern mismatch in block {p:p} (size {size}) at offset {off}: got {got:#018x}, want {want:#018x}"
        ));
    }
    for i in size / 8 * 8..size.min(limit) {
        // SAFETY: i < min(size, limit).
        let got = unsafe { p.add(i).read() };
        let want = byte_pat(seed, i);
        if got != want {
            return Err(format!(
                "pattern mismatch in block {p:p} (size {size}) at tail offset {i}: got {got:#04x}, want {want:#04x}"
            ));
        }
    }
    Ok(())
}

/// Index of the first non-zero byte of `[p, p+size)`, if any.
///
/// # Safety
/// `[p, p+size)` is readable.
pub unsafe fn first_nonzero(p: *const u8, size: usize) -> Option<usize> {
    let nw = size / 8;
    let w = p as *const u64;
    for i in 0..nw {
        // SAFETY: word i lies inside [p, p+size).
        if unsafe { w.add(i).read_unaligned() } != 0 {
            for j in i * 8..i * 8 + 8 {
                // SAFETY: j < size.
                if unsafe { p.add(j).read() } != 0 {
                    return Some(j);
                }
            }
        }
    }
    // SAFETY: j < size.
    (nw * 8..size).find(|&j| unsafe { p.add(j).read() } != 0)
}

// ---------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------

/// One live allocation of `A`, exclusively owned, patterned, movable between
/// threads. Not `Clone`: `free` consumes it, so a block is freed at most once.
/// (Dropping a `Block` without `free` leaks it; tests only do that on failure.)
pub struct Block<A: GlobalAlloc + Sync + 'static> {
    a: &'static A,
    addr: usize,
    size: usize,
    align: usize,
    seed: usize,
    dense: bool,
}

impl<A: GlobalAlloc + Sync + 'static> Block<A> {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }
    pub fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn align(&self) -> usize {
        self.align
    }

    /// Allocates `size` bytes aligned to `align` (size > 0), checks the alignment and
    /// writes the pattern. `zeroed` uses `alloc_zeroed` and checks every byte is 0
    /// first. Returns `None` on a null result.
    pub fn try_new(
        a: &'static A,
        size: usize,
        align: usize,
        zeroed: bool,
        dense: bool,
    ) -> Option<Self> {
        assert!(size > 0);
        let layout = Layout::from_size_align(size, align).expect("test layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe {
            if zeroed {
                a.alloc_zeroed(layout)
            } else {
                a.alloc(layout)
            }
        };
        if p.is_null() {
            return None;
        }
        assert_eq!(
            p as usize % align,
            0,
            "alloc(size {size}, align {align}) returned misaligned {p:p}"
        );
        if zeroed {
            // SAFETY: the allocator just handed us [p, p+size).
            if let Some(off) = unsafe { first_nonzero(p, size) } {
                panic!("alloc_zeroed(size {size}, align {align}) = {p:p}: byte {off} is not zero");
            }
        }
        let seed = seed_of(p as usize, size);
        // SAFETY: the allocator just handed us [p, p+size).
        unsafe { fill(p, size, seed, dense) };
        Some(Block {
            a,
            addr: p as usize,
            size,
            align,
            seed,
            dense,
        })
    }

    /// `try_new`, panicking on null.
    pub fn new(a: &'static A, size: usize, align: usize) -> Self {
        Self::try_new(a, size, align, false, false)
            .unwrap_or_else(|| panic!("alloc(size {size}, align {align}) returned null"))
    }

    /// A block whose pattern covers every byte whatever its size.
    pub fn new_dense(a: &'static A, size: usize, align: usize) -> Self {
        Self::try_new(a, size, align, false, true)
            .unwrap_or_else(|| panic!("alloc(size {size}, align {align}) returned null"))
    }

    /// `alloc_zeroed`, checked zero, then patterned.
    pub fn new_zeroed(a: &'static A, size: usize, align: usize) -> Self {
        Self::try_new(a, size, align, true, false)
            .unwrap_or_else(|| panic!("alloc_zeroed(size {size}, align {align}) returned null"))
    }

    /// Checks the block's pattern; `Err` describes the first mismatch.
    pub fn check(&self) -> Result<(), String> {
        // SAFETY: we own [addr, addr+size).
        unsafe { check_prefix(self.ptr(), self.size, self.seed, self.dense, self.size) }
    }

    /// Checks the block's pattern, panicking with `ctx` on a mismatch.
    pub fn verify(&self, ctx: &str) {
        if let Err(e) = self.check() {
            panic!("{ctx}: {e}");
        }
    }

    /// Overwrites the whole block with `byte` (the pattern is lost; `free_unchecked`).
    pub fn scribble(&mut self, byte: u8) {
        // SAFETY: we own [addr, addr+size).
        unsafe { core::ptr::write_bytes(self.ptr(), byte, self.size) };
    }

    /// Verifies the pattern and frees the block.
    pub fn free(self, ctx: &str) {
        self.verify(ctx);
        self.free_unchecked();
    }

    /// Frees without checking the content; returns whether the pattern was intact.
    pub fn try_free(self) -> Result<(), String> {
        let r = self.check();
        self.free_unchecked();
        r
    }

    /// Frees the block without looking at its content.
    pub fn free_unchecked(self) {
        let layout = self.layout();
        // SAFETY: the block was allocated by `self.a` with this layout and is freed
        // exactly once (`self` is consumed).
        unsafe { self.a.dealloc(self.ptr(), layout) };
    }

    /// Reallocates to `new_size`: checks the pattern before, checks the alignment and
    /// the preserved prefix after, then re-patterns the whole new block. Returns
    /// `Err(self)` (still valid) when the allocator returned null.
    pub fn try_realloc(self, new_size: usize, ctx: &str) -> Result<Self, Self> {
        assert!(new_size > 0);
        assert!(
            Layout::from_size_align(new_size, self.align).is_ok(),
            "realloc size overflows isize"
        );
        self.verify(ctx);
        let layout = self.layout();
        // SAFETY: block allocated by `self.a` with `layout`; new_size > 0 and, rounded
        // up to the alignment, does not overflow isize (checked above).
        let q = unsafe { self.a.realloc(self.ptr(), layout, new_size) };
        if q.is_null() {
            // The old block must be intact.
            self.verify(&format!("{ctx}: block after failed realloc to {new_size}"));
            return Err(self);
        }
        assert_eq!(
            q as usize % self.align,
            0,
            "{ctx}: realloc({:#x}, size {} -> {new_size}, align {}) returned misaligned {q:p}",
            self.addr,
            self.size,
            self.align
        );
        let keep = self.size.min(new_size);
        // SAFETY: the allocator handed us [q, q+new_size) and keep <= new_size.
        if let Err(e) = unsafe { check_prefix(q, self.size, self.seed, self.dense, keep) } {
            panic!(
                "{ctx}: realloc {} -> {new_size} lost content: {e}",
                self.size
            );
        }
        let seed = seed_of(q as usize, new_size);
        // SAFETY: the allocator handed us [q, q+new_size).
        unsafe { fill(q, new_size, seed, self.dense) };
        Ok(Block {
            a: self.a,
            addr: q as usize,
            size: new_size,
            align: self.align,
            seed,
            dense: self.dense,
        })
    }

    /// `try_realloc`, panicking on null.
    pub fn realloc(self, new_size: usize, ctx: &str) -> Self {
        let (old, align) = (self.size, self.align);
        match self.try_realloc(new_size, ctx) {
            Ok(b) => b,
            Err(b) => {
                b.free(ctx);
                panic!("{ctx}: realloc(size {old} -> {new_size}, align {align}) returned null");
            }
        }
    }
}

/// Frees every block (checking each), in a random order.
pub fn free_all<A: GlobalAlloc + Sync>(mut v: Vec<Block<A>>, rng: &mut Rng, ctx: &str) {
    while !v.is_empty() {
        let i = rng.below(v.len());
        v.swap_remove(i).free(ctx);
    }
}

fn ctx<A: Probe>(what: &str) -> String {
    format!("{} / {what}", A::type_name())
}

fn snapshot_delta(before: &StatsSnapshot, after: &StatsSnapshot) -> StatsSnapshot {
    let mut d = *after;
    macro_rules! sub {
        ($($f:ident),*) => {$(
            assert!(after.$f >= before.$f, "counter {} went backwards: {} -> {}",
                    stringify!($f), before.$f, after.$f);
            d.$f = after.$f - before.$f;
        )*};
    }
    sub!(
        calls,
        seg_hit,
        seg_miss,
        meta_hit,
        meta_zero,
        fallback_ptag,
        local,
        remote,
        ptag_lookups,
        ptag_hit,
        ptag_miss,
        ptag_decode_fail,
        allocs,
        refills,
        flushes,
        remote_batches,
        large_allocs,
        invalid_frees
    );
    d
}

/// `after - before`, field by field, asserting every counter is monotone.
pub fn delta(before: &StatsSnapshot, after: &StatsSnapshot) -> StatsSnapshot {
    snapshot_delta(before, after)
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// The flags obey the macro's rules (invalid combinations cannot be declared).
pub fn flags_are_consistent<A: Probe>(_a: &'static A) {
    let f = A::flags();
    if f.free_fast {
        assert!(
            f.s110_meta,
            "{}: free_fast without s110_meta",
            A::type_name()
        );
    }
    if f.ptag == Ptag::Late {
        assert!(
            f.s110_meta,
            "{}: ptag late without s110_meta",
            A::type_name()
        );
    }
    assert!(f.shards >= 1);
    assert!(
        f.arena_size >= 1 << 30 && f.arena_size.is_multiple_of(1 << 30),
        "arena_size {:#x}",
        f.arena_size
    );
    if !f.stats {
        assert_eq!(
            A::probe_stats(),
            StatsSnapshot::default(),
            "{}: stats off but counters move",
            A::type_name()
        );
    }
}

/// One thread's random workload over `slots` live slots for `ops` operations:
/// an empty slot gets a new block (1 in 8 through `alloc_zeroed`); a full slot is
/// freed, or (1 in 10) reallocated to a new random size.
pub fn random_ops<A: Probe>(a: &'static A, seed: u64, slots: usize, ops: usize) {
    let cx = ctx::<A>(&format!("random_ops seed {seed}"));
    let mut rng = Rng::new(seed);
    let mut live: Vec<Option<Block<A>>> = (0..slots).map(|_| None).collect();
    for _ in 0..ops {
        let i = rng.below(slots);
        match live[i].take() {
            Some(b) => {
                if rng.below(10) == 0 {
                    let n = random_size(&mut rng);
                    live[i] = Some(b.realloc(n, &cx));
                } else {
                    b.free(&cx);
                }
            }
            None => {
                let size = random_size(&mut rng);
                let align = random_align(&mut rng);
                live[i] = Some(if rng.below(8) == 0 {
                    Block::new_zeroed(a, size, align)
                } else {
                    Block::new(a, size, align)
                });
            }
        }
    }
    let rest: Vec<_> = live.into_iter().flatten().collect();
    free_all(rest, &mut rng, &cx);
}

pub fn random_single_thread<A: Probe>(a: &'static A) {
    random_ops(a, 1, 2000, 200_000);
}

pub fn random_multi_thread<A: Probe>(a: &'static A) {
    let hs: Vec<_> = (0..4u64)
        .map(|t| thread::spawn(move || random_ops(a, 100 + t, 2000, 100_000)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// Producer allocates and patterns batches of blocks; consumer verifies and frees
/// them (every free is cross-thread); two rounds, batches of 1..64 blocks.
pub fn producer_consumer<A: Probe>(a: &'static A) {
    const BLOCKS: usize = 30_000;
    let cx = ctx::<A>("producer_consumer");
    for round in 0..2u64 {
        let (tx, rx) = mpsc::sync_channel::<Vec<Block<A>>>(64);
        let producer = thread::spawn(move || {
            let mut rng = Rng::new(7 + round);
            let mut sent = 0;
            while sent < BLOCKS {
                let n = rng.range(1, 64).min(BLOCKS - sent);
                let batch: Vec<_> = (0..n)
                    .map(|_| {
                        let size = if rng.below(50) == 0 {
                            rng.range(2049, 256 * KIB)
                        } else {
                            rng.range(1, 2048)
                        };
                        Block::new(a, size, 16)
                    })
                    .collect();
                sent += n;
                tx.send(batch).unwrap();
            }
        });
        let cx2 = cx.clone();
        let consumer = thread::spawn(move || {
            let mut got = 0;
            for batch in rx {
                for b in batch {
                    got += 1;
                    b.free(&cx2);
                }
            }
            got
        });
        producer.join().unwrap();
        assert_eq!(
            consumer.join().unwrap(),
            BLOCKS,
            "{cx}: consumer lost blocks"
        );
    }
}

/// Four threads in a ring: each allocates blocks and hands them to the next thread,
/// which verifies and frees them (small, medium and up-to-128 KiB remote frees).
pub fn ring_of_four<A: Probe>(a: &'static A) {
    const N: usize = 4;
    const PER_THREAD: usize = 12_000;
    let cx = ctx::<A>("ring_of_four");
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..N).map(|_| mpsc::channel::<Block<A>>()).unzip();
    let mut txs: Vec<Option<mpsc::Sender<Block<A>>>> = txs.into_iter().map(Some).collect();
    let mut hs = Vec::new();
    for (i, rx) in rxs.into_iter().enumerate() {
        let tx = txs[(i + 1) % N].take().unwrap();
        let cx = cx.clone();
        hs.push(thread::spawn(move || {
            let mut rng = Rng::new(1000 + i as u64);
            let mut freed = 0usize;
            for _ in 0..PER_THREAD {
                let size = match rng.below(100) {
                    0..=79 => rng.range(1, 2048),
                    80..=97 => rng.range(2049, 64 * KIB),
                    _ => rng.range(64 * KIB + 1, 128 * KIB),
                };
                tx.send(Block::new(a, size, 16)).unwrap();
                while let Ok(b) = rx.try_recv() {
                    b.free(&cx);
                    freed += 1;
                }
            }
            drop(tx);
            for b in rx {
                b.free(&cx);
                freed += 1;
            }
            freed
        }));
    }
    for h in hs {
        assert_eq!(
            h.join().unwrap(),
            PER_THREAD,
            "{cx}: a ring thread freed the wrong number of blocks"
        );
    }
}

/// 10 waves of 24 threads (240 threads in all). Each thread frees blocks left by
/// the previous wave (their owners have exited), allocates 300 blocks, frees two
/// thirds itself and returns the rest; the main thread frees part of those while
/// the next wave runs and the rest after it.
pub fn thread_waves<A: Probe>(a: &'static A) {
    const WAVES: usize = 10;
    const THREADS: usize = 24;
    const PER: usize = 300;
    let cx = ctx::<A>("thread_waves");
    let mut rng = Rng::new(42);
    let mut leftovers: Vec<Block<A>> = Vec::new();
    for wave in 0..WAVES {
        // Hand each new thread a share of the previous wave's blocks.
        let mut inherit: Vec<Vec<Block<A>>> = (0..THREADS).map(|_| Vec::new()).collect();
        let mut keep_for_main = Vec::new();
        for (k, b) in leftovers.drain(..).enumerate() {
            if k % 3 == 0 {
                keep_for_main.push(b);
            } else {
                inherit[k % THREADS].push(b);
            }
        }
        let hs: Vec<_> = inherit
            .into_iter()
            .enumerate()
            .map(|(t, inh)| {
                let cx = cx.clone();
                thread::spawn(move || {
                    let mut rng = Rng::new((wave * 1000 + t) as u64);
                    for b in inh {
                        b.free(&cx);
                    }
                    let mut mine: Vec<Block<A>> = (0..PER)
                        .map(|_| {
                            let size = if rng.below(20) == 0 {
                                rng.range(2049, 96 * KIB)
                            } else {
                                rng.range(1, 2048)
                            };
                            Block::new(a, size, 16)
                        })
                        .collect();
                    let mut out = Vec::new();
                    while !mine.is_empty() {
                        let b = mine.swap_remove(rng.below(mine.len()));
                        if out.len() < PER / 3 {
                            out.push(b);
                        } else {
                            b.free(&cx);
                        }
                    }
                    out
                })
            })
            .collect();
        // Free blocks of the previous wave while this wave's threads live.
        free_all(keep_for_main, &mut rng, &cx);
        for h in hs {
            let mut out = h.join().unwrap();
            // Half freed by the main thread right after the owner exited.
            let half = out.len() / 2;
            for b in out.drain(..half) {
                b.free(&cx);
            }
            leftovers.extend(out);
        }
    }
    free_all(leftovers, &mut rng, &cx);
}

/// 100 threads alive at the same time (more than hz3-C's 63 owner ids and more
/// than any shard count of the matrix), each holding blocks across two barriers and
/// freeing its neighbour's blocks in between.
pub fn many_live_threads<A: Probe>(a: &'static A) {
    const T: usize = 100;
    const PER: usize = 40;
    let cx = ctx::<A>("many_live_threads");
    let barrier = Arc::new(Barrier::new(T));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..T).map(|_| mpsc::channel::<Vec<Block<A>>>()).unzip();
    let mut hs = Vec::new();
    for (i, rx) in rxs.into_iter().enumerate() {
        let tx = txs[(i + 1) % T].clone();
        let barrier = barrier.clone();
        let cx = cx.clone();
        let h = thread::Builder::new()
            .stack_size(256 * KIB)
            .spawn(move || {
                let mut rng = Rng::new(5000 + i as u64);
                let mut mine: Vec<Block<A>> = (0..PER)
                    .map(|_| {
                        Block::new(
                            a,
                            rng.range(1, if i % 10 == 0 { 20 * KIB } else { 2048 }),
                            16,
                        )
                    })
                    .collect();
                barrier.wait(); // all T threads are live and hold blocks
                for b in &mine {
                    b.verify(&cx);
                }
                let give: Vec<_> = mine.drain(PER / 2..).collect();
                tx.send(give).unwrap();
                let got = rx.recv().unwrap();
                barrier.wait(); // still all live
                free_all(got, &mut rng, &cx);
                free_all(mine, &mut rng, &cx);
            })
            .unwrap();
        hs.push(h);
    }
    drop(txs);
    for h in hs {
        h.join().unwrap();
    }
}

struct Deferred(RefCell<Vec<Box<dyn FnOnce()>>>);
impl Drop for Deferred {
    fn drop(&mut self) {
        for f in self.0.take() {
            f();
        }
    }
}
thread_local! {
    static DEFERRED: Deferred = const { Deferred(RefCell::new(Vec::new())) };
}

/// Where the exit-time job of [`tls_destructor_frees`] is registered.
#[derive(Clone, Copy, Debug)]
enum ExitHook {
    /// A Rust `thread_local!` destructor registered before the thread's first
    /// allocation.
    RustTlsFirst,
    /// A Rust `thread_local!` destructor registered after it.
    RustTlsAfter,
    /// A pthread key created after the engine's own thread-exit key: glibc runs key
    /// destructors in key order, so this one runs after the engine tore the
    /// thread's cache down — a free (and an allocation) arriving after teardown.
    PthreadKeyAfterEngine,
}

extern "C" fn run_exit_job(p: *mut libc::c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: the only non-null value ever stored under this key is a
    // `Box<Box<dyn FnOnce()>>` leaked with `Box::into_raw` in
    // `tls_destructor_frees`, and glibc hands each stored value to the destructor once.
    let job: Box<Box<dyn FnOnce()>> = unsafe { Box::from_raw(p.cast()) };
    job();
}

/// Frees and allocations from thread-exit hooks (Rust TLS destructors before and
/// after the thread's first allocation, and a pthread-key destructor that runs
/// after the engine's own teardown), of blocks allocated by the exiting thread and
/// by another thread; the allocator keeps working afterwards.
pub fn tls_destructor_frees<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("tls_destructor_frees");
    for hook in [
        ExitHook::RustTlsFirst,
        ExitHook::RustTlsAfter,
        ExitHook::PthreadKeyAfterEngine,
    ] {
        let ok = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let foreign: Vec<Block<A>> = (0..20).map(|k| Block::new(a, 16 + 100 * k, 16)).collect();
        let mut key: libc::pthread_key_t = 0;
        if let ExitHook::PthreadKeyAfterEngine = hook {
            // The engine registers its thread-exit key on first use (done above),
            // so this key comes after it.
            // SAFETY: `key` is a valid out-pointer; the destructor accepts any value
            // stored under the key (see `run_exit_job`).
            let rc = unsafe { libc::pthread_key_create(&mut key, Some(run_exit_job)) };
            assert_eq!(rc, 0, "pthread_key_create");
        }
        let (ok2, errors2) = (ok.clone(), errors.clone());
        thread::spawn(move || {
            if let ExitHook::RustTlsFirst = hook {
                DEFERRED.with(|_| {});
            }
            let mut mine: Vec<Block<A>> = (0..50).map(|k| Block::new(a, 8 + 40 * k, 16)).collect();
            mine.push(Block::new(a, 40 * KIB, 16));
            mine.push(Block::new(a, 300 * KIB, 16));
            mine.extend(foreign);
            let job = move || {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    for b in mine {
                        b.try_free()?;
                    }
                    // Allocating from an exit hook must work too.
                    let extra: Vec<_> = (1..=30).map(|k| Block::new(a, 24 * k, 16)).collect();
                    for b in extra {
                        b.try_free()?;
                    }
                    Ok::<(), String>(())
                }));
                match r {
                    Ok(Ok(())) => {
                        ok2.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(e)) => errors2.lock().unwrap().push(e),
                    Err(_) => errors2.lock().unwrap().push("panic in exit hook".into()),
                }
            };
            match hook {
                ExitHook::RustTlsFirst | ExitHook::RustTlsAfter => {
                    DEFERRED.with(|d| d.0.borrow_mut().push(Box::new(job)))
                }
                ExitHook::PthreadKeyAfterEngine => {
                    let boxed: Box<Box<dyn FnOnce()>> = Box::new(Box::new(job));
                    // SAFETY: `key` is a live key created above; the stored value is
                    // reclaimed by `run_exit_job`.
                    let rc = unsafe { libc::pthread_setspecific(key, Box::into_raw(boxed).cast()) };
                    assert_eq!(rc, 0, "pthread_setspecific");
                }
            }
        })
        .join()
        .unwrap();
        if let ExitHook::PthreadKeyAfterEngine = hook {
            // SAFETY: the key was created above and no thread uses it any more.
            unsafe { libc::pthread_key_delete(key) };
        }
        let errs = errors.lock().unwrap();
        assert!(errs.is_empty(), "{cx} ({hook:?}): {errs:?}");
        assert_eq!(
            ok.load(Ordering::SeqCst),
            1,
            "{cx} ({hook:?}): the exit hook did not run to the end"
        );
        // The allocator still works on this thread and on new ones.
        Block::new(a, 1000, 16).free(&cx);
        thread::spawn(move || Block::new(a, 3000, 16).free("after exit hooks"))
            .join()
            .unwrap();
    }
}

/// Grows one block from 1 byte to 4 MiB by x1.5 steps and shrinks it back, every
/// byte patterned and checked at each step.
pub fn realloc_chain_big<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("realloc_chain_big");
    let mut b = Block::new_dense(a, 1, 16);
    while b.size() < 4 * MIB {
        let n = (b.size() * 3 / 2).max(b.size() + 1).min(4 * MIB);
        b = b.realloc(n, &cx);
    }
    while b.size() > 1 {
        let n = (b.size() * 2 / 3).max(1);
        b = b.realloc(n, &cx);
    }
    b.free(&cx);
}

/// 16 -> 4096 by +16 and back by -16, two interleaved blocks (so in-place growth
/// and moves both happen), content checked at each step.
pub fn realloc_small_steps<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("realloc_small_steps");
    let mut x = Block::new_dense(a, 16, 16);
    let mut y = Block::new_dense(a, 16, 8);
    for n in (32..=4096).step_by(16) {
        x = x.realloc(n, &cx);
        y = y.realloc(n - 3, &cx);
    }
    for n in (16..4096).rev().step_by(16) {
        x = x.realloc(n, &cx);
        y = y.realloc(n + 1, &cx);
    }
    x.free(&cx);
    y.free(&cx);
}

/// Realloc keeps over-aligned blocks aligned across small, medium and large sizes.
pub fn realloc_aligned<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("realloc_aligned");
    for align in [32, 64, 256, 4096, 64 * KIB] {
        let mut b = Block::new_dense(a, 24, align);
        while b.size() < 512 * KIB {
            let n = b.size() * 2 + 8;
            b = b.realloc(n, &cx);
        }
        while b.size() > 24 {
            let n = b.size() / 3;
            b = b.realloc(n.max(24), &cx);
        }
        b.free(&cx);
    }
}

/// Every power-of-two alignment 16..=64 KiB x sizes {1, 8, align-1, align, align+1,
/// 3*align, 100000}, alloc and alloc_zeroed alternately, all live at once, checked
/// for alignment, zeroing and independence; three rounds to exercise reuse.
pub fn alignment_sweep<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("alignment_sweep");
    let mut rng = Rng::new(3);
    let mut k = 0usize;
    for _round in 0..3 {
        let mut live = Vec::new();
        for shift in 4..=16 {
            let align = 1usize << shift;
            for size in [1, 8, align - 1, align, align + 1, 3 * align, 100_000] {
                k += 1;
                let b = if k.is_multiple_of(2) {
                    Block::new_zeroed(a, size, align)
                } else {
                    Block::new(a, size, align)
                };
                // SAFETY: b is a live block of A.
                if let Some(u) = unsafe { A::probe_usable(b.ptr()) } {
                    assert!(
                        u >= size,
                        "{cx}: usable_size {u} < size {size} (align {align})"
                    );
                }
                live.push(b);
            }
        }
        for b in &live {
            b.verify(&cx);
        }
        free_all(live, &mut rng, &cx);
    }
}

/// Alignments above the segment size (128 KiB .. 2 MiB) are honoured.
pub fn huge_alignment<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("huge_alignment");
    let mut live = Vec::new();
    for shift in 17..=21 {
        let align = 1usize << shift;
        for size in [1, 4096, align] {
            live.push(Block::new(a, size, align));
        }
    }
    let mut rng = Rng::new(9);
    free_all(live, &mut rng, &cx);
}

/// Requests that cannot be satisfied return null without crashing, realloc to an
/// impossible size leaves the old block intact, and the allocator works afterwards.
pub fn impossible_sizes<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("impossible_sizes");
    let layouts = [
        (isize::MAX as usize - 4095, 4096),
        (isize::MAX as usize - 15, 16),
        (1usize << 47, 16),
        ((1usize << 47) + (1 << 20), 2 * MIB),
        (1usize << 62, 8),
    ];
    let keep = Block::new(a, 100, 16);
    for (size, align) in layouts {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size; a valid Layout.
        let p = unsafe { a.alloc(l) };
        assert!(
            p.is_null(),
            "{cx}: alloc({size:#x}, {align}) returned {p:p}"
        );
        // SAFETY: as above.
        let p = unsafe { a.alloc_zeroed(l) };
        assert!(
            p.is_null(),
            "{cx}: alloc_zeroed({size:#x}, {align}) returned {p:p}"
        );
    }
    for start in [64, 5000, 200 * KIB] {
        let mut b = Block::new(a, start, 16);
        for huge in [1usize << 47, isize::MAX as usize - 15] {
            b = match b.try_realloc(huge, &cx) {
                Ok(big) => {
                    big.free_unchecked();
                    panic!("{cx}: realloc({start} -> {huge:#x}) succeeded");
                }
                Err(b) => b, // checked intact by try_realloc
            };
        }
        b.free(&cx);
    }
    keep.free(&cx);
    let mut rng = Rng::new(11);
    let v: Vec<_> = (0..200)
        .map(|_| Block::new(a, random_size(&mut rng), 16))
        .collect();
    free_all(v, &mut rng, &cx);
}

/// Blocks freed dirty (every byte 0xFF) and then requested again through
/// `alloc_zeroed` come back all zero: reuse must not leak old contents. Rounds 2-3
/// free the dirty blocks from another thread (remote path).
pub fn zeroed_after_dirty<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("zeroed_after_dirty");
    let sizes = [
        16,
        48,
        100,
        256,
        1000,
        2048,
        2049,
        3000,
        4096,
        5000,
        16 * KIB,
        40_000,
        64 * KIB,
        70_000,
        300 * KIB,
        MIB,
    ];
    let mut rng = Rng::new(13);
    for round in 0..4 {
        let mut dirty = Vec::new();
        for &s in &sizes {
            let n = if s <= 64 * KIB { 24 } else { 3 };
            for _ in 0..n {
                let mut b = Block::new(a, s, 16);
                b.scribble(0xFF);
                dirty.push(b);
            }
        }
        if round < 2 {
            while !dirty.is_empty() {
                dirty.swap_remove(rng.below(dirty.len())).free_unchecked();
            }
        } else {
            thread::spawn(move || {
                for b in dirty {
                    b.free_unchecked();
                }
            })
            .join()
            .unwrap();
        }
        let mut clean = Vec::new();
        for &s in &sizes {
            let n = if s <= 64 * KIB { 24 } else { 3 };
            for _ in 0..n {
                clean.push(Block::new_zeroed(a, s, 16)); // checks every byte is zero
            }
        }
        free_all(clean, &mut rng, &cx);
    }
    // Over-aligned zeroed requests too.
    for align in [64, 4096] {
        let mut dirty: Vec<_> = (0..32).map(|_| Block::new(a, 3 * align, align)).collect();
        for b in &mut dirty {
            b.scribble(0xEE);
        }
        dirty.into_iter().for_each(Block::free_unchecked);
        let clean: Vec<_> = (0..32)
            .map(|_| Block::new_zeroed(a, 3 * align, align))
            .collect();
        free_all(clean, &mut rng, &cx);
    }
}

/// Sizes on and around every class boundary, all live at once: no two blocks
/// overlap (exact range check) and every block keeps its content.
pub fn no_overlap_across_classes<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("no_overlap_across_classes");
    let mut sizes = Vec::new();
    for k in 1..=128 {
        let s = 16 * k;
        sizes.extend([s - 1, s, s + 1]);
    }
    for s in [2304, 2816, 3328, 3840, 4095, 4096, 4097] {
        sizes.extend([s - 1, s, s + 1]);
    }
    for k in 2..=16 {
        let s = 4096 * k;
        sizes.extend([s - 1, s, s + 1]);
    }
    sizes.extend([128 * KIB, 256 * KIB + 3, MIB - 1, MIB, MIB + 1, 2 * MIB]);
    let mut live = Vec::new();
    for _ in 0..3 {
        for &s in &sizes {
            if s > 0 {
                live.push(Block::new(a, s, 16));
            }
        }
    }
    let mut ranges: Vec<(usize, usize)> =
        live.iter().map(|b| (b.ptr() as usize, b.size())).collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{cx}: blocks overlap: [{:#x}, +{}) and [{:#x}, +{})",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
    let mut rng = Rng::new(17);
    free_all(live, &mut rng, &cx);
}

/// Allocate ~48 MiB (small, medium, large), free it all, three times, once with the
/// frees done by other threads: pages released (or purged) and reused keep working.
pub fn bulk_cycles<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("bulk_cycles");
    let mut rng = Rng::new(19);
    for cycle in 0..3 {
        let mut v = Vec::new();
        for _ in 0..16 * 1024 {
            v.push(Block::new(a, rng.range(512, 1536), 16)); // ~16 MiB small
        }
        for _ in 0..256 {
            v.push(Block::new(a, 64 * KIB, 16)); // 16 MiB medium
        }
        for _ in 0..16 {
            v.push(Block::new(a, MIB, 16)); // 16 MiB large
        }
        if cycle == 1 {
            let halves: Vec<Vec<Block<A>>> = vec![v.split_off(v.len() / 2), v];
            let hs: Vec<_> = halves
                .into_iter()
                .enumerate()
                .map(|(t, h)| {
                    let cx = cx.clone();
                    thread::spawn(move || free_all(h, &mut Rng::new(t as u64), &cx))
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        } else {
            free_all(v, &mut rng, &cx);
        }
    }
}

/// `usable_size` is at least the requested size across small, medium, large and
/// over-aligned blocks, and the whole usable size is writable without disturbing
/// any neighbour.
pub fn usable_size_sweep<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("usable_size_sweep");
    let mut reqs: Vec<(usize, usize)> = (1..=4100).step_by(7).map(|s| (s, 16)).collect();
    reqs.extend((4096..=70_000).step_by(1021).map(|s| (s, 16)));
    reqs.extend([(100_000, 16), (MIB + 5, 16), (3 * MIB, 16)]);
    reqs.extend([(1, 64), (100, 256), (5000, 4096), (10, 64 * KIB)]);
    let mut live = Vec::new();
    for (size, align) in reqs {
        let b = Block::new(a, size, align);
        // SAFETY: b is a live block of A.
        let u = unsafe { A::probe_usable(b.ptr()) }
            .unwrap_or_else(|| panic!("{cx}: usable_size of a live block (size {size}) is None"));
        assert!(u >= size, "{cx}: usable_size {u} < requested {size}");
        // Large blocks may be rounded up to whole 1 MiB slots; anything beyond that is
        // a wrong answer, not a policy.
        assert!(
            u <= (2 * size).max(size + 2 * MIB),
            "{cx}: usable_size {u} absurd for {size}"
        );
        // Pattern the whole usable range, every byte.
        let seed = seed_of(b.ptr() as usize, u);
        // SAFETY: usable_size promises [p, p+u) belongs to the live block.
        unsafe { fill(b.ptr(), u, seed, true) };
        live.push((b, u, seed));
    }
    for (b, u, seed) in live {
        // SAFETY: [p, p+u) belongs to the live block (see above).
        if let Err(e) = unsafe { check_prefix(b.ptr(), u, seed, true, u) } {
            panic!("{cx}: writing the usable size of one block disturbed another: {e}");
        }
        b.free_unchecked(); // its own pattern was overwritten on purpose
    }
}

/// `usable_size` answers `None` for memory the type does not own.
pub fn usable_size_foreign<A: Probe>(a: &'static A) {
    let cx = ctx::<A>("usable_size_foreign");
    static STATIC_WORD: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: plain libc allocation, freed below.
    let m = unsafe { libc::malloc(64) } as *mut u8;
    assert!(!m.is_null());
    let stack = [0u8; 64];
    let boxed = Box::new([0u8; 256]);
    let cases: [(&str, *mut u8); 4] = [
        ("libc::malloc", m),
        ("stack", stack.as_ptr() as *mut u8),
        ("static", &STATIC_WORD as *const AtomicUsize as *mut u8),
        ("Box (system allocator)", boxed.as_ptr() as *mut u8),
    ];
    // Keep our own blocks live so the type's arena is mapped.
    let ours = Block::new(a, 64, 16);
    for (what, p) in cases {
        // SAFETY: usable_size must accept any pointer value and only read its own
        // metadata to decide the pointer is not its own.
        let u = unsafe { A::probe_usable(p) };
        assert_eq!(
            u, None,
            "{cx}: usable_size of a {what} pointer {p:p} is {u:?}"
        );
    }
    ours.free(&cx);
    // SAFETY: m came from libc::malloc above.
    unsafe { libc::free(m as *mut libc::c_void) };
    drop(boxed);
}

/// Counters are shared with the other tests of this type that run in parallel, so
/// only lower bounds hold here: a known sequence on a fresh thread adds at least its
/// own allocations and frees; stats-off types stay all zero.
pub fn stats_lower_bounds<A: Probe>(a: &'static A) {
    const N: usize = 500;
    let cx = ctx::<A>("stats_lower_bounds");
    let f = A::flags();
    let before = A::probe_stats();
    thread::spawn(move || {
        let cx = ctx::<A>("stats_lower_bounds");
        let v: Vec<_> = (0..N)
            .map(|k| Block::new(a, 16 + (k * 16) % 2048, 16))
            .collect();
        for b in v {
            b.free(&cx);
        }
    })
    .join()
    .unwrap();
    let after = A::probe_stats();
    if !f.stats {
        assert_eq!(
            before,
            StatsSnapshot::default(),
            "{cx}: stats off but counters move"
        );
        assert_eq!(
            after,
            StatsSnapshot::default(),
            "{cx}: stats off but counters move"
        );
        return;
    }
    let d = delta(&before, &after);
    let n = N as u64;
    assert!(d.allocs >= n, "{cx}: allocs delta {} < {n}", d.allocs);
    assert!(d.calls >= n, "{cx}: calls delta {} < {n}", d.calls);
    assert!(
        d.local >= n,
        "{cx}: local delta {} < {n} (all frees were local)",
        d.local
    );
    assert!(
        d.refills >= 1,
        "{cx}: a fresh thread allocated {n} blocks without a refill"
    );
    if f.shards == 1 {
        // One owner for every thread: no free of this type, in any test, is remote.
        assert_eq!(
            after.remote, 0,
            "{cx}: shards = 1 but remote frees were counted"
        );
        assert_eq!(
            after.remote_batches, 0,
            "{cx}: shards = 1 but remote batches were published"
        );
    }
    // Every free of the whole matrix run is valid.
    assert_eq!(
        after.invalid_frees, 0,
        "{cx}: invalid_frees counted for valid frees"
    );
    if f.free_fast && f.ptag != Ptag::First {
        // (With ptag: first the tag map routes before the S110 step is tried.)
        assert!(d.meta_hit >= n, "{cx}: meta_hit delta {} < {n}", d.meta_hit);
        assert!(d.seg_hit >= n, "{cx}: seg_hit delta {} < {n}", d.seg_hit);
    }
    if f.ptag == Ptag::First {
        assert!(d.ptag_hit >= n, "{cx}: ptag_hit delta {} < {n}", d.ptag_hit);
        assert!(
            d.ptag_lookups >= n,
            "{cx}: ptag_lookups delta {} < {n}",
            d.ptag_lookups
        );
    }
    if f.ptag == Ptag::Off {
        // Other tests of the type cannot produce tag lookups either.
        assert_eq!(d.ptag_lookups, 0, "{cx}: ptag off but ptag_lookups moved");
        assert_eq!(
            after.ptag_lookups, 0,
            "{cx}: ptag off but ptag_lookups non-zero"
        );
    }
    if !f.s110_meta {
        assert_eq!(
            after.meta_hit + after.meta_zero,
            0,
            "{cx}: s110_meta off but the S110 step ran"
        );
    }
}
