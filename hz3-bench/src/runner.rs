//! Orchestration: the interleaved schedule of child runs, the progress display, and the collected
//! per-(workload, allocator) results.
//!
//! Schedule: an optional warm-up round (one child per cell, results discarded), then `runs`
//! rounds; each round visits every workload and, within it, every allocator in order, so the
//! allocators alternate A B C A B C … and slow drifts of the machine hit them all alike.
//! Before each child of a cell (workload, allocator) whose earlier runs peaked above
//! `prewarm::MIN_MIB`, the runner warms the kernel's free memory (see [`crate::prewarm`]).

use crate::child::{self, RunResult};
use crate::workloads::{Mode, Workload};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Iteration scale.
    pub mode: Mode,
    /// Timed rounds (medians are taken over these).
    pub runs: usize,
    /// Workloads, in report order.
    pub workloads: Vec<&'static Workload>,
    /// Allocator names, in report order.
    pub allocs: Vec<String>,
    /// Run one discarded round first.
    pub warmup_round: bool,
    /// Run every child under callgrind and record its instruction count.
    pub callgrind: bool,
    /// `LD_PRELOAD` library of each allocator (`None`: in-process), parallel to `allocs`.
    pub preloads: Vec<Option<PathBuf>>,
}

impl Plan {
    /// The `LD_PRELOAD` library of allocator index `ai`, if it is a preloaded one.
    pub fn preload(&self, ai: usize) -> Option<&Path> {
        self.preloads.get(ai).and_then(|p| p.as_deref())
    }
}

/// All runs of one (workload, allocator) cell.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Successful runs, in order.
    pub ok: Vec<RunResult>,
    /// Error messages of failed runs.
    pub failed: Vec<String>,
}

/// Everything a plan produced.
#[derive(Clone, Debug)]
pub struct Results {
    /// The plan that was run.
    pub plan: Plan,
    /// `cells[w][a]` for `plan.workloads[w]`, `plan.allocs[a]`.
    pub cells: Vec<Vec<Cell>>,
    /// Wall time of the whole plan.
    pub wall: Duration,
}

impl Results {
    /// The cell of (workload index, allocator index).
    pub fn cell(&self, w: usize, a: usize) -> &Cell {
        &self.cells[w][a]
    }
    /// Index of allocator `name`.
    pub fn alloc_index(&self, name: &str) -> Option<usize> {
        self.plan.allocs.iter().position(|a| a == name)
    }
}

/// `1m05s` / `42s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Progress on stderr: an indicatif bar when stderr is a terminal, else one plain line per
/// (round, workload) so that logs get no carriage returns or escape codes.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    /// Progress over `total` steps.
    pub fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "[{bar:30.cyan/blue}] {pos}/{len} {msg:40} {elapsed_precise} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>."),
            );
            b
        });
        Progress { bar, total, done: 0, start: Instant::now() }
    }
    /// A step is starting; `group` (if any) is printed as a plain line when there is no bar.
    pub fn step(&self, label: &str, group: Option<&str>) {
        match &self.bar {
            Some(b) => b.set_message(label.to_string()),
            None => {
                if let Some(g) = group {
                    eprintln!(
                        "hz3-bench: {g} ({}/{} runs done, {})",
                        self.done,
                        self.total,
                        fmt_duration(self.start.elapsed())
                    );
                }
            }
        }
    }
    /// A step finished.
    pub fn inc(&mut self) {
        self.done += 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }
    /// Print a line without breaking the bar.
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
    /// Remove the bar; returns the elapsed time.
    pub fn finish(&self) -> Duration {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.start.elapsed()
    }
}

/// Run the plan, one child process per (round, workload, allocator).
pub fn execute(plan: &Plan) -> Results {
    let (nw, na) = (plan.workloads.len(), plan.allocs.len());
    let rounds = plan.runs + usize::from(plan.warmup_round);
    let mut cells = vec![vec![Cell::default(); na]; nw];
    let mut p = Progress::new(rounds * nw * na);
    // Per cell, the highest peak RSS of its runs so far (KiB; warm-up round included), which
    // sizes the warm-up of the kernel's free memory before its next child (`prewarm`).
    let mut peak_kib = vec![vec![0u64; na]; nw];
    for round in 0..rounds {
        let discard = plan.warmup_round && round == 0;
        let round_name = if discard {
            "warm-up round".to_string()
        } else {
            format!("round {}/{}", round + 1 - usize::from(plan.warmup_round), plan.runs)
        };
        for (wi, w) in plan.workloads.iter().enumerate() {
            for (ai, a) in plan.allocs.iter().enumerate() {
                let tag = if discard { " (warm-up)" } else { "" };
                let group = format!("{round_name}, {}", w.name);
                p.step(&format!("{}/{}{}", w.name, a, tag), (ai == 0).then_some(group.as_str()));
                crate::prewarm::warm(crate::prewarm::mib_for(peak_kib[wi][ai]));
                let r = child::spawn(a, plan.preload(ai), w.name, plan.mode, plan.callgrind);
                p.inc();
                if let Ok(r) = &r {
                    peak_kib[wi][ai] = peak_kib[wi][ai].max(r.maxrss_kib);
                }
                match r {
                    Ok(r) if !discard => cells[wi][ai].ok.push(r),
                    Ok(_) => {}
                    Err(e) => {
                        p.note(&format!("child {}/{} failed: {}", w.name, a, e));
                        if !discard {
                            cells[wi][ai].failed.push(e);
                        }
                    }
                }
            }
        }
    }
    let wall = p.finish();
    Results {
        plan: plan.clone(),
        cells,
        wall,
    }
}
