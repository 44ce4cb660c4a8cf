// Several types with different flags in one binary: distinct consts, distinct
// thread-local slots, distinct statics; one of them is the global allocator.
use core::alloc::{GlobalAlloc, Layout};
use hz3_runtime::{Config, Ptag};

hz3_runtime::hz3_allocator! {
    /// Scale lane.
    #[derive(PartialEq, Eq)]
    pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;
    pub(crate) struct Plain;
    struct Tuned<
        s110_meta: false, free_fast: false, ptag: off, stats: false, failfast: true,
        shards: 4, arena_gib: 2, purge: false, export: none,
    >;
}

mod other {
    // Same name as the outer type, different module.
    hz3_runtime::hz3_allocator! {
        pub struct Scale<ptag: first>;
    }
}

#[global_allocator]
static GLOBAL: Scale = Scale::new();

fn main() {
    assert_eq!(Scale::NAME, "Scale");
    assert!(Scale::S110_META && !Scale::FREE_FAST && Scale::STATS);
    assert_eq!(Scale::PTAG, Ptag::Late);
    assert_eq!(Scale::SHARDS, 64);
    assert_eq!(Scale::ARENA_SIZE, 64 << 30);
    assert!(Scale::PURGE && !Scale::EXPORT_C && !Scale::FAILFAST);
    assert_eq!(Scale::new(), Scale::default());

    assert!(!Plain::STATS && Plain::S110_META && Plain::PTAG == Ptag::Late);
    assert_eq!(<Tuned as Config>::PTAG, Ptag::Off);
    assert_eq!(<Tuned as Config>::SHARDS, 4);
    assert_eq!(<Tuned as Config>::ARENA_SIZE, 2 << 30);
    assert!(<Tuned as Config>::FAILFAST && !<Tuned as Config>::PURGE);
    assert_eq!(other::Scale::PTAG, Ptag::First);
    assert_eq!(<other::Scale as Config>::NAME, "Scale");

    // Distinct statics (a zero-sized `State` would share one address).
    let s1 = <Scale as Config>::state() as *const _ as *const u8;
    let s2 = <other::Scale as Config>::state() as *const _ as *const u8;
    let s3 = <Plain as Config>::state() as *const _ as *const u8;
    if core::mem::size_of::<hz3_runtime::State<Plain>>() != 0 {
        assert!(s1 != s2 && s2 != s3 && s1 != s3);
    }

    // Distinct thread-local slots, per type and per thread. (Plain, not the global
    // allocator's type: the engine owns the slots of types it is running.)
    let a = 0x10 as *mut u8;
    let b = 0x20 as *mut u8;
    let before = <Plain as Config>::tls_get();
    <Tuned as Config>::tls_set(a);
    <other::Scale as Config>::tls_set(b);
    assert_eq!(<Tuned as Config>::tls_get(), a);
    assert_eq!(<other::Scale as Config>::tls_get(), b);
    assert_eq!(<Plain as Config>::tls_get(), before);
    std::thread::spawn(|| {
        assert!(<Tuned as Config>::tls_get().is_null());
        <Tuned as Config>::tls_set(0x30 as *mut u8);
    })
    .join()
    .unwrap();
    assert_eq!(<Tuned as Config>::tls_get(), a);
    <Tuned as Config>::tls_set(core::ptr::null_mut());
    <other::Scale as Config>::tls_set(core::ptr::null_mut());

    // Allocation through the global allocator and through a second type directly.
    let v: Vec<u64> = (0..10_000).collect();
    assert_eq!(v.iter().sum::<u64>(), 49_995_000);
    let layout = Layout::from_size_align(100, 64).unwrap();
    // SAFETY: non-zero size; the block is freed with the same type and layout.
    unsafe {
        let p = Plain::new().alloc(layout);
        assert!(!p.is_null() && p as usize % 64 == 0);
        assert!(Plain::usable_size(p).map_or(true, |n| n >= 100));
        p.write_bytes(7, 100);
        let q = Plain::new().realloc(p, layout, 300);
        assert!(!q.is_null() && *q.add(99) == 7);
        Plain::new().dealloc(q, Layout::from_size_align(300, 64).unwrap());
        let z = Plain::new().alloc_zeroed(layout);
        assert!(!z.is_null() && *z.add(50) == 0);
        Plain::new().dealloc(z, layout);
    }
    let _ = Scale::stats();
}
