//! `hz3-bench`: compares hz3 presets with mimalloc, jemalloc, snmalloc and glibc on allocator
//! workloads, A/Bs two hz3 presets, and runs a user's program under each allocator's
//! `LD_PRELOAD` library (see README.md).
//!
//! This file is the orchestration: it turns the parsed command line ([`cli`]) into a
//! [`runner::Plan`], runs it (one child process per run, see [`child`]), and writes the
//! markdown table (stdout and `results.md`), `results.csv`, `runs.csv` and `chart.svg` into
//! `target/hz3-bench/`. `hz3-bench ab` compares two hz3 presets ([`ab`]); `hz3-bench exec`
//! runs a program ([`exec`]).

mod ab;
mod allocators;
mod child;
mod cli;
mod exec;
mod global;
mod prewarm;
mod report;
mod runner;
mod stats;
mod svg;
mod workloads;

use clap::Parser;
use cli::{AbArgs, Cli, Cmd, Preload, RunArgs, Side};
use runner::{fmt_duration, Plan};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;
use workloads::{Mode, Workload, ALL};

/// Workloads selected by `filter` (names or `prefix` matching `prefix_*`), in catalogue order.
fn select_workloads(filter: &Option<Vec<String>>) -> Vec<&'static Workload> {
    let Some(f) = filter else {
        return ALL.iter().collect();
    };
    let matches = |e: &str, w: &Workload| w.name == e || w.name.starts_with(&format!("{e}_"));
    ALL.iter()
        .filter(|w| f.iter().any(|e| matches(e, w)))
        .collect()
}

/// One allocator to run: its report name and, for preloaded ones, where its library comes from.
#[derive(Clone, Debug, PartialEq)]
struct Pick {
    name: String,
    preload: Option<Preload>,
}

impl Pick {
    fn named(name: &str) -> Pick {
        let preload = allocators::preset_of_preload(name).map(|p| Preload::Preset(p.key));
        Pick { name: name.to_string(), preload }
    }
    fn preloaded(p: &Preload) -> Pick {
        let name = match p {
            Preload::Preset(k) => format!("{}{}", allocators::preset(k).map(|p| p.name).unwrap_or(k), allocators::PRELOAD_SUFFIX),
            Preload::File(f) => allocators::preload_name(f),
        };
        Pick { name, preload: Some(p.clone()) }
    }
}

/// Report order of an allocator: in-process hz3 (the --hz3 order first), preloaded, others.
fn rank(name: &str, hz3: &[&str]) -> usize {
    if let Some(i) = hz3.iter().position(|h| *h == name) {
        return i;
    }
    if let Some(i) = allocators::PRESETS.iter().position(|p| p.name == name) {
        return 100 + i;
    }
    if name.ends_with(allocators::PRELOAD_SUFFIX) {
        return 200;
    }
    if allocators::is_hz3(name) {
        return 150;
    }
    300 + allocators::OTHERS.iter().position(|o| *o == name).unwrap_or(99)
}

/// Allocators selected by `--hz3`, `--allocators` and `--preload`, in report order.
fn select_allocs(o: &RunArgs) -> Vec<Pick> {
    let mut hz3: Vec<&str> = o
        .hz3
        .iter()
        .filter_map(|p| allocators::preset(p).map(|p| p.name))
        .collect();
    if hz3.is_empty() {
        hz3.push("hz3-scale");
    }
    hz3.dedup();
    let mut names: Vec<String> = match &o.allocators {
        None => hz3
            .iter()
            .copied()
            .chain(allocators::DEFAULT_PRELOADED.iter().copied())
            .chain(allocators::OTHERS.iter().copied())
            .map(String::from)
            .collect(),
        Some(f) => {
            let mut want: Vec<String> = Vec::new();
            for e in f {
                match e.as_str() {
                    "hz3" => want.extend(hz3.iter().map(|s| s.to_string())),
                    "system" => want.push("glibc".into()),
                    n => want.push(match (allocators::preset(n), allocators::preset_of_preload(n)) {
                        (Some(p), _) => p.name.to_string(),
                        (None, Some(p)) => format!("{}{}", p.name, allocators::PRELOAD_SUFFIX),
                        _ => n.to_string(),
                    }),
                }
            }
            want
        }
    };
    let mut picks: Vec<Pick> = Vec::new();
    names.sort_by_key(|n| rank(n, &hz3));
    names.dedup();
    for n in &names {
        picks.push(Pick::named(n));
    }
    for p in &o.preload {
        let pick = Pick::preloaded(p);
        if !picks.iter().any(|q| q.name == pick.name) {
            picks.push(pick);
        }
    }
    picks.sort_by_key(|p| rank(&p.name, &hz3));
    picks
}

/// The library file of a pick: built by cargo for a preset, as given for a file.
fn preload_file(p: &Preload) -> Result<PathBuf, String> {
    match p {
        Preload::File(f) => Ok(f.clone()),
        Preload::Preset(k) => {
            let lib = allocators::preset(k)
                .and_then(|p| p.lib)
                .ok_or(format!("preset {k} has no library"))?;
            child::build_preset_lib(lib)
        }
    }
}

fn runs_of(size: &cli::SizeArgs, quick: usize, default: usize, full: usize) -> usize {
    size.runs.map(|r| r as usize).unwrap_or(match size.mode() {
        Mode::Quick => quick,
        Mode::Default => default,
        Mode::Full => full,
    })
}

/// `<workspace target dir>/hz3-bench`: `$CARGO_TARGET_DIR` if set, else `target/` next to the
/// workspace root Cargo.toml (the parent of this crate's manifest dir).
fn default_out_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => PathBuf::from(t),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("target"),
    };
    target.join("hz3-bench")
}

/// UTC `YYYY-MM-DD HH:MM` of now.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn machine_line() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, load average {load} at start")
}

fn write_file(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))
}

fn check(dir: &Path, workloads: &[&str], allocs: &[String]) -> bool {
    match report::check_outputs(dir, workloads, allocs) {
        Ok(n) => {
            eprintln!("check: {n} (workload, allocator) rows present with ops/s > 0; results.md and chart.svg parse");
            true
        }
        Err(errs) => {
            for e in errs {
                eprintln!("check: {e}");
            }
            false
        }
    }
}

fn run_compare(o: &RunArgs) -> Result<bool, String> {
    let mode = o.size.mode();
    let workloads = select_workloads(&o.size.workloads);
    let picks = select_allocs(o);
    // Preloaded allocators need their library; one the user did not name is dropped (with a
    // note) when its build fails, one named with --allocators or --preload is an error.
    let (mut allocs, mut preloads) = (Vec::new(), Vec::new());
    for p in picks {
        let lib = match &p.preload {
            None => None,
            Some(pre) => match preload_file(pre) {
                Ok(f) => Some(f),
                Err(e) if o.allocators.is_none() && !o.preload.contains(pre) => {
                    eprintln!("hz3-bench: {} left out: {e}", p.name);
                    continue;
                }
                Err(e) => return Err(format!("{}: {e}", p.name)),
            },
        };
        allocs.push(p.name);
        preloads.push(lib);
    }
    if allocs.is_empty() {
        return Err("no allocator selected".into());
    }
    let runs = runs_of(&o.size, 1, 5, 11);
    let out = o.size.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let started = utc_now();
    let machine = machine_line();
    eprintln!(
        "hz3-bench: {} workloads x {} allocators ({}) x {} run(s), mode {}",
        workloads.len(),
        allocs.len(),
        allocs.join(", "),
        runs,
        mode.name()
    );
    let plan = Plan {
        mode,
        runs,
        workloads,
        allocs,
        warmup_round: false,
        callgrind: false,
        preloads,
    };
    let res = runner::execute(&plan);
    let summary = report::Summary::new(&res);
    let meta = report::Meta {
        mode: mode.name().into(),
        runs,
        started: started.clone(),
        wall: fmt_duration(res.wall),
        machine,
    };
    let md = report::markdown(&summary, &meta);
    print!("{md}");
    write_file(&out, "results.md", &md)?;
    write_file(&out, "results.csv", &report::results_csv(&summary, mode))?;
    write_file(&out, "runs.csv", &report::runs_csv(&res))?;
    let sub = format!("mode {}, median of {runs} run(s), {started}", mode.name());
    write_file(&out, "chart.svg", &svg::chart(&summary, &sub))?;
    eprintln!(
        "wrote {}/{{results.md,results.csv,runs.csv,chart.svg}} in {}",
        out.display(),
        fmt_duration(res.wall)
    );
    if o.check {
        let names: Vec<&str> = plan.workloads.iter().map(|w| w.name).collect();
        return Ok(check(&out, &names, &plan.allocs));
    }
    Ok(summary.rows.iter().all(|r| r.runs_failed == 0))
}

/// Allocator name and `LD_PRELOAD` library of one A/B side.
fn side(s: &Side) -> Result<(String, Option<PathBuf>), String> {
    match s {
        Side::InProcess(name) => Ok((name.to_string(), None)),
        Side::Preloaded(p) => Ok((Pick::preloaded(p).name, Some(preload_file(p)?))),
    }
}

/// `hz3-scale-preload` → `hz3-scale-base-preload`: a preloaded side's name with `tag`.
fn side_name(name: &str, tag: &str) -> String {
    match name.strip_suffix(allocators::PRELOAD_SUFFIX) {
        Some(stem) => format!("{stem}-{tag}{}", allocators::PRELOAD_SUFFIX),
        None => format!("{name}-{tag}"),
    }
}

fn run_ab(o: &AbArgs) -> Result<bool, String> {
    let (mut base, base_lib) = side(&o.base)?;
    let (mut treat, treat_lib) = side(&o.treat)?;
    if base == treat {
        // Same report name (e.g. two files called libhz3_x.so): tell the sides apart. The
        // name keeps its `-preload` ending, which is what tells the child to run on the
        // preloaded symbols.
        match (base_lib.is_some(), treat_lib.is_some()) {
            (true, true) => {
                base = side_name(&base, "base");
                treat = side_name(&treat, "treat");
            }
            _ => return Err(format!("--base and --treat are the same allocator ({base}): nothing to compare")),
        }
    }
    let mode = o.size.mode();
    let measure = match o.metric {
        cli::Metric::Time => ab::Measure::Time,
        cli::Metric::Instructions => {
            child::valgrind_available()?;
            ab::Measure::Instructions
        }
    };
    let workloads = select_workloads(&o.size.workloads);
    // Instruction counts repeat exactly (single-thread workloads) or nearly: fewer runs do.
    let runs = match measure {
        ab::Measure::Time => runs_of(&o.size, 3, 20, 20),
        ab::Measure::Instructions => runs_of(&o.size, 1, 3, 3),
    };
    let out = o.size.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    eprintln!(
        "hz3-bench ab: {base} vs {treat}, {} workloads x {runs} run(s), mode {}",
        workloads.len(),
        mode.name()
    );
    // The warm-up round warms caches and the machine for wall time; instructions need none.
    let warmup_round = !o.no_warmup_round && measure == ab::Measure::Time;
    if runs < ab::MIN_RUNS && measure == ab::Measure::Time {
        eprintln!(
            "hz3-bench ab: warning: {runs} run(s) per side; with fewer than {} the 95% intervals are wide and unreliable (use --runs 20)",
            ab::MIN_RUNS
        );
    }
    let plan = Plan {
        mode,
        runs,
        workloads,
        allocs: vec![base, treat],
        warmup_round,
        callgrind: measure == ab::Measure::Instructions,
        preloads: vec![base_lib, treat_lib],
    };
    let res = runner::execute(&plan);
    let rows = ab::rows(&res, measure);
    let header = format!(
        "metric {}, mode `{}`, median of {runs} run(s) per side, base and treat interleaved, {}; started {}, wall time {}; {}.",
        match measure {
            ab::Measure::Time => "wall time (ops/s of the timed pass)",
            ab::Measure::Instructions => "instructions (valgrind callgrind, whole child process, warm-up included)",
        },
        mode.name(),
        if warmup_round { "after one discarded warm-up round" } else { "no warm-up round" },
        utc_now(),
        fmt_duration(res.wall),
        machine_line()
    );
    let (md, _verdict) = ab::report(&res, &rows, &header, measure);
    print!("{md}");
    write_file(&out, "ab.md", &md)?;
    write_file(&out, "ab.csv", &ab::csv(&rows))?;
    eprintln!("wrote {}/{{ab.md,ab.csv}}", out.display());
    Ok(rows.iter().all(|r| r.n.0 > 0 && r.n.1 > 0))
}

fn run_exec(o: &cli::ExecArgs) -> Result<bool, String> {
    exec::check_program(&o.program[0])?;
    let allocs = exec::select(o.allocators.as_deref(), &o.preload)?;
    let runs = o.runs as usize;
    let out = o.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let names: Vec<&str> = allocs.iter().map(|a| a.name.as_str()).collect();
    eprintln!("hz3-bench exec: {} allocators ({}) x {runs} run(s), interleaved", allocs.len(), names.join(", "));
    let started = utc_now();
    let (cells, wall) = exec::execute(&o.program, &allocs, runs, o.show_output);
    let header = format!(
        "{runs} run(s) per allocator, interleaved; started {started}, wall time {}; {}.",
        fmt_duration(wall),
        machine_line()
    );
    let (md, csv) = exec::report(&o.program, &allocs, &cells, &header);
    print!("{md}");
    write_file(&out, "exec.md", &md)?;
    write_file(&out, "exec.csv", &csv)?;
    eprintln!("wrote {}/{{exec.md,exec.csv}}", out.display());
    Ok(cells.iter().all(|c| !c.ok.is_empty()))
}

fn list() {
    println!("workloads (default-mode parameters):");
    for w in ALL {
        println!("  {:<22} {}", w.name, w.describe(Mode::Default));
    }
    println!("hz3 presets (--hz3, ab --base/--treat; in-process as hz3-NAME):");
    for p in allocators::PRESETS {
        let lib = p
            .lib
            .map(|l| format!("; LD_PRELOAD library {} (--preload {}, allocator {}{})", l.file, p.key, p.name, allocators::PRELOAD_SUFFIX))
            .unwrap_or_default();
        println!("  {:<10} {}{lib}", p.key, p.flags);
    }
    println!("reference allocators: {}", allocators::OTHERS.join(", "));
    println!(
        "also selectable with --allocators: {} (the scale preset inlined into the workloads; mimalloc through the mimalloc crate's mi_malloc_aligned)",
        allocators::EXTRA.join(", ")
    );
    println!("--preload PATH.so measures any hz3 LD_PRELOAD library (the workload calls glibc's malloc symbols).");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The child is started by the parent only: no option parsing beyond its three words.
    if args.first().map(String::as_str) == Some("child") {
        return ExitCode::from(child::main(&args[1..]) as u8);
    }
    let cli = Cli::parse();
    let ok = match &cli.cmd {
        None => run_compare(&cli.run),
        Some(Cmd::Run(r)) => run_compare(r),
        Some(Cmd::Ab(a)) => run_ab(a),
        Some(Cmd::Exec(e)) => run_exec(e),
        Some(Cmd::Check(c)) => Ok(check(&c.out.clone().unwrap_or_else(default_out_dir), &[], &[])),
        Some(Cmd::List) => {
            list();
            Ok(true)
        }
    };
    match ok {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hz3-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("hz3-bench").chain(args.iter().copied()))
            .unwrap()
            .run
    }
    fn names(args: &[&str]) -> Vec<String> {
        select_allocs(&run_args(args)).into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn ab_sides_with_one_file_name_keep_their_preload_ending() {
        // The child picks the preloaded path by the `-preload` ending: both sides must keep it.
        assert_eq!(side_name("hz3-scale-preload", "base"), "hz3-scale-base-preload");
        assert_eq!(side_name("hz3-scale-preload", "treat"), "hz3-scale-treat-preload");
        assert!(side_name("hz3-scale-preload", "base").ends_with(allocators::PRELOAD_SUFFIX));
    }

    #[test]
    fn workload_filter() {
        let o = run_args(&["--workloads", "mt-remote_t2,cache,pair"]);
        let names: Vec<_> = select_workloads(&o.size.workloads).iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            ["mt_remote_t2_r0", "mt_remote_t2_r50", "mt_remote_t2_r90", "cache_thrash", "cache_scratch", "pair"]
        );
    }

    #[test]
    fn alloc_filter() {
        assert_eq!(names(&[]), ["hz3-scale", "hz3-scale-preload", "mimalloc", "jemalloc", "snmalloc", "glibc"]);
        assert_eq!(
            names(&["--allocators", "mimalloc,hz3-scale-preload,hz3"]),
            ["hz3-scale", "hz3-scale-preload", "mimalloc"]
        );
        assert_eq!(
            names(&["--hz3=scale,ptagoff", "--allocators", "glibc,hz3,mimalloc"]),
            ["hz3-scale", "hz3-ptagoff", "mimalloc", "glibc"]
        );
        assert_eq!(names(&["--allocators", "s110fast,jemalloc"]), ["hz3-s110", "jemalloc"]);
        assert_eq!(names(&["--allocators", "s110,system"]), ["hz3-s110", "glibc"]);
        assert_eq!(
            names(&["--allocators", "mimalloc-crate,mimalloc,hz3-scale-inlined,hz3"]),
            ["hz3-scale", "hz3-scale-inlined", "mimalloc", "mimalloc-crate"]
        );
        let p = select_allocs(&run_args(&["--allocators", "mimalloc", "--preload", "s110"]));
        assert_eq!(p[0].name, "hz3-s110-preload");
        assert_eq!(p[0].preload, Some(Preload::Preset("s110")));
        assert_eq!(p[1].name, "mimalloc");
    }

    #[test]
    fn date_format() {
        assert!(utc_now().ends_with(" UTC"));
    }
}
