//! The workload catalogue (names, shapes, parameters per mode) and the monomorphised entry
//! point [`run`] that executes one workload against one allocator type.
//!
//! Every workload is generic over `A: GlobalAlloc + Sync` and calls the allocator directly
//! (`alloc`/`dealloc`/`realloc` with an 8-byte-aligned `Layout`), so all allocators are driven
//! through the same calls with no dynamic dispatch. Each workload runs an untimed warm-up pass
//! (a tenth of the iterations) and then the timed pass. Slot arrays, rings and threads come from
//! the process's global allocator (in a child, the allocator under test: see
//! `crate::global`) before any clock starts. The `rust_` workloads ([`programs`]) are the
//! exception to direct calls: they use `std` collections, i.e. that global allocator.

mod block;
pub mod cliffs;
pub mod programs;
pub mod ring;
pub mod rng;
mod single;
pub mod team;
mod threaded;

use core::alloc::GlobalAlloc;
pub use rng::SizeDist;

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CI smoke test: a quarter of the default iterations.
    Quick,
    /// The everyday comparison.
    Default,
    /// Publication runs: four times the default iterations.
    Full,
}

impl Mode {
    /// Name used on the command line and in the outputs.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Default => "default",
            Mode::Full => "full",
        }
    }
    /// Parse a mode name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "quick" => Some(Mode::Quick),
            "default" => Some(Mode::Default),
            "full" => Some(Mode::Full),
            _ => None,
        }
    }
    fn scale(self, iters: u64) -> u64 {
        match self {
            Mode::Quick => iters / 4,
            Mode::Default => iters,
            Mode::Full => iters * 4,
        }
    }
}

/// The shape of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One thread, `slots` live slots picked by an LCG: full → free, empty → malloc.
    Slots,
    /// `threads` threads with private slots; a freed block goes to the next thread through a
    /// ring with probability `remote_pct`% (a full ring means a local free).
    MtRemote,
    /// Each thread mallocs a small object, writes it `extra` times, frees it (active false sharing).
    CacheThrash,
    /// Like cache-thrash, but each thread first frees an object the main thread allocated
    /// next to the other threads' objects (passive false sharing).
    CacheScratch,
    /// Larson: each thread replaces random slots of a slot array; every `extra` replacements
    /// the arrays rotate between threads, so blocks are freed by a thread other than their allocator.
    Larson,
    /// One producer mallocs and hands every block through a ring to one consumer that frees it.
    ProdCons,
    /// malloc/free of one fixed-size block, back to back.
    Pair,
    /// malloc `extra` blocks, then free them in reverse (LIFO) order.
    Batch,
    /// `slots` buffers grown round-robin by `realloc` (×1.5 + 16) from 16 B up to the size cap,
    /// then freed and restarted.
    Realloc,
    /// Allocator cliffs: zeroed big blocks, bulk remote frees, many aligned
    /// blocks, big blocks resized (see `cliffs`).
    Cliff(cliffs::Shape),
    /// A workload that looks like a program (large live sets, Rust collections, thread
    /// churn, cross-thread hand-off, large blocks): see [`programs`].
    Program(programs::Shape),
}

/// Parameters of one workload in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Worker threads (1 = runs on the child's main thread).
    pub threads: usize,
    /// Timed iterations per thread.
    pub iters: u64,
    /// Untimed warm-up iterations per thread.
    pub warm: u64,
    /// Live slots per thread (Slots, MtRemote, Larson), live buffers (Realloc).
    pub slots: usize,
    /// Block sizes.
    pub sizes: SizeDist,
    /// MtRemote: percentage of frees routed to the neighbour thread.
    pub remote_pct: u32,
    /// Writes per object (cache-*), batch size (Batch), replacements per epoch (Larson), ring capacity
    /// (MtRemote, ProdCons).
    pub extra: u32,
}

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Unique name (also the CSV key).
    pub name: &'static str,
    /// Shape.
    pub kind: Kind,
    /// Parameters in [`Mode::Default`]; other modes scale `iters`.
    base: Params,
}

const fn p(
    threads: usize,
    iters: u64,
    slots: usize,
    sizes: SizeDist,
    remote_pct: u32,
    extra: u32,
) -> Params {
    Params {
        threads,
        iters,
        warm: 0,
        slots,
        sizes,
        remote_pct,
        extra,
    }
}

const SMALL: SizeDist = SizeDist::Range(16, 2048);
const MEDIUM: SizeDist = SizeDist::Range(4096, 32768);
const MIXED: SizeDist = SizeDist::Range(16, 32768);
const RING: u32 = 4096;

macro_rules! w {
    ($name:literal, $kind:ident, $p:expr) => {
        Workload {
            name: $name,
            kind: Kind::$kind,
            base: $p,
        }
    };
    ($name:literal, Cliff($shape:expr), $p:expr) => {
        Workload {
            name: $name,
            kind: Kind::Cliff($shape),
            base: $p,
        }
    };
}

/// A program-like workload (see [`programs::Shape`]).
macro_rules! prog {
    ($name:literal, $shape:expr, $p:expr) => {
        Workload {
            name: $name,
            kind: Kind::Program($shape),
            base: $p,
        }
    };
}

/// Small blocks of the large live sets.
const LIVE_SMALL: SizeDist = SizeDist::Range(16, 256);
/// Blocks of 1–32 MiB.
const BIG: SizeDist = SizeDist::Range(1 << 20, 32 << 20);

/// Every workload, in report order.
pub const ALL: &[Workload] = &[
    w!(
        "random_mixed_small",
        Slots,
        p(1, 5_000_000, 400, SMALL, 0, 0)
    ),
    w!(
        "random_mixed_medium",
        Slots,
        p(1, 4_500_000, 400, MEDIUM, 0, 0)
    ),
    w!(
        "random_mixed_mixed",
        Slots,
        p(1, 2_000_000, 400, MIXED, 0, 0)
    ),
    w!("dist_app", Slots, p(1, 5_000_000, 400, SizeDist::App, 0, 0)),
    w!("dist_uniform", Slots, p(1, 2_000_000, 400, MIXED, 0, 0)),
    w!(
        "mt_remote_t2_r0",
        MtRemote,
        p(2, 5_000_000, 400, SMALL, 0, RING)
    ),
    w!(
        "mt_remote_t2_r50",
        MtRemote,
        p(2, 1_000_000, 400, SMALL, 50, RING)
    ),
    w!(
        "mt_remote_t2_r90",
        MtRemote,
        p(2, 1_000_000, 400, SMALL, 90, RING)
    ),
    w!(
        "mt_remote_t4_r0",
        MtRemote,
        p(4, 2_500_000, 400, SMALL, 0, RING)
    ),
    w!(
        "mt_remote_t4_r50",
        MtRemote,
        p(4, 500_000, 400, SMALL, 50, RING)
    ),
    w!(
        "mt_remote_t4_r90",
        MtRemote,
        p(4, 500_000, 400, SMALL, 90, RING)
    ),
    w!(
        "cache_thrash",
        CacheThrash,
        p(2, 4_000_000, 0, SizeDist::Range(8, 8), 0, 100)
    ),
    w!(
        "cache_scratch",
        CacheScratch,
        p(2, 4_000_000, 0, SizeDist::Range(8, 8), 0, 100)
    ),
    w!(
        "larson",
        Larson,
        p(2, 4_500_000, 1000, SizeDist::Range(16, 1024), 0, 50_000)
    ),
    w!("prodcons", ProdCons, p(2, 750_000, 0, SMALL, 100, 1024)),
    w!(
        "pair",
        Pair,
        p(1, 10_000_000, 0, SizeDist::Range(64, 64), 0, 0)
    ),
    w!(
        "batch100",
        Batch,
        p(1, 100_000, 0, SizeDist::Range(64, 64), 0, 100)
    ),
    w!(
        "realloc",
        Realloc,
        p(1, 3_000_000, 16, SizeDist::Range(16, 8192), 0, 0)
    ),
    w!("calloc_large", Cliff(cliffs::Shape::CallocLarge), p(1, 20_000, 64, SizeDist::Range(64 << 10, 1 << 20), 0, 0)),
    w!("remote_bulk", Cliff(cliffs::Shape::RemoteBulk), p(1, 40, 50_000, SizeDist::Range(4 << 10, 256 << 10), 0, 128)),
    w!("aligned_many", Cliff(cliffs::Shape::AlignedMany), p(1, 300_000, 30_000, SizeDist::Range(1024, 4096), 0, 0)),
    w!("large_mixed", Cliff(cliffs::Shape::LargeMixed), p(2, 20_000, 16, SizeDist::Range(256 << 10, 8 << 20), 0, 0)),
    // Workloads that look like programs, in groups: live_, rust_, churn_, xthread_, big_.
    w!("live_random_100k", Slots, p(1, 8_000_000, 100_000, LIVE_SMALL, 0, 0)),
    w!("live_random_1m", Slots, p(1, 4_000_000, 1_000_000, LIVE_SMALL, 0, 0)),
    prog!("live_build_free_fifo", programs::Shape::BuildFree { random: false }, p(1, 2_000_000, 1_000_000, SizeDist::Range(16, 128), 0, 0)),
    prog!("live_build_free_random", programs::Shape::BuildFree { random: true }, p(1, 2_000_000, 1_000_000, SizeDist::Range(16, 128), 0, 0)),
    prog!("rust_json", programs::Shape::Json, p(1, 1_500_000, 10_000, SMALL, 0, 0)),
    prog!("rust_wordcount", programs::Shape::WordCount, p(1, 2_000_000, 50_000, SMALL, 0, 0)),
    prog!("rust_btree", programs::Shape::BTreeChurn, p(1, 1_000_000, 100_000, SMALL, 0, 0)),
    prog!("rust_box_tree", programs::Shape::BoxTree, p(1, 4_000_000, 131_071, SMALL, 0, 0)),
    prog!("rust_vec_push", programs::Shape::VecPush, p(1, 120_000_000, 4096, SMALL, 0, 0)),
    prog!("churn_thread_waves", programs::Shape::ThreadWaves, p(4, 150, 2000, SizeDist::Range(16, 1024), 0, 0)),
    prog!("churn_thread_calloc", programs::Shape::ThreadCalloc, p(10, 800, 128, SMALL, 0, 0)),
    w!("xthread_prodcons_small", ProdCons, p(2, 2_000_000, 0, LIVE_SMALL, 100, 4096)),
    prog!("xthread_handoff", programs::Shape::Handoff, p(4, 500_000, 8192, SizeDist::App, 0, 0)),
    prog!("big_buffers", programs::Shape::BigBuffers, p(1, 60, 8, BIG, 0, 0)),
];

impl Workload {
    /// Look a workload up by name.
    pub fn by_name(name: &str) -> Option<&'static Workload> {
        ALL.iter().find(|w| w.name == name)
    }

    /// Parameters in `mode` (warm-up = a tenth of the timed iterations, at least 1).
    pub fn params(&self, mode: Mode) -> Params {
        let mut p = self.base;
        p.iters = mode.scale(p.iters).max(1);
        p.warm = (p.iters / 10).max(1);
        p
    }

    /// Whether the child's `std` allocations (the `rust_` workloads' collections, the
    /// harness's buffers) come from the allocator under test: for the program-like workloads.
    /// The others keep glibc there, as they always did, so their numbers stay comparable.
    pub fn std_on_allocator_under_test(&self) -> bool {
        matches!(self.kind, Kind::Program(_))
    }

    /// Whether the report should also show ns per malloc/free pair.
    pub fn reports_ns_per_pair(&self) -> bool {
        matches!(self.kind, Kind::Pair | Kind::Batch)
    }

    /// Whether the child's measured remote-free share is meaningful for this workload.
    pub fn reports_remote_share(&self) -> bool {
        matches!(self.kind, Kind::MtRemote | Kind::ProdCons)
    }

    /// What one counted op is, for the parameter table.
    pub fn op_unit(&self) -> &'static str {
        match self.kind {
            Kind::Slots | Kind::MtRemote => "one slot visit (a malloc or a free)",
            Kind::Larson => "one slot fill (malloc) or replacement (free + malloc)",
            Kind::Realloc => "one malloc, realloc or free call",
            Kind::Program(s) => programs::op_unit(s),
            _ => "one malloc or one free",
        }
    }

    /// One-line parameter description, e.g. `threads=2 iters/thread=2000000 ...`.
    pub fn describe(&self, mode: Mode) -> String {
        let p = self.params(mode);
        let mut s = format!(
            "threads={} iters/thread={} warmup={}",
            p.threads, p.iters, p.warm
        );
        match self.kind {
            Kind::Slots => s += &format!(" slots={} sizes={}", p.slots, p.sizes.describe()),
            Kind::MtRemote => {
                s += &format!(
                    " slots/thread={} R={}% ring={} sizes={} (drain inbox every 32 iters; full ring: drain inbox + yield + retry, {} tries, then local free)",
                    p.slots,
                    p.remote_pct,
                    p.extra,
                    p.sizes.describe(),
                    threaded::FULL_RING_TRIES
                )
            }
            Kind::CacheThrash | Kind::CacheScratch => {
                s += &format!(" object=8B writes/object={}", p.extra)
            }
            Kind::Larson => {
                s += &format!(" slots/thread={} epoch={} replacements (then arrays rotate) sizes={}", p.slots, p.extra, p.sizes.describe())
            }
            Kind::ProdCons => s += &format!(" producers=1 consumers=1 ring={} sizes={}", p.extra, p.sizes.describe()),
            Kind::Pair => s += " size=64",
            Kind::Batch => s += &format!(" batch={} LIFO size=64", p.extra),
            Kind::Realloc => {
                let cap = match p.sizes {
                    SizeDist::Range(_, hi) => hi,
                    SizeDist::App => 32768,
                };
                s += &format!(" live buffers={} growth: realloc to x1.5+16 from 16 B up to {cap} B, then free", p.slots)
            }
            Kind::Cliff(shape) => s += &cliffs::describe(shape, &p),
            Kind::Program(shape) => s += &programs::describe(shape, &p),
        }
        s + &format!("; op = {}", self.op_unit())
    }
}

/// What one timed pass measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Counted ops (see [`Workload::op_unit`]), all threads together.
    pub ops: u64,
    /// Wall time of the timed pass.
    pub secs: f64,
    /// Frees that went through a ring to another thread (MtRemote, ProdCons).
    pub remote_frees: u64,
    /// All frees in the timed pass (MtRemote, ProdCons; 0 elsewhere).
    pub frees: u64,
}

/// Run `w` (warm-up, then timed pass) against allocator `a`.
pub fn run<A: GlobalAlloc + Sync>(a: &A, w: &Workload, mode: Mode) -> Outcome {
    run_with(a, w.kind, &w.params(mode))
}

/// Run a workload shape with explicit parameters (tests use tiny ones).
pub fn run_with<A: GlobalAlloc + Sync>(a: &A, kind: Kind, p: &Params) -> Outcome {
    match kind {
        Kind::Slots => single::slots(a, p),
        Kind::Pair => single::pair(a, p),
        Kind::Batch => single::batch(a, p),
        Kind::Realloc => single::realloc_growth(a, p),
        Kind::MtRemote => threaded::mt_remote(a, p),
        Kind::CacheThrash => threaded::cache_thrash(a, p),
        Kind::CacheScratch => threaded::cache_scratch(a, p),
        Kind::Larson => threaded::larson(a, p),
        Kind::ProdCons => threaded::prodcons(a, p),
        Kind::Cliff(shape) => cliffs::run(a, shape, p),
        Kind::Program(s) => programs::run(a, s, p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn names_unique() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
        }
    }

    /// Every shape completes with tiny parameters and counts something.
    #[test]
    fn every_workload_runs_tiny() {
        for w in ALL {
            let mut p = w.params(Mode::Quick);
            p.iters = (p.iters / 200).max(200);
            p.warm = 50;
            if let Kind::Program(shape) = w.kind {
                programs::tiny(shape, &mut p);
            }
            let o = run_with(&System, w.kind, &p);
            assert!(o.ops > 0 && o.secs > 0.0, "{}: {o:?}", w.name);
            if w.kind == Kind::MtRemote && p.remote_pct == 0 {
                assert_eq!(o.remote_frees, 0, "{}", w.name);
            }
            if w.kind == Kind::ProdCons {
                assert_eq!(o.remote_frees, o.frees, "{}", w.name);
            }
            if w.kind == Kind::MtRemote && p.remote_pct == 90 {
                assert!(o.remote_frees * 2 > o.frees, "{}: {o:?}", w.name);
            }
        }
    }
}
