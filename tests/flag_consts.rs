//! What `hz3_allocator!` declares, seen from outside: the associated consts read
//! back as declared (defaults included, flags in any order), each invocation is its
//! own type with its own statics (stats, arena), and `new` is a `const fn`.

#![allow(clippy::assertions_on_constants)] // the flags are constants by design

#[macro_use]
mod common;

use common::{delta, Block, Probe};
#[allow(unused_imports)]
use hz3::Config as _;
use hz3::{Ptag, StatsSnapshot};
use std::any::TypeId;
use std::thread;

hz3::hz3_allocator! {
    /// Every flag left at its default.
    pub struct KDefault;
}
hz3::hz3_allocator! { pub struct KScale<s110_meta: true, free_fast: false, ptag: late, stats: true>; }
hz3::hz3_allocator! {
    /// Every flag spelled out, none at its default.
    pub struct KAll<s110_meta: true, free_fast: true, ptag: first, stats: true, failfast: true,
                    shards: 8, arena_gib: 2, purge: false, fine_classes: true>;
}
hz3::hz3_allocator! { pub struct KNoMeta<s110_meta: false, ptag: off>; }
hz3::hz3_allocator! { pub struct KOrder<purge: false, shards: 2, ptag: first, s110_meta: false, arena_gib: 1>; }
// One invocation, two declarations.
hz3::hz3_allocator! {
    pub struct KPairOne<shards: 3>;
    /// Second of the pair.
    pub struct KPairTwo<ptag: off, purge: false,>;
}
// Identical flags, distinct types (stats independence test only).
hz3::hz3_allocator! { pub struct StatTwinA<free_fast: true, stats: true>; }
hz3::hz3_allocator! { pub struct StatTwinB<free_fast: true, stats: true>; }

impl_probe!(KDefault);
impl_probe!(KScale);
impl_probe!(KAll);
impl_probe!(KNoMeta);
impl_probe!(KOrder);
impl_probe!(StatTwinA);
impl_probe!(StatTwinB);

static DEFAULT: KDefault = KDefault::new();
static SCALE: KScale = KScale::new();
static ALL: KAll = KAll::new();
static NO_META: KNoMeta = KNoMeta::new();
static ORDER: KOrder = KOrder::new();
static TWIN_A: StatTwinA = StatTwinA::new();
static TWIN_B: StatTwinB = StatTwinB::new();

const GIB: usize = 1 << 30;

// The flags are true constants: usable in const context.
const _: () = assert!(KAll::FREE_FAST && KAll::FAILFAST && !KAll::PURGE);
const _: () = assert!(KDefault::SHARDS == 64 && KOrder::SHARDS == 2);
// `new` is a const fn.
const _DEFAULT_CONST: KDefault = KDefault::new();

#[test]
fn defaults_read_back() {
    assert!(KDefault::S110_META);
    assert!(!KDefault::FREE_FAST);
    assert_eq!(KDefault::PTAG, Ptag::Late);
    assert!(!KDefault::STATS);
    assert!(!KDefault::FAILFAST);
    assert_eq!(KDefault::SHARDS, 64);
    assert_eq!(KDefault::ARENA_SIZE, 64 * GIB);
    assert!(KDefault::PURGE);
    assert!(!KDefault::FINE_CLASSES);
}

#[test]
fn explicit_flags_read_back() {
    assert!(KScale::S110_META);
    assert!(!KScale::FREE_FAST);
    assert_eq!(KScale::PTAG, Ptag::Late);
    assert!(KScale::STATS);
    assert!(!KScale::FAILFAST);
    assert_eq!(KScale::SHARDS, 64);
    assert_eq!(KScale::ARENA_SIZE, 64 * GIB);
    assert!(KScale::PURGE);

    assert!(KAll::S110_META);
    assert!(KAll::FREE_FAST);
    assert_eq!(KAll::PTAG, Ptag::First);
    assert!(KAll::STATS);
    assert!(KAll::FAILFAST);
    assert_eq!(KAll::SHARDS, 8);
    assert_eq!(KAll::ARENA_SIZE, 2 * GIB);
    assert!(!KAll::PURGE);
    assert!(KAll::FINE_CLASSES);

    assert!(!KNoMeta::S110_META);
    assert!(!KNoMeta::FREE_FAST);
    assert_eq!(KNoMeta::PTAG, Ptag::Off);
    assert!(!KNoMeta::STATS);
    assert_eq!(KNoMeta::SHARDS, 64);
    assert_eq!(KNoMeta::ARENA_SIZE, 64 * GIB);
}

#[test]
fn flag_order_does_not_matter() {
    assert!(!KOrder::S110_META);
    assert!(!KOrder::FREE_FAST);
    assert_eq!(KOrder::PTAG, Ptag::First);
    assert!(!KOrder::STATS);
    assert!(!KOrder::FAILFAST);
    assert_eq!(KOrder::SHARDS, 2);
    assert_eq!(KOrder::ARENA_SIZE, GIB);
    assert!(!KOrder::PURGE);
}

#[test]
fn names_and_multi_declaration_invocations() {
    assert_eq!(KDefault::NAME, "KDefault");
    assert_eq!(KAll::NAME, "KAll");
    assert_eq!(StatTwinA::NAME, "StatTwinA");
    assert_eq!(KPairOne::SHARDS, 3);
    assert_eq!(KPairOne::PTAG, Ptag::Late);
    assert_eq!(KPairTwo::SHARDS, 64);
    assert_eq!(KPairTwo::PTAG, Ptag::Off);
    assert!(!KPairTwo::PURGE);
    assert_ne!(TypeId::of::<KPairOne>(), TypeId::of::<KPairTwo>());
    // The handle is a zero-sized value.
    assert_eq!(std::mem::size_of::<KAll>(), 0);
}

#[test]
fn each_invocation_is_a_distinct_type() {
    let ids = [
        TypeId::of::<KDefault>(),
        TypeId::of::<KScale>(),
        TypeId::of::<KAll>(),
        TypeId::of::<KNoMeta>(),
        TypeId::of::<KOrder>(),
        TypeId::of::<StatTwinA>(),
        TypeId::of::<StatTwinB>(),
    ];
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            assert_ne!(ids[i], ids[j], "types {i} and {j} are the same type");
        }
    }
    // Same flags, still different types.
    assert_eq!(<StatTwinA as Probe>::flags(), <StatTwinB as Probe>::flags());
}

/// Two types with identical flags keep separate counters: work on one moves only
/// its own snapshot, by exactly the work done.
#[test]
fn stats_are_per_type() {
    const N: u64 = 300;
    let run = |use_a: bool| {
        thread::spawn(move || {
            for k in 0..N {
                let size = 16 + (k as usize * 48) % 2000;
                if use_a {
                    Block::new(&TWIN_A, size, 16).free("twin a");
                } else {
                    Block::new(&TWIN_B, size, 16).free("twin b");
                }
            }
        })
        .join()
        .unwrap()
    };
    let (a0, b0) = (StatTwinA::stats(), StatTwinB::stats());
    run(true);
    let (a1, b1) = (StatTwinA::stats(), StatTwinB::stats());
    assert_eq!(b1, b0, "work on StatTwinA moved StatTwinB's counters");
    let d = delta(&a0, &a1);
    assert_eq!(
        (d.allocs, d.calls, d.meta_hit),
        (N, N, N),
        "StatTwinA counters: {d:?}"
    );
    run(false);
    let (a2, b2) = (StatTwinA::stats(), StatTwinB::stats());
    assert_eq!(a2, a1, "work on StatTwinB moved StatTwinA's counters");
    let d = delta(&b1, &b2);
    assert_eq!(
        (d.allocs, d.calls, d.meta_hit),
        (N, N, N),
        "StatTwinB counters: {d:?}"
    );
    // Stats-off types stay at zero next to them.
    assert_eq!(KDefault::stats(), StatsSnapshot::default());
}

/// Each type recognises only its own blocks: its arena is its own.
#[test]
fn usable_size_is_per_type() {
    let a = Block::new(&ALL, 200, 16);
    let s = Block::new(&SCALE, 200, 16);
    let d = Block::new(&DEFAULT, 20_000, 16);
    // SAFETY: usable_size accepts any pointer value; these are live blocks of some type.
    unsafe {
        assert!(KAll::usable_size(a.ptr() as _).is_some_and(|u| u >= 200));
        assert!(KScale::usable_size(s.ptr() as _).is_some_and(|u| u >= 200));
        assert!(KDefault::usable_size(d.ptr() as _).is_some_and(|u| u >= 20_000));
        assert_eq!(
            KScale::usable_size(a.ptr() as _),
            None,
            "KScale claims a KAll block"
        );
        assert_eq!(
            KAll::usable_size(s.ptr() as _),
            None,
            "KAll claims a KScale block"
        );
        assert_eq!(
            KAll::usable_size(d.ptr() as _),
            None,
            "KAll claims a KDefault block"
        );
        assert_eq!(
            KDefault::usable_size(a.ptr() as _),
            None,
            "KDefault claims a KAll block"
        );
        assert_eq!(
            KNoMeta::usable_size(s.ptr() as _),
            None,
            "KNoMeta claims a KScale block"
        );
    }
    a.free("all");
    s.free("scale");
    d.free("default");
}

/// Several types used side by side on the same threads, blocks handed across
/// threads: every block keeps its content and goes back to its own type.
#[test]
fn types_interleave() {
    let mut rng = common::Rng::new(77);
    let hs: Vec<_> = (0..3u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = common::Rng::new(t);
                let mut v1 = Vec::new();
                let mut v2 = Vec::new();
                let mut v3 = Vec::new();
                for _ in 0..1000 {
                    v1.push(Block::new(&NO_META, common::random_size(&mut rng), 16));
                    v2.push(Block::new(&ORDER, common::random_size(&mut rng), 16));
                    v3.push(Block::new(&DEFAULT, rng.range(1, 2048), 16));
                }
                (v1, v2, v3)
            })
        })
        .collect();
    for h in hs {
        let (v1, v2, v3) = h.join().unwrap();
        common::free_all(v1, &mut rng, "KNoMeta");
        common::free_all(v2, &mut rng, "KOrder");
        common::free_all(v3, &mut rng, "KDefault");
    }
}
