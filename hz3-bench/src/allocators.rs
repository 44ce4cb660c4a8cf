//! The allocators under test: one `static` instance of each, and the name → monomorphised
//! workload dispatch used by the child process.
//!
//! None of these is the `#[global_allocator]`: the harness itself allocates from `System`
//! (glibc), and each workload calls the allocator under test through `GlobalAlloc` directly.
//! The `mimalloc` crate builds mimalloc without malloc override and `tikv-jemallocator` uses
//! prefixed jemalloc symbols, so neither replaces glibc's `malloc` in the process.

use crate::workloads::{self, Mode, Outcome, Workload};
use std::alloc::System;

/// The hz3 presets selectable with `--hz3`: (preset key, allocator name).
pub const HZ3_PRESETS: &[(&str, &str)] = &[
    ("scale", "hz3-scale"),
    ("default", "hz3-default"),
    ("s110fast", "hz3-s110fast"),
    ("ptagfirst", "hz3-ptagfirst"),
    ("ptagoff", "hz3-ptagoff"),
];

/// hz3 presets measured through their C interface: the child runs the workload on
/// `System` (glibc's `malloc` symbols) with `LD_PRELOAD` set to the preset's `cdylib`, so
/// every call goes through the PLT into the preloaded library, as in a C program.
/// (allocator name, cargo package, library file next to the hz3-bench executable).
pub const PRELOADED: &[(&str, &str, &str)] = &[("hz3-scale-preload", "hz3-scale", "libhz3_scale.so")];

/// The reference allocators, in report order (mimalloc is the ratio baseline).
pub const OTHERS: &[&str] = &["mimalloc", "jemalloc", "glibc"];

/// The preloaded library of allocator `name` (`None` for in-process allocators).
pub fn preload_lib(name: &str) -> Option<(&'static str, &'static str)> {
    PRELOADED.iter().find(|(n, _, _)| *n == name).map(|(_, pkg, lib)| (*pkg, *lib))
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

/// The allocator every ratio is taken against.
pub const BASELINE: &str = "mimalloc";

/// Allocator name of an hz3 preset key (`scale` → `hz3-scale`).
pub fn hz3_name(preset: &str) -> Option<&'static str> {
    HZ3_PRESETS
        .iter()
        .find(|(k, n)| *k == preset || *n == preset)
        .map(|(_, n)| *n)
}

/// Whether `name` is a known allocator.
pub fn is_known(name: &str) -> bool {
    OTHERS.contains(&name) || HZ3_PRESETS.iter().any(|(_, n)| *n == name) || preload_lib(name).is_some()
}

static GLIBC: System = System;
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static HZ3_SCALE: hz3_presets::Scale = hz3_presets::Scale::new();
static HZ3_DEFAULT: hz3_presets::Hz3Default = hz3_presets::Hz3Default::new();
static HZ3_S110FAST: hz3_presets::S110Fast = hz3_presets::S110Fast::new();
static HZ3_PTAGFIRST: hz3_presets::PtagFirst = hz3_presets::PtagFirst::new();
static HZ3_PTAGOFF: hz3_presets::PtagOff = hz3_presets::PtagOff::new();

/// Run `w` in `mode` against the allocator called `name`; `None` if the name is unknown.
pub fn run_named(name: &str, w: &Workload, mode: Mode) -> Option<Outcome> {
    Some(match name {
        // A preloaded hz3 is reached through glibc's symbols (checked by the child).
        "glibc" | "hz3-scale-preload" => workloads::run(&GLIBC, w, mode),
        "mimalloc" => workloads::run(&MIMALLOC, w, mode),
        "jemalloc" => workloads::run(&JEMALLOC, w, mode),
        "hz3-scale" => workloads::run(&HZ3_SCALE, w, mode),
        "hz3-default" => workloads::run(&HZ3_DEFAULT, w, mode),
        "hz3-s110fast" => workloads::run(&HZ3_S110FAST, w, mode),
        "hz3-ptagfirst" => workloads::run(&HZ3_PTAGFIRST, w, mode),
        "hz3-ptagoff" => workloads::run(&HZ3_PTAGOFF, w, mode),
        _ => return None,
    })
}

/// The hz3 counters of preset allocator `name` (for the child's diagnostics line).
pub fn hz3_stats(name: &str) -> Option<hz3_runtime::StatsSnapshot> {
    Some(match name {
        "hz3-scale" => hz3_presets::Scale::stats(),
        "hz3-default" => hz3_presets::Hz3Default::stats(),
        "hz3-s110fast" => hz3_presets::S110Fast::stats(),
        "hz3-ptagfirst" => hz3_presets::PtagFirst::stats(),
        "hz3-ptagoff" => hz3_presets::PtagOff::stats(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{run_with, ALL};

    /// Every allocator runs every workload shape with tiny parameters.
    #[test]
    fn every_allocator_every_workload_tiny() {
        let names: Vec<&str> = OTHERS
            .iter()
            .copied()
            .chain(HZ3_PRESETS.iter().map(|(_, n)| *n))
            .collect();
        for name in names {
            for w in ALL {
                let mut p = w.params(Mode::Quick);
                p.iters = (p.iters / 500).max(100);
                p.warm = 20;
                let o = match name {
                    "glibc" => run_with(&GLIBC, w.kind, &p),
                    "mimalloc" => run_with(&MIMALLOC, w.kind, &p),
                    "jemalloc" => run_with(&JEMALLOC, w.kind, &p),
                    "hz3-scale" => run_with(&HZ3_SCALE, w.kind, &p),
                    "hz3-default" => run_with(&HZ3_DEFAULT, w.kind, &p),
                    "hz3-s110fast" => run_with(&HZ3_S110FAST, w.kind, &p),
                    "hz3-ptagfirst" => run_with(&HZ3_PTAGFIRST, w.kind, &p),
                    "hz3-ptagoff" => run_with(&HZ3_PTAGOFF, w.kind, &p),
                    _ => unreachable!(),
                };
                assert!(o.ops > 0, "{name}/{}", w.name);
            }
        }
    }
}
