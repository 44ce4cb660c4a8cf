//! The command line (clap derive): subcommands, their options, and the value parsers whose
//! errors list the valid values. Parsing only: what the commands do is in `main.rs`.

use crate::allocators::{self, PRESETS};
use crate::workloads::{Mode, ALL};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Every run is its own child process (its peak RSS belongs to one allocator); each child runs an
untimed warm-up pass, then the timed pass. Runs are interleaved across allocators. ×mi = the
allocator's ops/s ÷ mimalloc's ops/s in the same run (> 1: faster than mimalloc); × best = an
hz3 allocator's ops/s ÷ the best non-hz3 allocator's ops/s on that row.
Outputs (in --out DIR): results.md, results.csv, runs.csv, chart.svg; `ab`: ab.md, ab.csv.";

/// hz3-bench: hz3 presets against mimalloc, jemalloc, snmalloc and glibc, one child process per run.
///
/// Without a subcommand it runs the comparison (`run`).
#[derive(Parser, Debug)]
#[command(name = "hz3-bench", version, args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Options of `run`, accepted without the subcommand name.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Compare allocators on every workload (the default command).
    #[command(after_help = AFTER_HELP)]
    Run(RunArgs),
    /// A/B two hz3 presets or libraries: median delta per workload with a 95% confidence
    /// interval, and a GO / NO-GO / INCONCLUSIVE verdict.
    Ab(AbArgs),
    /// Run your own program under each allocator's LD_PRELOAD library and compare wall time
    /// and peak RSS: `hz3-bench exec -- PROGRAM ARGS...`.
    Exec(ExecArgs),
    /// Verify the outputs of an earlier run (results.csv, results.md, chart.svg).
    Check(CheckArgs),
    /// List the workloads (with their parameters), presets and allocators.
    List,
}

/// Iteration scale, run count, workload filter and output directory.
#[derive(Args, Debug, Clone, Default)]
pub struct SizeArgs {
    /// Smoke-test size: a quarter of the iterations, 1 run (ab: 3).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Publication size: four times the iterations, 11 runs.
    #[arg(long)]
    pub full: bool,
    /// Timed runs per (workload, allocator) [default: 5, --quick 1, --full 11; ab: 20, --quick 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: Option<u64>,
    /// Workloads: names or group prefixes, comma-separated (random_mixed, dist, mt_remote,
    /// mt_remote_t2, cache, ...; `hz3-bench list` shows them all).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_workload)]
    pub workloads: Option<Vec<String>>,
    /// Output directory [default: target/hz3-bench in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl SizeArgs {
    /// The iteration scale.
    pub fn mode(&self) -> Mode {
        if self.quick {
            Mode::Quick
        } else if self.full {
            Mode::Full
        } else {
            Mode::Default
        }
    }
}

/// Options of `run`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub size: SizeArgs,
    /// Allocators to run, comma-separated [default: the --hz3 presets, hz3-scale-preload,
    /// mimalloc, jemalloc, snmalloc, glibc]; `hz3` = all --hz3 presets.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = allocator_parser())]
    pub allocators: Option<Vec<String>>,
    /// hz3 presets to run in-process, comma-separated [default: scale].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = preset_parser())]
    pub hz3: Vec<String>,
    /// Also measure these hz3 LD_PRELOAD libraries, comma-separated: a path to a .so file
    /// (e.g. one you built yourself) or the name of a preset with a library (scale, default, s110).
    #[arg(long, value_name = "LIB", value_delimiter = ',', value_parser = parse_preload)]
    pub preload: Vec<Preload>,
    /// After the run, re-read results.csv and verify every row (non-zero exit on failure).
    #[arg(long)]
    pub check: bool,
}

/// What `ab` compares time or instructions by.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Metric {
    /// Wall time of the timed pass (ops/s).
    #[default]
    Time,
    /// Instructions executed by the whole child, counted by valgrind's callgrind (exact and
    /// repeatable; about 50x slower; threads are serialised).
    Instructions,
}

/// Options of `ab`.
#[derive(Args, Debug, Clone)]
pub struct AbArgs {
    #[command(flatten)]
    pub size: SizeArgs,
    /// The base side: an hz3 preset name, or a path to an hz3 LD_PRELOAD library.
    #[arg(long, value_name = "PRESET|LIB", value_parser = parse_side)]
    pub base: Side,
    /// The treatment side: an hz3 preset name, or a path to an hz3 LD_PRELOAD library.
    #[arg(long, value_name = "PRESET|LIB", value_parser = parse_side)]
    pub treat: Side,
    /// Skip the discarded warm-up round.
    #[arg(long)]
    pub no_warmup_round: bool,
    /// What to compare.
    #[arg(long, value_enum, default_value_t = Metric::Time)]
    pub metric: Metric,
}

/// Options of `exec`.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// Runs per allocator, interleaved across allocators.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Allocators to run, comma-separated [default: every one available]: hz3 presets with a
    /// library (scale, default, s110, hardened; built first), mimalloc, jemalloc, tcmalloc (shared
    /// libraries of the Debian packages libmimalloc2.0, libjemalloc2, libtcmalloc-minimal4),
    /// glibc (no preload).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub allocators: Option<Vec<String>>,
    /// Also run under these LD_PRELOAD libraries (paths to .so files), comma-separated.
    #[arg(long, value_name = "LIB", value_delimiter = ',')]
    pub preload: Vec<PathBuf>,
    /// Send the program's stdout and stderr to the terminal instead of discarding them.
    #[arg(long)]
    pub show_output: bool,
    /// Output directory for exec.md and exec.csv [default: target/hz3-bench in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The program and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "PROGRAM")]
    pub program: Vec<String>,
}

/// Options of `check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Directory holding the outputs [default: target/hz3-bench in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// An `LD_PRELOAD` library to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preload {
    /// A preset's library, built by cargo first.
    Preset(&'static str),
    /// A library file given by path.
    File(PathBuf),
}

/// One side of an A/B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// An hz3 preset, in-process (its report name).
    InProcess(&'static str),
    /// An `LD_PRELOAD` library.
    Preloaded(Preload),
}

fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.contains(".so")
}

fn file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if !p.is_file() {
        return Err(format!("no such file: {s}"));
    }
    Ok(p.canonicalize().unwrap_or(p))
}

/// `--preload`: a path to a `.so` or a preset with a library.
pub fn parse_preload(s: &str) -> Result<Preload, String> {
    if looks_like_path(s) {
        return file(s).map(Preload::File);
    }
    let key = s.strip_suffix(allocators::PRELOAD_SUFFIX).unwrap_or(s);
    match allocators::preset(key) {
        Some(p) if p.lib.is_some() => Ok(Preload::Preset(p.key)),
        Some(p) => Err(format!(
            "preset {:?} has no LD_PRELOAD library; presets with one: {} (or give a path to a .so file)",
            p.key,
            allocators::preset_keys(true)
        )),
        None => Err(format!(
            "unknown preset {s:?}; presets with a library: {} (or give a path to a .so file)",
            allocators::preset_keys(true)
        )),
    }
}

/// `ab --base/--treat`: a preset (in-process), `PRESET-preload`, or a library path.
pub fn parse_side(s: &str) -> Result<Side, String> {
    if looks_like_path(s) || s.ends_with(allocators::PRELOAD_SUFFIX) {
        return parse_preload(s).map(Side::Preloaded);
    }
    allocators::preset(s).map(|p| Side::InProcess(p.name)).ok_or_else(|| {
        format!(
            "unknown hz3 preset {s:?}; presets: {} (add -preload, e.g. scale-preload, for its LD_PRELOAD \
             library, or give a path to a .so file)",
            allocators::preset_keys(false)
        )
    })
}

/// `--workloads` entries: a workload name or a group prefix (`-` accepted for `_`; a
/// trailing `_`, as in `live_`, is the same group).
pub fn parse_workload(s: &str) -> Result<String, String> {
    let e = s.trim().replace('-', "_").trim_end_matches('_').to_string();
    let hit = |w: &&crate::workloads::Workload| w.name == e || w.name.starts_with(&format!("{e}_"));
    if ALL.iter().any(|w| hit(&w)) {
        return Ok(e);
    }
    let names: Vec<_> = ALL.iter().map(|w| w.name).collect();
    Err(format!(
        "unknown workload {s:?}; workloads: {} (a prefix such as mt_remote selects a group)",
        names.join(", ")
    ))
}

fn preset_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(PRESETS.iter().map(|p| {
        PossibleValue::new(p.key)
            .aliases(p.aliases.iter().copied().chain([p.name]))
            .help(p.flags)
    }))
}

fn allocator_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(allocators::allocator_names().into_iter().map(|n| {
        let v = PossibleValue::new(n.clone());
        // Aliases of presets are accepted but not listed.
        match allocators::preset(&n) {
            Some(p) if p.key == n => v.aliases(p.aliases.iter().copied()),
            _ => v,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hz3-bench").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn top_level_flags_are_run_flags() {
        let c = parse(&["--quick", "--check", "--runs", "3", "--workloads", "pair,mt-remote"]).unwrap();
        assert!(c.cmd.is_none());
        assert_eq!(c.run.size.mode(), Mode::Quick);
        assert_eq!(c.run.size.runs, Some(3));
        assert_eq!(c.run.size.workloads.as_deref(), Some(&["pair".to_string(), "mt_remote".to_string()][..]));
        let g = parse(&["--workloads", "live_,rust-"]).unwrap();
        assert_eq!(g.run.size.workloads.as_deref(), Some(&["live".to_string(), "rust".to_string()][..]));
        assert!(c.run.check);
        assert!(parse(&["--quick", "--full"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn errors_list_the_valid_values() {
        let e = parse(&["ab", "--base", "scale", "--treat", "s111"]).unwrap_err().to_string();
        assert!(e.contains("s111") && e.contains("scale, default, s110, ptagfirst, ptagoff, hardened"), "{e}");
        let e = parse(&["--hz3", "nope"]).unwrap_err().to_string();
        assert!(e.contains("s110") && e.contains("ptagoff"), "{e}");
        let e = parse(&["--workloads", "nope"]).unwrap_err().to_string();
        assert!(e.contains("random_mixed_small"), "{e}");
        let e = parse(&["--allocators", "tcmalloc"]).unwrap_err().to_string();
        assert!(e.contains("mimalloc") && e.contains("jemalloc"), "{e}");
        let e = parse(&["--preload", "ptagoff"]).unwrap_err().to_string();
        assert!(e.contains("no LD_PRELOAD library") && e.contains("scale, default, s110"), "{e}");
        let e = parse(&["--preload", "/nonexistent/libx.so"]).unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn preset_names_and_aliases() {
        let c = parse(&["ab", "--base", "scale", "--treat", "s110"]).unwrap();
        let Some(Cmd::Ab(a)) = c.cmd else { panic!() };
        assert_eq!(a.base, Side::InProcess("hz3-scale"));
        assert_eq!(a.treat, Side::InProcess("hz3-s110"));
        assert_eq!(a.metric, Metric::Time);
        let c = parse(&["ab", "--base", "scale-preload", "--treat", "s110fast", "--metric", "instructions"]).unwrap();
        let Some(Cmd::Ab(a)) = c.cmd else { panic!() };
        assert_eq!(a.base, Side::Preloaded(Preload::Preset("scale")));
        assert_eq!(a.treat, Side::InProcess("hz3-s110"));
        assert_eq!(a.metric, Metric::Instructions);
        assert!(parse(&["--hz3", "s110fast,scale", "--preload", "s110"]).is_ok());
    }

    #[test]
    fn exec_takes_the_program_verbatim() {
        let c = parse(&["exec", "--runs", "2", "--", "python3", "-c", "print(1)"]).unwrap();
        let Some(Cmd::Exec(e)) = c.cmd else { panic!() };
        assert_eq!(e.runs, 2);
        assert_eq!(e.program, ["python3", "-c", "print(1)"]);
        assert!(parse(&["exec"]).is_err());
    }
}
