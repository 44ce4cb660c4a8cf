//! Orchestration: the interleaved schedule of child runs, the progress bar, and the collected
//! per-(workload, allocator) results.
//!
//! Schedule: an optional warm-up round (one child per cell, results discarded), then `runs`
//! rounds; each round visits every workload and, within it, every allocator in order, so the
//! allocators alternate A B C A B C … and slow drifts of the machine hit them all alike.

use crate::child::{self, RunResult};
use crate::workloads::{Mode, Workload};
use std::io::Write;
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

/// A one-line progress bar on stderr.
struct Progress {
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    fn show(&self, label: &str) {
        const W: usize = 30;
        let filled = (self.done * W).checked_div(self.total).unwrap_or(W);
        let eta = if self.done > 0 && self.done < self.total {
            let per = self.start.elapsed().as_secs_f64() / self.done as f64;
            format!(
                " eta {}",
                fmt_duration(Duration::from_secs_f64(
                    per * (self.total - self.done) as f64
                ))
            )
        } else {
            String::new()
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r[{}{}] {}/{} {:<40} {}{}\x1b[K",
            "#".repeat(filled),
            ".".repeat(W - filled),
            self.done,
            self.total,
            label,
            fmt_duration(self.start.elapsed()),
            eta
        );
        let _ = e.flush();
    }
}

/// Run the plan, one child process per (round, workload, allocator).
pub fn execute(plan: &Plan) -> Results {
    let (nw, na) = (plan.workloads.len(), plan.allocs.len());
    let rounds = plan.runs + usize::from(plan.warmup_round);
    let mut cells = vec![vec![Cell::default(); na]; nw];
    let mut p = Progress {
        total: rounds * nw * na,
        done: 0,
        start: Instant::now(),
    };
    for round in 0..rounds {
        let discard = plan.warmup_round && round == 0;
        for (wi, w) in plan.workloads.iter().enumerate() {
            for (ai, a) in plan.allocs.iter().enumerate() {
                let tag = if discard { " (warm-up)" } else { "" };
                p.show(&format!("{}/{}{}", w.name, a, tag));
                let r = child::spawn(a, w.name, plan.mode);
                p.done += 1;
                match r {
                    Ok(r) if !discard => cells[wi][ai].ok.push(r),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("\r\x1b[Kchild {}/{} failed: {}", w.name, a, e);
                        if !discard {
                            cells[wi][ai].failed.push(e);
                        }
                    }
                }
            }
        }
    }
    p.show("done");
    eprintln!();
    Results {
        plan: plan.clone(),
        cells,
        wall: p.start.elapsed(),
    }
}
