//! Several generated allocator types side by side in one program.
//!
//! Each type runs the same small workload (local and cross-thread frees, a realloc
//! chain) in its own threads, all four at the same time; then the program prints
//! each type's flags and its `stats()` snapshot. The types share nothing: each
//! has its own arena, thread caches and counters.
//!
//! Run: `cargo run --example flag_matrix`

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;
use std::thread;

#[allow(unused_imports)]
use hz3::Config as _;

hz3::hz3_allocator! {
    /// The scale preset: page meta observed, tag map as the fallback route.
    pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;
}
hz3::hz3_allocator! {
    /// S110 fast free: the segment meta routes every free it can.
    pub struct FreeFast<s110_meta: true, free_fast: true, ptag: late, stats: true>;
}
hz3::hz3_allocator! {
    /// Tag map first, no segment meta.
    pub struct TagFirst<s110_meta: false, ptag: first, stats: true, shards: 4>;
}
hz3::hz3_allocator! {
    /// Header routing only, one shard, small arena, no purging.
    pub struct Plain<s110_meta: false, ptag: off, stats: true, shards: 1, arena_gib: 1, purge: false>;
}

static SCALE: Scale = Scale::new();
static FREE_FAST: FreeFast = FreeFast::new();
static TAG_FIRST: TagFirst = TagFirst::new();
static PLAIN: Plain = Plain::new();

/// Allocates, hands half the blocks to another thread to free, frees the rest,
/// and grows one block by realloc. Returns how many frees were done.
fn workload<A: GlobalAlloc + Sync>(a: &'static A) -> usize {
    let (tx, rx) = mpsc::channel::<Vec<(usize, usize)>>();
    let consumer = thread::spawn(move || {
        let mut n = 0;
        for batch in rx {
            for (p, size) in batch {
                let l = Layout::from_size_align(size, 16).unwrap();
                // SAFETY: p was allocated by `a` with layout l and is freed once.
                unsafe { a.dealloc(p as *mut u8, l) };
                n += 1;
            }
        }
        n
    });
    let mut local = 0;
    for round in 0..50 {
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for k in 0..400usize {
            let size = if k % 40 == 0 {
                4096 * (1 + k % 16)
            } else {
                16 + (k * 24 + round) % 2032
            };
            let l = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: p points to `size` writable bytes.
            unsafe { p.write_bytes(k as u8, size) };
            if k % 2 == 0 {
                mine.push((p as usize, size));
            } else {
                theirs.push((p as usize, size));
            }
        }
        tx.send(theirs).unwrap();
        for (p, size) in mine {
            let l = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: p was allocated above with layout l and is freed once.
            unsafe { a.dealloc(p as *mut u8, l) };
            local += 1;
        }
    }
    drop(tx);
    // A realloc chain: 16 bytes to 1 MiB.
    let mut size = 16;
    let mut l = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: non-zero size.
    let mut p = unsafe { a.alloc(l) };
    assert!(!p.is_null());
    while size < 1 << 20 {
        let new = size * 2;
        // SAFETY: p is live with layout l; new is a valid size.
        p = unsafe { a.realloc(p, l, new) };
        assert!(!p.is_null());
        size = new;
        l = Layout::from_size_align(size, 16).unwrap();
    }
    // SAFETY: p is live with layout l.
    unsafe { a.dealloc(p, l) };
    local + 1 + consumer.join().unwrap()
}

macro_rules! report {
    ($ty:ty, $frees:expr) => {{
        let frees = $frees;
        let s = <$ty>::stats();
        println!("{}", stringify!($ty));
        println!(
            "  flags: s110_meta={} free_fast={} ptag={:?} stats={} failfast={} shards={} arena={} GiB purge={}",
            <$ty>::S110_META,
            <$ty>::FREE_FAST,
            <$ty>::PTAG,
            <$ty>::STATS,
            <$ty>::FAILFAST,
            <$ty>::SHARDS,
            <$ty>::ARENA_SIZE >> 30,
            <$ty>::PURGE
        );
        println!("  workload: {frees} frees");
        println!(
            "  free route: calls={} seg_hit={} seg_miss={} meta_hit={} meta_zero={} fallback_ptag={} local={} remote={}",
            s.calls, s.seg_hit, s.seg_miss, s.meta_hit, s.meta_zero, s.fallback_ptag, s.local, s.remote
        );
        println!(
            "  tag map: lookups={} hit={} miss={} decode_fail={}",
            s.ptag_lookups, s.ptag_hit, s.ptag_miss, s.ptag_decode_fail
        );
        println!(
            "  caches: allocs={} refills={} flushes={} remote_batches={} large_allocs={}",
            s.allocs, s.refills, s.flushes, s.remote_batches, s.large_allocs
        );
    }};
}

fn main() {
    // All four types work at the same time, each in its own threads.
    let h = [
        thread::spawn(|| workload(&SCALE)),
        thread::spawn(|| workload(&FREE_FAST)),
        thread::spawn(|| workload(&TAG_FIRST)),
        thread::spawn(|| workload(&PLAIN)),
    ];
    let [a, b, c, d] = h.map(|h| h.join().unwrap());
    report!(Scale, a);
    report!(FreeFast, b);
    report!(TagFirst, c);
    report!(Plain, d);
}
