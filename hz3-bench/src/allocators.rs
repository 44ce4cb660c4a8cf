//! The allocators under test: the hz3 presets (one `static` instance each), the reference
//! allocators, the preloaded hz3 libraries, and the name → monomorphised workload dispatch
//! used by the child process.
//!
//! Each workload calls the allocator under test through `GlobalAlloc` directly. The
//! process's `#[global_allocator]` ([`crate::global`]) forwards to one of these, chosen once
//! per process: in the child of a program-like workload, the allocator it measures (so `std`
//! collections use it too); elsewhere glibc (`System`). The `mimalloc` crate builds mimalloc
//! without malloc override, `tikv-jemallocator` uses prefixed jemalloc symbols and `snmalloc-rs` exports only `sn_rust_*` entry points, so none
//! of them replaces glibc's `malloc` in the process.
//!
//! One name per thing: a preset's command-line name is the `NAME` of its library
//! `libhz3_NAME.so` where it has one; older names stay accepted as aliases.

use crate::workloads::{self, Mode, Outcome, Workload};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

/// The `LD_PRELOAD` library of an hz3 preset: cargo package and file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresetLib {
    /// Cargo package that builds it (`hz3-scale`).
    pub package: &'static str,
    /// File name in the target profile directory (`libhz3_scale.so`).
    pub file: &'static str,
}

/// An hz3 preset selectable with `--hz3`, `--allocators`, `ab --base/--treat` and `--preload`.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Name on the command line (`scale`).
    pub key: &'static str,
    /// Allocator name in reports (`hz3-scale`).
    pub name: &'static str,
    /// Older names still accepted.
    pub aliases: &'static [&'static str],
    /// Its flags, for `list` and `--help`.
    pub flags: &'static str,
    /// Its `LD_PRELOAD` library, if the workspace builds one.
    pub lib: Option<PresetLib>,
}

const fn lib(package: &'static str, file: &'static str) -> Option<PresetLib> {
    Some(PresetLib { package, file })
}

/// Every hz3 preset, in report order.
pub const PRESETS: &[Preset] = &[
    Preset {
        key: "scale",
        name: "hz3-scale",
        aliases: &[],
        flags: "s110_meta: true, free_fast: false, ptag: late, stats: true",
        lib: lib("hz3-scale", "libhz3_scale.so"),
    },
    Preset {
        key: "default",
        name: "hz3-default",
        aliases: &[],
        flags: "all defaults",
        lib: lib("hz3-default", "libhz3_default.so"),
    },
    Preset {
        key: "s110",
        name: "hz3-s110",
        aliases: &["s110fast", "hz3-s110fast"],
        flags: "s110_meta: true, free_fast: true, ptag: late, stats: true",
        lib: lib("hz3-s110", "libhz3_s110.so"),
    },
    Preset {
        key: "ptagfirst",
        name: "hz3-ptagfirst",
        aliases: &[],
        flags: "s110_meta: true, free_fast: false, ptag: first, stats: true",
        lib: None,
    },
    Preset {
        key: "ptagoff",
        name: "hz3-ptagoff",
        aliases: &[],
        flags: "s110_meta: true, free_fast: true, ptag: off, stats: true",
        lib: None,
    },
    Preset {
        key: "hardened",
        name: "hz3-hardened",
        aliases: &[],
        flags: "s110_meta: true, free_fast: false, ptag: late, stats: true, harden: true",
        lib: lib("hz3-hardened", "libhz3_hardened.so"),
    },
];

/// The preset called `s` (its key, its report name or an alias).
pub fn preset(s: &str) -> Option<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.key == s || p.name == s || p.aliases.contains(&s))
}

/// Preset keys, comma-separated (for error messages).
pub fn preset_keys(with_lib_only: bool) -> String {
    PRESETS
        .iter()
        .filter(|p| !with_lib_only || p.lib.is_some())
        .map(|p| p.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reference allocators, in report order (mimalloc is the ratio baseline).
pub const OTHERS: &[&str] = &["mimalloc", "jemalloc", "snmalloc", "glibc"];

/// Allocators that only `--allocators` selects, to show what the calling convention is worth:
/// the scale preset inlined into the workloads, and mimalloc through the `mimalloc` crate's
/// `GlobalAlloc` (`mi_malloc_aligned` for every allocation).
pub const EXTRA: &[&str] = &["hz3-scale-inlined", "mimalloc-crate"];

/// The allocator every ratio is taken against.
pub const BASELINE: &str = "mimalloc";

/// Suffix of the name of an hz3 library measured under `LD_PRELOAD`.
pub const PRELOAD_SUFFIX: &str = "-preload";

/// The preloaded allocators of the default run.
pub const DEFAULT_PRELOADED: &[&str] = &["hz3-scale-preload"];

/// Whether `name` is an hz3 allocator (in-process or preloaded).
pub fn is_hz3(name: &str) -> bool {
    name.starts_with("hz3")
}

/// Allocator name for a library measured under `LD_PRELOAD`: `libhz3_NAME.so` →
/// `hz3-NAME-preload`, any other `libX.so` → `X-preload`.
pub fn preload_name(path: &Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("lib");
    let stem = file.split(".so").next().unwrap_or(file);
    let stem = stem.strip_prefix("lib").unwrap_or(stem);
    match stem.strip_prefix("hz3_") {
        Some(rest) => format!("hz3-{}{PRELOAD_SUFFIX}", rest.replace('_', "-")),
        None => format!("{stem}{PRELOAD_SUFFIX}"),
    }
}

/// The preset whose library allocator `name` (`hz3-KEY-preload`) is.
pub fn preset_of_preload(name: &str) -> Option<&'static Preset> {
    let key = name.strip_prefix("hz3-")?.strip_suffix(PRELOAD_SUFFIX)?;
    preset(key).filter(|p| p.lib.is_some())
}

/// Every allocator name `--allocators` accepts, for its possible values.
pub fn allocator_names() -> Vec<String> {
    let mut v: Vec<String> = vec!["hz3".into()];
    for p in PRESETS {
        v.push(p.name.into());
        v.push(p.key.into());
    }
    for p in PRESETS.iter().filter(|p| p.lib.is_some()) {
        v.push(format!("{}{PRELOAD_SUFFIX}", p.name));
    }
    v.extend(OTHERS.iter().map(|s| s.to_string()));
    v.push("system".into());
    v.extend(EXTRA.iter().map(|s| s.to_string()));
    v
}

/// Whether the `malloc` this process calls lives in a shared object whose file name
/// ends with `lib` (i.e. `LD_PRELOAD` took effect).
pub fn malloc_comes_from(lib: &str) -> bool {
    // SAFETY: `Dl_info` is plain old data (all-zero is valid); `dladdr` only reads the
    // address and fills `info`; `dli_fname`, when non-null, is a NUL-terminated string
    // owned by the dynamic linker that lives as long as the object stays loaded.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let malloc_addr = libc::malloc as *const libc::c_void;
        if libc::dladdr(malloc_addr, &mut info) == 0 || info.dli_fname.is_null() {
            return false;
        }
        std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().ends_with(lib)
    }
}

/// An allocator behind one out-of-line call per operation.
///
/// Every allocator under test is wrapped in this, so that all of them are reached the same
/// way: one direct call per `malloc` / `free` / `realloc`, as a C program (or a Rust program
/// without cross-crate inlining) calls its allocator. Without it the hz3 types, which are Rust
/// generics, would be inlined into the workload loops and specialised for their constant
/// sizes, while mimalloc, jemalloc, snmalloc and glibc, compiled C, are always called.
pub struct Called<A>(pub A);

/// `GlobalAlloc` for a one-field wrapper that forwards every call to its field behind one
/// out-of-line call (`#[inline(never)]`).
macro_rules! forward_out_of_line {
    ($wrapper:ident) => {
        // SAFETY: every method forwards to `A`'s implementation with the same arguments, so
        // `A`'s guarantees hold unchanged.
        unsafe impl<A: GlobalAlloc> GlobalAlloc for $wrapper<A> {
            #[inline(never)]
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
                unsafe { self.0.alloc(l) }
            }
            #[inline(never)]
            unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
                // SAFETY: as above.
                unsafe { self.0.alloc_zeroed(l) }
            }
            #[inline(never)]
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                // SAFETY: as above.
                unsafe { self.0.dealloc(p, l) }
            }
            #[inline(never)]
            unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
                // SAFETY: as above.
                unsafe { self.0.realloc(p, l, new) }
            }
        }
    };
}

forward_out_of_line!(Called);

/// mimalloc through the entry points its C users call: `mi_malloc` / `mi_free` /
/// `mi_realloc` when the alignment is one `mi_malloc` always gives (≤ 16 and ≤ the size), the
/// `_aligned` variants otherwise. (The `mimalloc` crate's `GlobalAlloc` always calls
/// `mi_malloc_aligned`, a longer path.)
pub struct MiPlain;

/// The alignment every `mi_malloc` block of at least that size has (`MI_MAX_ALIGN_SIZE`).
const MI_MAX_ALIGN: usize = 16;

// SAFETY: mimalloc returns blocks of at least `size` bytes aligned to `min(16, size rounded)`
// from `mi_malloc`, and to `align` from the `_aligned` calls; `mi_free` / `mi_realloc` accept
// any block from either.
unsafe impl GlobalAlloc for MiPlain {
    #[inline(always)]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: plain C calls with a non-zero size (GlobalAlloc contract).
        unsafe {
            if l.align() <= MI_MAX_ALIGN && l.align() <= l.size() {
                mi::mi_malloc(l.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(l.size(), l.align()) as *mut u8
            }
        }
    }
    #[inline(always)]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: as above.
        unsafe {
            if l.align() <= MI_MAX_ALIGN && l.align() <= l.size() {
                mi::mi_zalloc(l.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(l.size(), l.align()) as *mut u8
            }
        }
    }
    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: `p` is a live mimalloc block (GlobalAlloc contract).
        unsafe { libmimalloc_sys::mi_free(p as *mut _) }
    }
    #[inline(always)]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: `p` is a live mimalloc block; the new size is non-zero.
        unsafe {
            if l.align() <= MI_MAX_ALIGN && l.align() <= new {
                mi::mi_realloc(p as *mut _, new) as *mut u8
            } else {
                mi::mi_realloc_aligned(p as *mut _, new, l.align()) as *mut u8
            }
        }
    }
}

static GLIBC: Called<System> = Called(System);
static MIMALLOC: Called<MiPlain> = Called(MiPlain);
static MIMALLOC_CRATE: Called<mimalloc::MiMalloc> = Called(mimalloc::MiMalloc);
static JEMALLOC: Called<tikv_jemallocator::Jemalloc> = Called(tikv_jemallocator::Jemalloc);
static SNMALLOC: Called<snmalloc_rs::SnMalloc> = Called(snmalloc_rs::SnMalloc);
static HZ3_SCALE: Called<hz3_presets::Scale> = Called(hz3_presets::Scale::new());
static HZ3_DEFAULT: Called<hz3_presets::Hz3Default> = Called(hz3_presets::Hz3Default::new());
static HZ3_S110: Called<hz3_presets::S110Fast> = Called(hz3_presets::S110Fast::new());
static HZ3_PTAGFIRST: Called<hz3_presets::PtagFirst> = Called(hz3_presets::PtagFirst::new());
static HZ3_PTAGOFF: Called<hz3_presets::PtagOff> = Called(hz3_presets::PtagOff::new());
static HZ3_HARDENED: Called<hz3_presets::Hardened> = Called(hz3_presets::Hardened::new());
/// The hz3 scale preset inlined into the workloads (no call boundary), to show what
/// inlining is worth; not in the default run.
static HZ3_SCALE_INLINED: hz3_presets::Scale = hz3_presets::Scale::new();

/// An allocator as the process's global allocator: the same out-of-line call as [`Called`],
/// but its own type, so that reaching it through a vtable ([`GLOBAL_ALLOCATORS`]) does not
/// change the code of the `Called` functions the workloads call directly (it did: an hz3
/// `Called` referenced from the vtable came out one instruction longer per malloc/free pair).
pub struct Global<A>(pub A);

forward_out_of_line!(Global);

/// Every allocator a child can make its `#[global_allocator]` (see [`crate::global`]), by
/// report name; glibc first (the choice for the parent, preloaded and unknown names). Each is
/// behind one out-of-line call ([`Global`]); the hz3 presets' state is per type, so these
/// statics share it with the ones the workloads call.
pub static GLOBAL_ALLOCATORS: [(&str, &(dyn GlobalAlloc + Sync)); 12] = [
    ("glibc", &Global(System)),
    ("mimalloc", &Global(MiPlain)),
    ("jemalloc", &Global(tikv_jemallocator::Jemalloc)),
    ("snmalloc", &Global(snmalloc_rs::SnMalloc)),
    ("mimalloc-crate", &Global(mimalloc::MiMalloc)),
    ("hz3-scale-inlined", &Global(hz3_presets::Scale::new())),
    ("hz3-scale", &Global(hz3_presets::Scale::new())),
    ("hz3-default", &Global(hz3_presets::Hz3Default::new())),
    ("hz3-s110", &Global(hz3_presets::S110Fast::new())),
    ("hz3-ptagfirst", &Global(hz3_presets::PtagFirst::new())),
    ("hz3-ptagoff", &Global(hz3_presets::PtagOff::new())),
    ("hz3-hardened", &Global(hz3_presets::Hardened::new())),
];

/// The report name of the allocator that serves a child's `std` allocations when it measures
/// `name`: the allocator itself, glibc for preloaded ones (its symbols are the library's).
/// Never allocates (it runs inside the global allocator's first call).
pub fn global_name(name: &str) -> &str {
    if name.ends_with(PRELOAD_SUFFIX) {
        return "glibc";
    }
    preset(name).map(|p| p.name).unwrap_or(name)
}

/// Run `w` in `mode` against the allocator called `name`; `None` if the name is unknown.
/// Preloaded allocators (`…-preload`) run the workload on glibc's symbols, which
/// `LD_PRELOAD` has replaced (the child checks that).
pub fn run_named(name: &str, w: &Workload, mode: Mode) -> Option<Outcome> {
    if name.ends_with(PRELOAD_SUFFIX) {
        return Some(run_called(&GLIBC, w, mode));
    }
    Some(match preset(name).map(|p| p.name).unwrap_or(name) {
        "glibc" => run_called(&GLIBC, w, mode),
        "mimalloc" => run_called(&MIMALLOC, w, mode),
        "jemalloc" => run_called(&JEMALLOC, w, mode),
        "snmalloc" => run_called(&SNMALLOC, w, mode),
        "mimalloc-crate" => run_called(&MIMALLOC_CRATE, w, mode),
        "hz3-scale-inlined" => workloads::run(&HZ3_SCALE_INLINED, w, mode),
        "hz3-scale" => run_called(&HZ3_SCALE, w, mode),
        "hz3-default" => run_called(&HZ3_DEFAULT, w, mode),
        "hz3-s110" => run_called(&HZ3_S110, w, mode),
        "hz3-ptagfirst" => run_called(&HZ3_PTAGFIRST, w, mode),
        "hz3-ptagoff" => run_called(&HZ3_PTAGOFF, w, mode),
        "hz3-hardened" => run_called(&HZ3_HARDENED, w, mode),
        _ => return None,
    })
}

/// Every allocator of the comparison runs through this: the type says it is [`Called`].
fn run_called<A: GlobalAlloc + Sync>(a: &Called<A>, w: &Workload, mode: Mode) -> Outcome {
    workloads::run(a, w, mode)
}

/// The hz3 counters of preset allocator `name` (for the child's diagnostics line).
pub fn hz3_stats(name: &str) -> Option<hz3_runtime::StatsSnapshot> {
    Some(match preset(name)?.name {
        "hz3-scale" => hz3_presets::Scale::stats(),
        "hz3-default" => hz3_presets::Hz3Default::stats(),
        "hz3-s110" => hz3_presets::S110Fast::stats(),
        "hz3-ptagfirst" => hz3_presets::PtagFirst::stats(),
        "hz3-ptagoff" => hz3_presets::PtagOff::stats(),
        "hz3-hardened" => hz3_presets::Hardened::stats(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{run_with, ALL};

    #[test]
    fn names() {
        assert_eq!(preset("s110fast").unwrap().key, "s110");
        assert_eq!(preset("hz3-s110").unwrap().lib.unwrap().file, "libhz3_s110.so");
        assert!(preset("s111").is_none());
        for p in PRESETS {
            if let Some(l) = p.lib {
                // One name per thing: the preset key is the library's NAME.
                assert_eq!(l.file, format!("libhz3_{}.so", p.key));
                assert_eq!(preload_name(Path::new(l.file)), format!("{}-preload", p.name));
                assert_eq!(preset_of_preload(&format!("{}-preload", p.name)).unwrap().key, p.key);
            }
        }
        assert_eq!(preload_name(Path::new("/x/libhz3_my_lane.so")), "hz3-my-lane-preload");
        assert_eq!(preload_name(Path::new("/usr/lib/libjemalloc.so.2")), "jemalloc-preload");
    }

    /// Every allocator runs every workload shape with tiny parameters.
    #[test]
    fn every_allocator_every_workload_tiny() {
        let names: Vec<&str> = OTHERS
            .iter()
            .copied()
            .chain(EXTRA.iter().copied())
            .chain(PRESETS.iter().map(|p| p.name))
            .collect();
        for name in names {
            for w in ALL {
                let mut p = w.params(Mode::Quick);
                p.iters = (p.iters / 500).max(100);
                p.warm = 20;
                if let workloads::Kind::Program(shape) = w.kind {
                    workloads::programs::tiny(shape, &mut p);
                }
                let o = match name {
                    "glibc" => run_with(&GLIBC, w.kind, &p),
                    "mimalloc" => run_with(&MIMALLOC, w.kind, &p),
                    "jemalloc" => run_with(&JEMALLOC, w.kind, &p),
                    "snmalloc" => run_with(&SNMALLOC, w.kind, &p),
                    "mimalloc-crate" => run_with(&MIMALLOC_CRATE, w.kind, &p),
                    "hz3-scale-inlined" => run_with(&HZ3_SCALE_INLINED, w.kind, &p),
                    "hz3-scale" => run_with(&HZ3_SCALE, w.kind, &p),
                    "hz3-default" => run_with(&HZ3_DEFAULT, w.kind, &p),
                    "hz3-s110" => run_with(&HZ3_S110, w.kind, &p),
                    "hz3-ptagfirst" => run_with(&HZ3_PTAGFIRST, w.kind, &p),
                    "hz3-ptagoff" => run_with(&HZ3_PTAGOFF, w.kind, &p),
                    "hz3-hardened" => run_with(&HZ3_HARDENED, w.kind, &p),
                    _ => unreachable!("{name}"),
                };
                assert!(o.ops > 0, "{name}/{}", w.name);
            }
        }
    }

    /// Runs in a test process started by [`every_allocator_as_global_allocator`] with an
    /// allocator named in the environment (and, with glibc, in the ordinary test run): every
    /// workload, the `rust_` ones included, with that allocator as the process's global one.
    #[test]
    fn workloads_on_the_global_allocator() {
        let want = std::env::var(crate::global::ENV).unwrap_or_else(|_| "glibc".into());
        assert_eq!(crate::global::current_name(), global_name(&want));
        for w in ALL {
            let mut p = w.params(Mode::Quick);
            p.iters = (p.iters / 500).max(100);
            p.warm = 20;
            if let workloads::Kind::Program(shape) = w.kind {
                workloads::programs::tiny(shape, &mut p);
            }
            let o = run_with(&crate::global::Dispatch, w.kind, &p);
            assert!(o.ops > 0, "{want}/{}", w.name);
        }
    }

    /// Every allocator serves as the whole process's `#[global_allocator]` (the test harness,
    /// its threads and the `std` collections of the rust_ workloads): this test binary is
    /// started once per allocator with [`crate::global::ENV`] set, running only
    /// [`workloads_on_the_global_allocator`].
    #[test]
    fn every_allocator_as_global_allocator() {
        let exe = std::env::current_exe().unwrap();
        for (name, _) in &GLOBAL_ALLOCATORS {
            let out = std::process::Command::new(&exe)
                .args(["--exact", "allocators::tests::workloads_on_the_global_allocator", "--test-threads=1"])
                .env(crate::global::ENV, name)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{name}: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
