//! The flag matrix: the generic suite of `tests/common` stamped over generated
//! types that together take every value of every `hz3_allocator!` flag.
//!
//! | type        | s110_meta | free_fast | ptag  | stats | failfast | shards | arena_gib | purge | fine_classes |
//! |-------------|-----------|-----------|-------|-------|----------|--------|-----------|-------|--------------|
//! | Defaults    | true      | false     | late  | false | false    | 64     | 64        | true  | false        |
//! | Scale       | true      | false     | late  | true  | false    | 64     | 64        | true  | false        |
//! | FastLate    | true      | true      | late  | true  | true     | 64     | 64        | true  | false        |
//! | FastOff     | true      | true      | off   | false | false    | 4      | 64        | false | false        |
//! | FastFirst   | true      | true      | first | true  | false    | 64     | 1         | true  | false        |
//! | MetaOff     | true      | false     | off   | true  | true     | 1      | 64        | true  | false        |
//! | MetaFirst   | true      | false     | first | false | true     | 4      | 1         | false | false        |
//! | PlainOff    | false     | false     | off   | false | false    | 1      | 1         | false | true         |
//! | PlainFirst  | false     | false     | first | true  | true     | 4      | 64        | true  | false        |
//!
//! Every type's suite runs in this one process, so the types also prove that their
//! statics and thread caches are independent.

#[macro_use]
mod common;

hz3::hz3_allocator! {
    /// No flags: every default.
    pub struct Defaults;
}
hz3::hz3_allocator! {
    /// The scale lane (observation step: meta written, free not routed by it).
    pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;
}
hz3::hz3_allocator! {
    pub struct FastLate<s110_meta: true, free_fast: true, ptag: late, stats: true, failfast: true>;
}
hz3::hz3_allocator! {
    pub struct FastOff<s110_meta: true, free_fast: true, ptag: off, stats: false, shards: 4, purge: false>;
}
hz3::hz3_allocator! {
    pub struct FastFirst<s110_meta: true, free_fast: true, ptag: first, stats: true, arena_gib: 1>;
}
hz3::hz3_allocator! {
    pub struct MetaOff<s110_meta: true, free_fast: false, ptag: off, stats: true, failfast: true, shards: 1>;
}
hz3::hz3_allocator! {
    pub struct MetaFirst<s110_meta: true, ptag: first, failfast: true, shards: 4, arena_gib: 1, purge: false>;
}
hz3::hz3_allocator! {
    pub struct PlainOff<s110_meta: false, free_fast: false, ptag: off, stats: false, failfast: false,
                        shards: 1, arena_gib: 1, purge: false, fine_classes: true>;
}
hz3::hz3_allocator! {
    pub struct PlainFirst<s110_meta: false, ptag: first, stats: true, failfast: true, shards: 4, arena_gib: 64>;
}

stamp_suite!(defaults, Defaults);
stamp_suite!(scale, Scale);
stamp_suite!(fast_late, FastLate);
stamp_suite!(fast_off, FastOff);
stamp_suite!(fast_first, FastFirst);
stamp_suite!(meta_off, MetaOff);
stamp_suite!(meta_first, MetaFirst);
stamp_suite!(plain_off, PlainOff);
stamp_suite!(plain_first, PlainFirst);

/// The table above is what the types really are.
#[test]
fn matrix_table_matches_consts() {
    use common::{Flags, Probe};
    use hz3::Ptag::*;
    const G: usize = 1 << 30;
    let f = |s110_meta, free_fast, ptag, stats, failfast, shards, gib: usize, purge| Flags {
        s110_meta,
        free_fast,
        ptag,
        stats,
        failfast,
        shards,
        arena_size: gib * G,
        purge,
    };
    assert_eq!(
        <Defaults as Probe>::flags(),
        f(true, false, Late, false, false, 64, 64, true)
    );
    assert_eq!(
        <Scale as Probe>::flags(),
        f(true, false, Late, true, false, 64, 64, true)
    );
    assert_eq!(
        <FastLate as Probe>::flags(),
        f(true, true, Late, true, true, 64, 64, true)
    );
    assert_eq!(
        <FastOff as Probe>::flags(),
        f(true, true, Off, false, false, 4, 64, false)
    );
    assert_eq!(
        <FastFirst as Probe>::flags(),
        f(true, true, First, true, false, 64, 1, true)
    );
    assert_eq!(
        <MetaOff as Probe>::flags(),
        f(true, false, Off, true, true, 1, 64, true)
    );
    assert_eq!(
        <MetaFirst as Probe>::flags(),
        f(true, false, First, false, true, 4, 1, false)
    );
    assert_eq!(
        <PlainOff as Probe>::flags(),
        f(false, false, Off, false, false, 1, 1, false)
    );
    assert_eq!(
        <PlainFirst as Probe>::flags(),
        f(false, false, First, true, true, 4, 64, true)
    );
}
