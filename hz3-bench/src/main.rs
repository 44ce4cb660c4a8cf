//! `hz3-bench`: compares hz3 presets with glibc, mimalloc and jemalloc on allocator
//! workloads (see README.md).
//!
//! This file is the command line and the orchestration: it builds a [`runner::Plan`], runs it
//! (one child process per run, see [`child`]), and writes the markdown table (stdout and
//! `results.md`), `results.csv`, `runs.csv` and `chart.svg` into `target/hz3-bench/`.
//! `hz3-bench ab` compares two hz3 presets ([`ab`]).

mod ab;
mod allocators;
mod child;
mod report;
mod runner;
mod svg;
mod workloads;

use runner::{fmt_duration, Plan};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;
use workloads::{Mode, Workload, ALL};

const HELP: &str = "\
hz3-bench: hz3 presets vs glibc, mimalloc and jemalloc

USAGE:
    hz3-bench [OPTIONS]                       compare allocators (default: hz3-scale, hz3-scale-preload, mimalloc,
                                              jemalloc, glibc)
    hz3-bench ab --base P --treat P [OPTIONS] A/B two hz3 presets, with the GO / NO-GO verdict
    hz3-bench check [--out DIR]               verify DIR/results.csv, results.md, chart.svg
    hz3-bench list                            list workloads (with parameters) and allocators

OPTIONS:
    --quick               smoke-test size (1/4 of the iterations, 1 run); about a minute
    --full                publication size (4x the iterations, 11 runs)
    --runs N              timed runs per (workload, allocator); default 5 (ab: 20)
    --workloads a,b       workload names or prefixes (random_mixed, dist, mt_remote, mt_remote_t2, cache, ...)
    --allocators a,b      allocators: hz3 (all --hz3 presets), hz3-<preset>, hz3-scale-preload, mimalloc,
                          jemalloc, glibc
    --hz3 p,q             hz3 presets to include: scale, default, s110fast, ptagfirst, ptagoff (default: scale)
    --out DIR             output directory (default: <workspace target>/hz3-bench)
    --check               after the run, re-read results.csv and verify every row (non-zero exit on failure)
    --no-warmup-round     skip the discarded warm-up round (ab only; the main mode has none)
    -h, --help            this text

Every run is its own child process (peak RSS belongs to one allocator); each child runs an untimed
warm-up pass, then the timed pass. ratio = allocator ops/s / mimalloc ops/s in the same run
(> 1: faster than mimalloc). Outputs: results.md, results.csv, runs.csv, chart.svg (ab: ab.md, ab.csv).
hz3-scale-preload runs the workload on glibc's malloc symbols with LD_PRELOAD=libhz3_scale.so (the
C interface, as a C program sees it); the library is built first with this executable's profile.
";

/// Parsed command line.
#[derive(Debug)]
struct Opts {
    mode: Mode,
    runs: Option<usize>,
    workloads: Option<Vec<String>>,
    allocators: Option<Vec<String>>,
    hz3: Vec<String>,
    out: Option<PathBuf>,
    check: bool,
    base: Option<String>,
    treat: Option<String>,
    warmup_round: bool,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        mode: Mode::Default,
        runs: None,
        workloads: None,
        allocators: None,
        hz3: vec!["scale".into()],
        out: None,
        check: false,
        base: None,
        treat: None,
        warmup_round: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut val = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag {
            "--quick" => o.mode = Mode::Quick,
            "--full" => o.mode = Mode::Full,
            "--runs" => {
                o.runs = Some(
                    val()?
                        .parse()
                        .map_err(|_| "--runs needs a positive number")?,
                )
            }
            "--workloads" => o.workloads = Some(split_list(&val()?)),
            "--allocators" => o.allocators = Some(split_list(&val()?)),
            "--hz3" => o.hz3 = split_list(&val()?),
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--check" => o.check = true,
            "--base" => o.base = Some(val()?),
            "--treat" => o.treat = Some(val()?),
            "--no-warmup-round" => o.warmup_round = false,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.runs == Some(0) {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

/// Workloads selected by `filter` (names or `prefix` matching `prefix_*`), in catalogue order.
fn select_workloads(filter: &Option<Vec<String>>) -> Result<Vec<&'static Workload>, String> {
    let Some(f) = filter else {
        return Ok(ALL.iter().collect());
    };
    let f: Vec<String> = f.iter().map(|s| s.replace('-', "_")).collect();
    let matches = |e: &str, w: &Workload| w.name == e || w.name.starts_with(&format!("{e}_"));
    if let Some(bad) = f.iter().find(|e| !ALL.iter().any(|w| matches(e, w))) {
        let names: Vec<_> = ALL.iter().map(|w| w.name).collect();
        return Err(format!(
            "unknown workload {bad:?}; known: {}",
            names.join(", ")
        ));
    }
    Ok(ALL
        .iter()
        .filter(|w| f.iter().any(|e| matches(e, w)))
        .collect())
}

/// Allocators selected by `--hz3` and `--allocators`, in report order (hz3 first).
fn select_allocs(o: &Opts) -> Result<Vec<String>, String> {
    let mut hz3 = Vec::new();
    for p in &o.hz3 {
        hz3.push(
            allocators::hz3_name(p)
                .ok_or(format!("unknown hz3 preset {p:?}"))?
                .to_string(),
        );
    }
    let mut all: Vec<String> = hz3.clone();
    all.extend(allocators::PRELOADED.iter().map(|p| p.0.to_string()));
    all.extend(allocators::OTHERS.iter().map(|s| s.to_string()));
    let Some(f) = &o.allocators else {
        return Ok(all);
    };
    let mut want = Vec::new();
    for e in f {
        match e.as_str() {
            "hz3" => want.extend(hz3.iter().cloned()),
            "system" => want.push("glibc".into()),
            n if allocators::is_known(n) => want.push(n.into()),
            n => match allocators::hz3_name(n) {
                Some(h) => want.push(h.into()),
                None => return Err(format!("unknown allocator {n:?}")),
            },
        }
    }
    // hz3 presets named in --allocators but not in --hz3 go after the --hz3 ones.
    for w in &want {
        if !all.contains(w) {
            all.insert(hz3.len(), w.clone());
        }
    }
    Ok(all.into_iter().filter(|a| want.contains(a)).collect())
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

fn run_compare(o: &Opts) -> Result<bool, String> {
    let workloads = select_workloads(&o.workloads)?;
    let mut allocs = select_allocs(o)?;
    // Preloaded allocators need their library built; one the user did not name is
    // dropped (with a note) when that fails, one named with --allocators is an error.
    let mut dropped = Vec::new();
    for a in allocs.clone() {
        if allocators::preload_lib(&a).is_some() {
            if let Err(e) = child::build_preload(&a) {
                if o.allocators.is_some() {
                    return Err(format!("{a}: {e}"));
                }
                eprintln!("hz3-bench: {a} left out: {e}");
                dropped.push(a);
            }
        }
    }
    allocs.retain(|a| !dropped.contains(a));
    if allocs.is_empty() {
        return Err("no allocator selected".into());
    }
    let runs = o.runs.unwrap_or(match o.mode {
        Mode::Quick => 1,
        Mode::Default => 5,
        Mode::Full => 11,
    });
    let out = o.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let started = utc_now();
    let machine = machine_line();
    eprintln!(
        "hz3-bench: {} workloads x {} allocators ({}) x {} run(s), mode {}",
        workloads.len(),
        allocs.len(),
        allocs.join(", "),
        runs,
        o.mode.name()
    );
    let plan = Plan {
        mode: o.mode,
        runs,
        workloads,
        allocs,
        warmup_round: false,
    };
    let res = runner::execute(&plan);
    let summary = report::Summary::new(&res);
    let meta = report::Meta {
        mode: o.mode.name().into(),
        runs,
        started: started.clone(),
        wall: fmt_duration(res.wall),
        machine,
    };
    let md = report::markdown(&summary, &meta);
    print!("{md}");
    write_file(&out, "results.md", &md)?;
    write_file(&out, "results.csv", &report::results_csv(&summary, o.mode))?;
    write_file(&out, "runs.csv", &report::runs_csv(&res))?;
    let sub = format!("mode {}, median of {runs} run(s), {started}", o.mode.name());
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

fn run_ab(o: &Opts) -> Result<bool, String> {
    let (Some(b), Some(t)) = (&o.base, &o.treat) else {
        return Err("ab needs --base <preset> and --treat <preset>".into());
    };
    let base = allocators::hz3_name(b).ok_or(format!("unknown hz3 preset {b:?}"))?;
    let treat = allocators::hz3_name(t).ok_or(format!("unknown hz3 preset {t:?}"))?;
    let workloads = select_workloads(&o.workloads)?;
    let runs = o.runs.unwrap_or(match o.mode {
        Mode::Quick => 3,
        _ => 20,
    });
    let out = o.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    eprintln!(
        "hz3-bench ab: {base} vs {treat}, {} workloads x {runs} run(s), mode {}",
        workloads.len(),
        o.mode.name()
    );
    let plan = Plan {
        mode: o.mode,
        runs,
        workloads,
        allocs: vec![base.into(), treat.into()],
        warmup_round: o.warmup_round,
    };
    let res = runner::execute(&plan);
    let rows = ab::rows(&res);
    let header = format!(
        "mode `{}`, median of {runs} run(s) per side, base and treat interleaved, {}; started {}, wall time {}; {}.",
        o.mode.name(),
        if o.warmup_round { "after one discarded warm-up round" } else { "no warm-up round" },
        utc_now(),
        fmt_duration(res.wall),
        machine_line()
    );
    let (md, _verdict) = ab::report(&res, &rows, &header);
    print!("{md}");
    write_file(&out, "ab.md", &md)?;
    write_file(&out, "ab.csv", &ab::csv(&rows))?;
    eprintln!("wrote {}/{{ab.md,ab.csv}}", out.display());
    Ok(rows.iter().all(|r| r.n.0 > 0 && r.n.1 > 0))
}

fn list() {
    println!("workloads (default-mode parameters):");
    for w in ALL {
        println!("  {:<22} {}", w.name, w.describe(Mode::Default));
    }
    println!(
        "allocators: {} {}",
        allocators::HZ3_PRESETS
            .iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
            .join(" "),
        allocators::OTHERS.join(" ")
    );
    for (name, pkg, lib) in allocators::PRELOADED {
        println!("  {name}: package {pkg} ({lib}) under LD_PRELOAD, the workload calling glibc's malloc symbols");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return ExitCode::from(child::main(&args[1..]) as u8);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some(c @ ("ab" | "check" | "list")) => (c, &args[1..]),
        _ => ("run", &args[..]),
    };
    let opts = match parse_opts(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hz3-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let ok = match cmd {
        "list" => {
            list();
            Ok(true)
        }
        "check" => Ok(check(
            &opts.out.clone().unwrap_or_else(default_out_dir),
            &[],
            &[],
        )),
        "ab" => run_ab(&opts),
        _ => run_compare(&opts),
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

    fn opts(args: &[&str]) -> Opts {
        parse_opts(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn workload_filter() {
        let o = opts(&["--workloads", "mt-remote_t2,cache,pair"]);
        let names: Vec<_> = select_workloads(&o.workloads)
            .unwrap()
            .iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(
            names,
            [
                "mt_remote_t2_r0",
                "mt_remote_t2_r50",
                "mt_remote_t2_r90",
                "cache_thrash",
                "cache_scratch",
                "pair"
            ]
        );
        assert!(select_workloads(&Some(vec!["nope".into()])).is_err());
    }

    #[test]
    fn alloc_filter() {
        assert_eq!(
            select_allocs(&opts(&[])).unwrap(),
            ["hz3-scale", "hz3-scale-preload", "mimalloc", "jemalloc", "glibc"]
        );
        let o = opts(&["--allocators", "mimalloc,hz3-scale-preload,hz3"]);
        assert_eq!(select_allocs(&o).unwrap(), ["hz3-scale", "hz3-scale-preload", "mimalloc"]);
        let o = opts(&["--hz3=scale,ptagoff", "--allocators", "glibc,hz3,mimalloc"]);
        assert_eq!(
            select_allocs(&o).unwrap(),
            ["hz3-scale", "hz3-ptagoff", "mimalloc", "glibc"]
        );
        let o = opts(&["--allocators", "s110fast,jemalloc"]);
        assert_eq!(select_allocs(&o).unwrap(), ["hz3-s110fast", "jemalloc"]);
        assert!(select_allocs(&opts(&["--allocators", "tcmalloc"])).is_err());
    }

    #[test]
    fn modes_and_runs() {
        let o = opts(&["--quick", "--runs", "3"]);
        assert_eq!((o.mode, o.runs), (Mode::Quick, Some(3)));
        assert!(parse_opts(&["--bogus".to_string()]).is_err());
    }

    #[test]
    fn date_format() {
        assert!(utc_now().ends_with(" UTC"));
    }
}
