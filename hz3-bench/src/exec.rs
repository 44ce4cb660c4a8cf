//! `hz3-bench exec -- PROGRAM ARGS…`: a user's own program under each allocator's
//! `LD_PRELOAD` library, runs interleaved across allocators; median wall time, its spread and
//! peak RSS per allocator.
//!
//! Allocators: the hz3 presets that have a library (built first with this executable's
//! profile), mimalloc / jemalloc / tcmalloc from the Debian packages when their shared
//! libraries are installed, glibc (no preload), and any `--preload` file. Peak RSS is the
//! child's `ru_maxrss` as `wait4` returns it. A run whose program exits non-zero, or whose
//! library the dynamic linker refused to preload, counts as failed.

use crate::allocators::{self, PRESETS};
use crate::report::median;
use crate::runner::Progress;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A shared library from a Debian package: allocator name, file name prefix, package.
const SYSTEM_LIBS: &[(&str, &str, &str)] = &[
    ("mimalloc", "libmimalloc.so", "libmimalloc2.0"),
    ("jemalloc", "libjemalloc.so", "libjemalloc2"),
    ("tcmalloc", "libtcmalloc_minimal.so", "libtcmalloc-minimal4"),
];

/// Where Debian puts shared libraries (multiarch directories first).
fn lib_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.ends_with("-linux-gnu")))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.push("/usr/lib".into());
    dirs.push("/usr/local/lib".into());
    dirs
}

/// The installed library whose file name starts with `prefix` (`libjemalloc.so` matches
/// `libjemalloc.so.2`); the shortest name wins (the plain `.so` or `.so.N` over `.so.N.M`).
pub fn find_system_lib(prefix: &str) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = lib_dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(prefix)))
        .filter(|p| p.is_file())
        .collect();
    hits.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    hits.into_iter().next()
}

/// One allocator of an exec run.
#[derive(Clone, Debug)]
pub struct ExecAlloc {
    /// Name in the report.
    pub name: String,
    /// `LD_PRELOAD` library (`None`: glibc).
    pub lib: Option<PathBuf>,
}

/// Names `exec --allocators` accepts.
pub fn exec_names() -> Vec<&'static str> {
    PRESETS
        .iter()
        .filter(|p| p.lib.is_some())
        .map(|p| p.key)
        .chain(SYSTEM_LIBS.iter().map(|s| s.0))
        .chain(["glibc"])
        .collect()
}

/// The allocators to run: `wanted` (names, `None` = all available) plus `extra` library files.
pub fn select(wanted: Option<&[String]>, extra: &[PathBuf]) -> Result<Vec<ExecAlloc>, String> {
    let explicit = wanted.is_some();
    let names: Vec<String> = match wanted {
        Some(w) => w.to_vec(),
        None => exec_names().iter().map(|s| s.to_string()).collect(),
    };
    let mut out = Vec::new();
    for n in &names {
        let n = n.as_str();
        if n == "glibc" || n == "system" {
            out.push(ExecAlloc { name: "glibc".into(), lib: None });
        } else if let Some(p) = allocators::preset(n.strip_suffix(allocators::PRELOAD_SUFFIX).unwrap_or(n)) {
            let Some(lib) = p.lib else {
                return Err(format!("preset {} has no LD_PRELOAD library; exec runs: {}", p.key, exec_names().join(", ")));
            };
            match crate::child::build_preset_lib(lib) {
                Ok(path) => out.push(ExecAlloc { name: p.name.into(), lib: Some(path) }),
                Err(e) if !explicit => eprintln!("hz3-bench exec: {} left out: {e}", p.name),
                Err(e) => return Err(format!("{}: {e}", p.name)),
            }
        } else if let Some((name, prefix, pkg)) = SYSTEM_LIBS.iter().find(|s| s.0 == n) {
            match find_system_lib(prefix) {
                Some(path) => out.push(ExecAlloc { name: name.to_string(), lib: Some(path) }),
                None if !explicit => eprintln!(
                    "hz3-bench exec: {name} left out: no {prefix}* installed (Debian package {pkg}: apt-get install {pkg})"
                ),
                None => return Err(format!("{name}: no {prefix}* installed (Debian package {pkg}: apt-get install {pkg})")),
            }
        } else {
            return Err(format!("unknown allocator {n:?} for exec; allocators: {}", exec_names().join(", ")));
        }
    }
    for f in extra {
        if !f.is_file() {
            return Err(format!("--preload {}: no such file", f.display()));
        }
        let name = f.file_name().and_then(|s| s.to_str()).unwrap_or("lib").to_string();
        out.push(ExecAlloc { name, lib: Some(f.canonicalize().unwrap_or(f.clone())) });
    }
    if out.is_empty() {
        return Err("no allocator to run".into());
    }
    Ok(out)
}

/// `Ok` when `program` names a file to run (a path, or a name found on `PATH`).
pub fn check_program(program: &str) -> Result<(), String> {
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
            .unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(format!("program {program:?} not found (not a file, and not on PATH)"))
    }
}

/// One run of the program.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecRun {
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak RSS of the child, KiB.
    pub maxrss_kib: u64,
}

/// Run `program` once with `lib` preloaded; `Err` says why the run does not count.
pub fn run_once(program: &[String], lib: Option<&Path>, show_output: bool) -> Result<ExecRun, String> {
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..]).stdin(Stdio::null());
    match lib {
        Some(l) => cmd.env("LD_PRELOAD", l),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    if show_output {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", program[0]))?;
    // Drain stderr on a thread so a chatty program never blocks on a full pipe.
    let reader = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    });
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = loop {
        // SAFETY: `pid` is our own child, not yet reaped (std's `Child` is never waited on
        // here); `status` and `ru` are valid, writable locals.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break rc;
    };
    let wall = t0.elapsed();
    let err = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    if rc != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if err.contains("cannot be preloaded") {
        let line = err.lines().find(|l| l.contains("cannot be preloaded")).unwrap_or("");
        return Err(format!("library not preloaded: {}", line.trim()));
    }
    if !libc::WIFEXITED(status) {
        return Err(format!("killed by signal {}", libc::WTERMSIG(status)));
    }
    if libc::WEXITSTATUS(status) != 0 {
        let last = err.lines().last().unwrap_or("").trim();
        return Err(format!("exit status {}{}", libc::WEXITSTATUS(status), if last.is_empty() { String::new() } else { format!(": {last}") }));
    }
    Ok(ExecRun { wall, maxrss_kib: ru.ru_maxrss as u64 })
}

/// Results of one allocator.
#[derive(Clone, Debug, Default)]
pub struct ExecCell {
    /// Successful runs.
    pub ok: Vec<ExecRun>,
    /// Why the other runs failed.
    pub failed: Vec<String>,
}

/// Run every allocator `runs` times, interleaved (A B C A B C …); before a run of an
/// allocator whose earlier runs peaked above `prewarm::MIN_MIB`, the kernel's free memory is
/// warmed ([`crate::prewarm`]).
pub fn execute(program: &[String], allocs: &[ExecAlloc], runs: usize, show_output: bool) -> (Vec<ExecCell>, Duration) {
    let mut cells = vec![ExecCell::default(); allocs.len()];
    let mut p = Progress::new(runs * allocs.len());
    for round in 0..runs {
        for (i, a) in allocs.iter().enumerate() {
            let group = format!("round {}/{runs}", round + 1);
            p.step(&format!("{} ({})", a.name, group), (i == 0).then_some(group.as_str()));
            let peak = cells[i].ok.iter().map(|r| r.maxrss_kib).max().unwrap_or(0);
            crate::prewarm::warm(crate::prewarm::mib_for(peak));
            match run_once(program, a.lib.as_deref(), show_output) {
                Ok(r) => cells[i].ok.push(r),
                Err(e) => {
                    p.note(&format!("{}: run {} failed: {e}", a.name, round + 1));
                    cells[i].failed.push(e);
                }
            }
            p.inc();
        }
    }
    (cells, p.finish())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// (median, min, max) of one allocator's wall times (s) and peak RSS (MiB).
#[derive(Clone, Copy, Debug)]
struct Spread {
    time: (f64, f64, f64),
    rss: (f64, f64, f64),
}

/// The markdown report (also printed) and the CSV.
pub fn report(program: &[String], allocs: &[ExecAlloc], cells: &[ExecCell], header: &str) -> (String, String) {
    let stats: Vec<Option<Spread>> = cells
        .iter()
        .map(|c| {
            let t: Vec<f64> = c.ok.iter().map(|r| secs(r.wall)).collect();
            let m: Vec<f64> = c.ok.iter().map(|r| r.maxrss_kib as f64 / 1024.0).collect();
            let mt = median(t.clone())?;
            let mm = median(m.clone())?;
            let (tl, th) = t.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
            let (ml, mh) = m.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
            Some(Spread { time: (mt, tl, th), rss: (mm, ml, mh) })
        })
        .collect();
    let best_t = stats.iter().flatten().map(|s| s.time.0).fold(f64::INFINITY, f64::min);
    let best_m = stats.iter().flatten().map(|s| s.rss.0).fold(f64::INFINITY, f64::min);
    let glibc = allocs.iter().position(|a| a.lib.is_none()).and_then(|i| stats[i]);
    let mut md = String::new();
    let quoted: Vec<String> = program.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() }).collect();
    let _ = writeln!(md, "# hz3-bench exec: `{}`\n\n{header}\n", quoted.join(" "));
    let _ = writeln!(
        md,
        "| allocator | median wall time | spread (min–max) | × glibc time | peak RSS MiB | RSS spread | runs | library |\n|---|---:|---:|---:|---:|---:|---:|---|"
    );
    let mut csv = String::from("allocator,library,runs_ok,runs_failed,median_secs,min_secs,max_secs,median_peak_rss_kib,min_peak_rss_kib,max_peak_rss_kib\n");
    for (i, a) in allocs.iter().enumerate() {
        let c = &cells[i];
        let lib = a.lib.as_ref().map(|l| l.display().to_string()).unwrap_or_else(|| "(none)".into());
        let n = format!("{}/{}", c.ok.len(), c.ok.len() + c.failed.len());
        match stats[i] {
            None => {
                let _ = writeln!(md, "| {} | FAILED | - | - | - | - | {n} | `{lib}` |", a.name);
                let _ = writeln!(csv, "{},{},0,{},,,,,,", a.name, crate::report::csv_field(&lib), c.failed.len());
            }
            Some(Spread { time: (mt, tl, th), rss: (mm, ml, mh) }) => {
                let bold = |s: String, best: bool| if best { format!("**{s}**") } else { s };
                let t = bold(fmt_secs(mt), fmt_secs(mt) == fmt_secs(best_t));
                let m = bold(format!("{mm:.1}"), format!("{mm:.1}") == format!("{best_m:.1}"));
                let vs = glibc.map(|g| format!("{:.2}", mt / g.time.0)).unwrap_or("-".into());
                let _ = writeln!(
                    md,
                    "| {} | {t} | {}–{} | {vs} | {m} | {ml:.1}–{mh:.1} | {n} | `{lib}` |",
                    a.name,
                    fmt_secs(tl),
                    fmt_secs(th)
                );
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{mt:.6},{tl:.6},{th:.6},{:.0},{:.0},{:.0}",
                    a.name,
                    crate::report::csv_field(&lib),
                    c.ok.len(),
                    c.failed.len(),
                    mm * 1024.0,
                    ml * 1024.0,
                    mh * 1024.0
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\nWall time from start to exit of the program (median of the runs); **bold**: the fastest and the \
         lowest peak RSS. × glibc time < 1 = faster than glibc's malloc. Peak RSS = ru_maxrss of the program \
         as wait4 returns it. Runs are interleaved across allocators; a run that exits non-zero or whose library \
         was not preloaded is left out (see runs)."
    );
    for (a, c) in allocs.iter().zip(cells) {
        if let Some(e) = c.failed.first() {
            let _ = writeln!(md, "\n{}: {} failed run(s), first: {e}", a.name, c.failed.len());
        }
    }
    (md, csv)
}

/// `1.234 s` / `12.3 ms`.
fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn measures_a_program_and_its_peak_rss() {
        // A started program's ru_maxrss counts the starting process's peak RSS too (the
        // program begins in a copy of its address space), and other tests of this process
        // hold tens of MiB: measure from a fresh test process running only this test.
        const ALONE: &str = "HZ3_BENCH_TEST_EXEC_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "exec::tests::measures_a_program_and_its_peak_rss"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}");
            return;
        }
        // A shell that touches ~40 MiB through a string: peak RSS must show it.
        let small = run_once(&prog(&["sh", "-c", "exit 0"]), None, false).unwrap();
        let big = run_once(&prog(&["python3", "-c", "b = bytearray(40 << 20); b[::4096] = b'x' * len(b[::4096])"]), None, false);
        assert!(small.maxrss_kib > 0 && small.wall > Duration::ZERO);
        if let Ok(big) = big {
            assert!(big.maxrss_kib > small.maxrss_kib + 30 * 1024, "{big:?} vs {small:?}");
        }
    }

    #[test]
    fn failures_are_reported() {
        let e = run_once(&prog(&["sh", "-c", "echo boom >&2; exit 3"]), None, false).unwrap_err();
        assert!(e.contains("exit status 3") && e.contains("boom"), "{e}");
        let e = run_once(&prog(&["/nonexistent/program"]), None, false).unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
        let e = run_once(&prog(&["sh", "-c", "exit 0"]), Some(Path::new("/nonexistent/libx.so")), false).unwrap_err();
        assert!(e.contains("not preloaded"), "{e}");
    }

    #[test]
    fn program_lookup() {
        assert!(check_program("sh").is_ok());
        assert!(check_program("/bin/sh").is_ok());
        assert!(check_program("no-such-program-hz3").unwrap_err().contains("not found"));
    }

    #[test]
    fn selection() {
        let g = select(Some(&["glibc".to_string()]), &[]).unwrap();
        assert_eq!(g.len(), 1);
        assert!(g[0].lib.is_none());
        let e = select(Some(&["nope".to_string()]), &[]).unwrap_err();
        assert!(e.contains("scale") && e.contains("tcmalloc") && e.contains("glibc"), "{e}");
        let e = select(Some(&["ptagoff".to_string()]), &[]).unwrap_err();
        assert!(e.contains("no LD_PRELOAD library"), "{e}");
    }
}
