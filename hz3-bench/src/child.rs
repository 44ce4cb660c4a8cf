//! The child process: one (allocator, workload) run per process, so that its peak RSS
//! belongs to that allocator alone.
//!
//! The parent re-executes `std::env::current_exe()` as `hz3-bench child <alloc> <workload>
//! <mode>`; the child runs the workload (warm-up, then timed pass), reads its own peak RSS with
//! `getrusage(RUSAGE_SELF)` and prints one `RESULT key=value …` line on stdout, which
//! [`parse_result`] turns back into a [`RunResult`].

use crate::allocators::{self, PresetLib};
use crate::workloads::{Mode, Workload};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one child run reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResult {
    /// Counted ops of the timed pass.
    pub ops: u64,
    /// Seconds of the timed pass.
    pub secs: f64,
    /// Peak resident set of the child process, KiB (`ru_maxrss`, nothing subtracted).
    pub maxrss_kib: u64,
    /// Frees that went through a ring to another thread.
    pub remote_frees: u64,
    /// All frees counted by the workload (0 when it does not count them).
    pub frees: u64,
    /// hz3 counters after the run, warm-up included (hz3 presets built with `stats`),
    /// `key:value;…`; empty otherwise.
    pub hz3: String,
    /// Instructions of the whole child process, when it ran under callgrind.
    pub instructions: Option<u64>,
}

impl RunResult {
    /// Throughput of the timed pass.
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
    /// Share of frees that were remote, if the workload counts frees.
    pub fn remote_share(&self) -> Option<f64> {
        (self.frees > 0).then(|| self.remote_frees as f64 / self.frees as f64)
    }
}

/// Peak RSS of this process in KiB.
fn peak_rss_kib() -> u64 {
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc == 0 {
        ru.ru_maxrss as u64 // KiB on Linux
    } else {
        0
    }
}

/// Entry point of `hz3-bench child <alloc> <workload> <mode>`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let [alloc, workload, mode] = args else {
        eprintln!("usage: hz3-bench child <allocator> <workload> <quick|default|full>");
        return 2;
    };
    let (Some(w), Some(mode)) = (Workload::by_name(workload), Mode::parse(mode)) else {
        eprintln!("child: unknown workload {workload:?} or mode {mode:?}");
        return 2;
    };
    if alloc.ends_with(allocators::PRELOAD_SUFFIX) {
        let lib = std::env::var("LD_PRELOAD").unwrap_or_default();
        let file = Path::new(&lib).file_name().and_then(|f| f.to_str()).unwrap_or("");
        if file.is_empty() || !allocators::malloc_comes_from(file) {
            eprintln!("child: {alloc}: malloc does not come from the LD_PRELOAD library {lib:?} (not preloadable, or not an allocator)");
            return 2;
        }
    }
    // The std collections of the rust_ workloads (and the harness's own buffers) must come
    // from the allocator under test: the parent names it in the environment.
    let global = if w.std_on_allocator_under_test() { allocators::global_name(alloc) } else { "glibc" };
    if crate::global::current_name() != global {
        eprintln!(
            "child: std allocations go to {}, not {global}: start children through hz3-bench (or set {}={alloc})",
            crate::global::current_name(),
            crate::global::ENV
        );
        return 2;
    }
    let Some(o) = allocators::run_named(alloc, w, mode) else {
        eprintln!("child: unknown allocator {alloc:?}");
        return 2;
    };
    let rss = peak_rss_kib();
    let hz3 = allocators::hz3_stats(alloc)
        .filter(|s| *s != hz3_runtime::StatsSnapshot::default())
        .map(|s| {
            format!(
                "allocs:{};local:{};remote:{};refills:{};flushes:{}",
                s.allocs, s.local, s.remote, s.refills, s.flushes
            )
        })
        .unwrap_or_default();
    println!(
        "RESULT ops={} secs={:.9} maxrss_kib={} remote={} frees={} hz3={}",
        o.ops, o.secs, rss, o.remote_frees, o.frees, hz3
    );
    0
}

/// Parse the child's `RESULT …` line out of its stdout.
pub fn parse_result(stdout: &str) -> Option<RunResult> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let mut r = RunResult::default();
    let mut seen = 0;
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "ops" => r.ops = v.parse().ok()?,
            "secs" => r.secs = v.parse().ok()?,
            "maxrss_kib" => r.maxrss_kib = v.parse().ok()?,
            "remote" => r.remote_frees = v.parse().ok()?,
            "frees" => r.frees = v.parse().ok()?,
            "hz3" => r.hz3 = v.to_string(),
            _ => continue,
        }
        seen += 1;
    }
    (seen >= 5).then_some(r)
}

/// Where this executable's cargo profile puts the workspace's `cdylib`s (its own directory).
pub fn profile_dir() -> Option<PathBuf> {
    Some(std::env::current_exe().ok()?.parent()?.to_path_buf())
}

/// Build the `LD_PRELOAD` library of a preset with the profile and target directory of this
/// executable (`$CARGO` when run by `cargo run`, else `cargo` on the PATH), so the library is
/// never older than the engine the in-process presets were built from. Returns its path.
pub fn build_preset_lib(lib: PresetLib) -> Result<PathBuf, String> {
    let pkg = lib.package;
    let profile_dir = profile_dir().ok_or("no executable path")?;
    let path = profile_dir.join(lib.file);
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", pkg]).arg("--manifest-path").arg(&manifest);
    cmd.arg("--target-dir").arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(p) => {
            cmd.args(["--profile", p]);
        }
        None => return Err("no profile directory name".into()),
    }
    let st = cmd.status().map_err(|e| format!("cargo build -p {pkg}: {e}"))?;
    if !st.success() {
        return Err(format!("cargo build -p {pkg}: {st}"));
    }
    if !path.exists() {
        return Err(format!("{} missing after cargo build -p {pkg}", path.display()));
    }
    Ok(path)
}

/// Run one child and collect its result; `Err` carries the reason (exit status, stderr).
/// `preload` is the library to put in `LD_PRELOAD` (preloaded allocators only); with
/// `callgrind` the child runs under `valgrind --tool=callgrind` and its instructions are read
/// from valgrind's "Collected" line.
pub fn spawn(
    alloc: &str,
    preload: Option<&Path>,
    workload: &str,
    mode: Mode,
    callgrind: bool,
) -> Result<RunResult, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = if callgrind {
        let mut c = Command::new("valgrind");
        c.args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(["child", alloc, workload, mode.name()]);
    if Workload::by_name(workload).is_some_and(|w| w.std_on_allocator_under_test()) {
        cmd.env(crate::global::ENV, alloc);
    } else {
        cmd.env_remove(crate::global::ENV);
    }
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    let out = cmd.output().map_err(|e| format!("spawn: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{}: {}", out.status, err.trim()));
    }
    let mut r = parse_result(&stdout).ok_or_else(|| format!("no RESULT line in child output: {stdout:?}"))?;
    if callgrind {
        let err = String::from_utf8_lossy(&out.stderr);
        r.instructions = Some(
            collected_instructions(&err).ok_or_else(|| format!("no \"Collected\" line in valgrind's output: {}", err.trim()))?,
        );
    }
    Ok(r)
}

/// The total instruction count of valgrind's `==PID== Collected : N` line.
pub fn collected_instructions(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.trim().replace(',', "").parse().ok()
    })
}

/// `Ok` when `valgrind` runs; the error says how to get it otherwise.
pub fn valgrind_available() -> Result<(), String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("--metric instructions needs valgrind (callgrind counts the instructions): \
                  install it, e.g. `apt-get install valgrind`, or use --metric time"
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_roundtrip() {
        let r =
            parse_result("noise\nRESULT ops=10 secs=0.5 maxrss_kib=2048 remote=3 frees=6 hz3=\n")
                .unwrap();
        assert_eq!(r.ops, 10);
        assert_eq!(r.ops_per_sec(), 20.0);
        assert_eq!(r.remote_share(), Some(0.5));
        assert!(parse_result("RESULT ops=x").is_none());
        assert!(parse_result("nothing").is_none());
    }

    #[test]
    fn callgrind_total() {
        let err = "==21087== Callgrind, a call-graph generating cache profiler\n==21087== \n==21087== Events    : Ir\n==21087== Collected : 126559\n==21087== \n==21087== I   refs:      126,559\n";
        assert_eq!(collected_instructions(err), Some(126_559));
        assert_eq!(collected_instructions("==1== I refs: 5"), None);
    }

    #[test]
    fn peak_rss_positive() {
        assert!(peak_rss_kib() > 0);
    }
}
